//! What a model's host tail costs per step: every Generic step (the detection head's ONNX ops on
//! tensor slots, run on the host by both backends) timed on stand-in values, median of 20 runs;
//! marked where it runs through the allocating reference evaluator, or does nothing because its
//! copies were composed into the steps that read them.
//!
//! cargo run --release --example tail_costs -- MODEL.onnx [WxH]

use std::io::Write;
use std::time::Instant;

use gstregiondrop::backend::generic;
use gstregiondrop::model::import::{import, ImportOptions};
use gstregiondrop::model::plan::Step;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: tail_costs MODEL.onnx [WxH]");
        std::process::exit(2);
    };
    let input_size = args.get(2).map(|s| {
        let (w, h) = s.split_once('x').expect("WxH");
        (w.parse().expect("W"), h.parse().expect("H"))
    });
    let plan = import(path.as_ref(), &ImportOptions { input_size }).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let steps = generic::prepare(&plan);
    let mut slots = plan.stand_in_slots(1, 1.0);
    let mut total = 0.0;
    // Output stops quietly when the reader goes away (`| head`).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:>5}  {:<14} {:>10}  {:>9}  node",
        "step", "op", "out elems", "median ms"
    );
    for (si, step) in plan.steps.iter().enumerate() {
        let (Step::Generic { node, outputs, .. }, Some(g)) = (step, &steps[si]) else {
            continue;
        };
        let mut ms: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                g.run(&mut slots).expect("generic step");
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        total += ms[10];
        let line = writeln!(
            out,
            "{si:>5}  {:<14} {:>10}  {:>9.3}  {}{}",
            node.op,
            slots[outputs[0]].data.len(),
            ms[10],
            node.name,
            if !g.writes_any() {
                "  (composed into its readers)"
            } else if g.uses_eval() {
                "  (evaluator)"
            } else {
                ""
            }
        );
        if line.is_err() {
            return;
        }
    }
    let _ = writeln!(out, "total {total:.3} ms per frame");
}
