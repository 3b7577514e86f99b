//! Several streams in one process (a multi-camera pipeline): N threads, each with its own engine
//! on the sample clip's frames, all running at once. Prints the frames per second of all streams
//! together, for the dense baseline and for the default auto mode.
//!
//! cargo run --release --example multi_stream -- [STREAMS] [FRAMES]

use std::sync::Arc;
use std::time::Instant;

use gstregiondrop::backend::BackendKind;
use gstregiondrop::detect::DecoderKind;
use gstregiondrop::engine::{Engine, EngineConfig, RunMode};
use gstregiondrop::model::{import, ImportOptions};
use gstregiondrop::preprocess::letterbox;

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (streams, n) = (arg(1, 4), arg(2, 40));
    let plan = Arc::new(
        import(
            std::path::Path::new("data/models/nanodet-416.onnx"),
            &ImportOptions::default(),
        )
        .expect("the default model (./regiondrop.sh setup)"),
    );
    let (w, h) = (plan.input_w, plan.input_h);
    let frames =
        gstregiondrop::video::decode_rgb(std::path::Path::new("data/video/vtest.avi"), 0, n)
            .expect("the sample clip (./regiondrop.sh setup)");
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(
        frames
            .iter()
            .map(|f| {
                let mut rgb = vec![0u8; w * h * 3];
                letterbox(&f.source(), w, h, &mut rgb);
                rgb
            })
            .collect(),
    );
    for mode in [RunMode::Dense, RunMode::Auto] {
        let start = Instant::now();
        let workers: Vec<_> = (0..streams)
            .map(|_| {
                let (plan, frames) = (plan.clone(), frames.clone());
                std::thread::spawn(move || {
                    let cfg = EngineConfig {
                        backend: BackendKind::Cpu,
                        mode,
                        ..Default::default()
                    };
                    let mut e =
                        Engine::new(plan, DecoderKind::NanoDet.input_norm(), cfg).expect("engine");
                    for f in frames.iter() {
                        e.process(f).expect("frame");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("stream thread");
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{streams} streams × {} frames, {mode:?}: {:.1} frames/s in all ({:.1} per stream)",
            frames.len(),
            (streams * frames.len()) as f64 / s,
            frames.len() as f64 / s
        );
    }
}
