//! Dense time of our CPU engine against onnxruntime on any image model, for models the benchmark
//! cannot decode (e.g. the DBNet text detector): one synthetic frame, 30 runs each, 2 threads.
//!
//! cargo run --release --example dense_vs_onnxruntime -- MODEL WxH [MEAN_R,MEAN_G,MEAN_B STD_R,STD_G,STD_B]
//! e.g. `-- data/models/ppocr-det.onnx 320x256 123.675,116.28,103.53 58.395,57.12,57.375`
//! (REGIONDROP_PROFILE=1 adds our per-step table.)

use std::sync::Arc;

use gstregiondrop::backend::BackendKind;
use gstregiondrop::engine::{Engine, EngineConfig, RunMode};
use gstregiondrop::model::{import, ImportOptions};
use gstregiondrop::preprocess::InputNorm;

fn triple(s: Option<&String>, default: [f32; 3]) -> [f32; 3] {
    s.map(|s| {
        let v: Vec<f32> = s.split(',').map(|x| x.parse().expect("a number")).collect();
        [v[0], v[1], v[2]]
    })
    .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(args.get(1).expect("MODEL WxH"));
    let (w, h) = args
        .get(2)
        .and_then(|s| s.split_once('x'))
        .map(|(w, h)| (w.parse().expect("W"), h.parse().expect("H")))
        .expect("WxH");
    let norm = InputNorm {
        mean: triple(args.get(3), [0.0; 3]),
        std: triple(args.get(4), [255.0; 3]),
        bgr: false,
    };
    let plan = Arc::new(
        import(
            &path,
            &ImportOptions {
                input_size: Some((w, h)),
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let cfg = EngineConfig {
        backend: BackendKind::Cpu,
        threads: 2,
        mode: RunMode::Dense,
        ..Default::default()
    };
    let mut engine = Engine::new(plan.clone(), norm.clone(), cfg).expect("engine");
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut ms: Vec<f64> = (0..30)
        .map(|_| engine.process(&rgb).expect("frame").ms)
        .collect();
    ms.sort_by(f64::total_cmp);
    if let Some(t) = engine.step_times() {
        println!(
            "{}",
            gstregiondrop::engine::profile::table(engine.plan(), t, 0.1)
        );
    }
    let nchw = norm.to_nchw(&rgb, w, h);
    let ort = gstregiondrop::baseline::run(&path, &[nchw], [1, 3, h, w], 2, 30)
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{} {w}x{h}, dense, 2 threads: ours median {:.2} ms, onnxruntime median {:.2} ms, ratio {:.2} ({} plan steps)",
        path.display(),
        ms[ms.len() / 2],
        ort.ms_median,
        ms[ms.len() / 2] / ort.ms_median,
        plan.steps.len()
    );
}
