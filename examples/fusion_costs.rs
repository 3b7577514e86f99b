//! What each convolution costs on the GPU, fused (one kernel) and apart (gather, GEMM, scatter):
//! the CUDA backend's start-up timing of `REGIONDROP_CUDA_FUSED_K=auto`, printed per layer. Each
//! way is a CUDA graph of 20 launches over a third of the frame's tiles, as frames run. Needs an
//! NVIDIA GPU.
//!
//! cargo run --release --example fusion_costs -- MODEL.onnx [WxH] [f32|f16]

use std::io::Write;
use std::sync::Arc;

use gstregiondrop::backend::cuda::{CudaBackend, CudaOptions};
use gstregiondrop::backend::Precision;
use gstregiondrop::model::import::{import, ImportOptions};
use gstregiondrop::model::plan::{LayerOp, Step};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: fusion_costs MODEL.onnx [WxH] [f32|f16]");
        std::process::exit(2);
    };
    let input_size = args.iter().skip(2).find_map(|s| {
        let (w, h) = s.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    });
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
        ..CudaOptions::default()
    };
    let backend = CudaBackend::with_options(plan.clone(), 32, 0, opts).unwrap_or_else(|e| fail(&e));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", backend.describe());
    let _ = writeln!(
        out,
        "{:>5}  {:<28} {:>12}  {:>9}  {:>9}  {:>6}  node",
        "step", "conv", "output", "apart us", "fused us", "ratio"
    );
    let (mut apart, mut best) = (0.0, 0.0);
    for t in backend.fusion_timings() {
        let Step::Layer(l) = &plan.steps[t.step] else {
            continue;
        };
        let LayerOp::Conv(c) = &l.op else { continue };
        let b = &plan.buffers[l.output.buf];
        apart += t.apart_us;
        best += t.apart_us.min(t.fused_us);
        let line = writeln!(
            out,
            "{:>5}  {:<28} {:>12}  {:>9.1}  {:>9.1}  {:>6.2}  {}",
            t.step,
            format!(
                "{}x{}/{} {}->{} g{}",
                c.kh, c.kw, c.sh, c.cin, c.cout, c.groups
            ),
            format!("{}x{}x{}", l.output.c, b.h, b.w),
            t.apart_us,
            t.fused_us,
            t.fused_us / t.apart_us,
            l.name
        );
        if line.is_err() {
            return;
        }
    }
    let _ = writeln!(
        out,
        "all fusable convolutions: {apart:.0} us apart, {best:.0} us each the faster way"
    );
}
