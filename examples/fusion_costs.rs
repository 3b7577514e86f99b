//! What each convolution costs on the GPU, fused (one kernel), pipelined (the tensor-core fused
//! kernel with cp.async copies, f16 only, where the layer allows; in 2 × 4 blocks and the larger
//! _t44 ones) and apart (gather, GEMM, scatter), over the first 5 %, 35 % and 100 % of the frame's tiles: the CUDA backend's start-up
//! timing of `REGIONDROP_CUDA_FUSED_K=auto` (at 35 %), printed per layer. Each way is a CUDA graph
//! of 20 launches, as frames run. Needs an NVIDIA GPU.
//!
//! cargo run --release --example fusion_costs -- MODEL.onnx [WxH] [f32|f16]

use std::io::Write;
use std::sync::Arc;

use gstregiondrop::backend::cuda::{CudaBackend, CudaOptions, FusionTiming, PipeMode};
use gstregiondrop::backend::Precision;
use gstregiondrop::model::import::{import, ImportOptions};
use gstregiondrop::model::plan::{LayerOp, Step};
use gstregiondrop::spec::parse_size;

const FRACTIONS: [f64; 3] = [0.05, 0.35, 1.0];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: fusion_costs MODEL.onnx [WxH] [f32|f16]");
        std::process::exit(2);
    };
    let input_size = args.iter().skip(2).find_map(|s| parse_size(s).ok());
    let precision = if args.iter().any(|a| a == "f16") {
        Precision::F16
    } else {
        Precision::F32
    };
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("{path}: {e}");
        std::process::exit(2)
    };
    let plan =
        Arc::new(import(path.as_ref(), &ImportOptions { input_size }).unwrap_or_else(|e| fail(&e)));
    let opts = CudaOptions {
        precision,
        fused_conv_auto: Some(true),
        fused_pipe: Some(PipeMode::Timed),
        ..CudaOptions::default()
    };
    let mut backend =
        CudaBackend::with_options(plan.clone(), 32, 0, opts).unwrap_or_else(|e| fail(&e));
    let timings: Vec<Vec<FusionTiming>> = FRACTIONS
        .iter()
        .map(|&f| backend.time_fusion(f).unwrap_or_else(|e| fail(&e)))
        .collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", backend.describe());
    let _ = write!(out, "{:>5}  {:<24} {:>12}", "step", "conv", "output");
    for f in FRACTIONS {
        let _ = write!(
            out,
            "  {:>6} {:>6} {:>6} {:>6}",
            format!("a{:.0}%", f * 100.0),
            "fused",
            "piped",
            "pip44"
        );
    }
    let _ = writeln!(out, "  (us a launch)  node");
    let mut sums = vec![(0.0, 0.0, 0.0); FRACTIONS.len()];
    for (i, first) in timings[0].iter().enumerate() {
        let Step::Layer(l) = &plan.steps[first.step] else {
            continue;
        };
        let LayerOp::Conv(c) = &l.op else { continue };
        let b = &plan.buffers[l.output.buf];
        let conv = format!(
            "{}x{}/{} {}->{} g{}",
            c.kh, c.kw, c.sh, c.cin, c.cout, c.groups
        );
        let shape = format!("{}x{}x{}", l.output.c, b.h, b.w);
        let _ = write!(out, "{:>5}  {conv:<24} {shape:>12}", first.step);
        for (t, sum) in timings.iter().zip(&mut sums) {
            let t = &t[i];
            sum.0 += t.apart_us;
            sum.1 += t.apart_us.min(t.fused_us);
            sum.2 += t.best_us();
            let us = |v: f32| match v.is_finite() {
                true => format!("{v:.1}"),
                false => "-".into(),
            };
            let _ = write!(
                out,
                "  {:>6.1} {:>6.1} {:>6} {:>6}",
                t.apart_us,
                t.fused_us,
                us(t.piped_us),
                us(t.piped_t44_us)
            );
        }
        if writeln!(out, "  {}", l.name).is_err() {
            return;
        }
    }
    for (f, (apart, best, best3)) in FRACTIONS.iter().zip(sums) {
        let _ = writeln!(
            out,
            "{:.0} % of the tiles: all fusable convolutions {apart:.0} us apart, {best:.0} us each the faster of apart and fused, {best3:.0} us the fastest way",
            f * 100.0
        );
    }
}
