//! How tract-onnx (the pure-Rust ONNX engine issue 2 asked us to evaluate) does on the default
//! model: load + optimise time with the input size fixed, and dense run time on one thread.
//!
//! cargo run --release --manifest-path tools/tract-eval/Cargo.toml -- data/models/nanodet-416.onnx 416 416

use std::time::Instant;
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("data/models/nanodet-416.onnx");
    let w: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(416);
    let h: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(416);

    let t = Instant::now();
    // The models' stored intermediate shapes (value_info) are written for their export size and
    // conflict with a fixed input size of a dynamic model: tract is told to ignore them.
    let model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(path)?
        .with_input_fact(0, f32::fact([1, 3, h, w]).into())?;
    let parsed = t.elapsed().as_secs_f64() * 1e3;
    let typed = model.into_typed()?.into_decluttered()?;
    let decluttered = t.elapsed().as_secs_f64() * 1e3;
    let nodes = typed.nodes().len();
    let plan = typed.into_optimized()?.into_runnable()?;
    let ready = t.elapsed().as_secs_f64() * 1e3;

    // A deterministic input in the normalised range.
    let data: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let input: Tensor = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), data)?.into();
    let mut times = Vec::new();
    for i in 0..33 {
        let t = Instant::now();
        let out = plan.run(tvec!(input.clone().into()))?;
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "tract-onnx {path} {w}x{h}: parse {parsed:.0} ms, decluttered typed graph ({nodes} nodes) at {decluttered:.0} ms, optimised + runnable at {ready:.0} ms; run (1 thread) median {:.1} ms, min {:.1} ms over {} runs",
        times[times.len() / 2],
        times[0],
        times.len()
    );
    Ok(())
}
