//! Shared helpers for the integration tests: real assets, frames, comparisons.
#![allow(dead_code)]

pub mod synthetic;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gstregiondrop::backend::BackendKind;
use gstregiondrop::detect::DecoderKind;
use gstregiondrop::engine::{Engine, EngineConfig, RunMode};
use gstregiondrop::model::{import, ImportOptions, Plan};
use gstregiondrop::preprocess::{letterbox, InputNorm};
use gstregiondrop::tensor::Tensor;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real asset built by scripts/setup-assets.sh; a missing one is a failed set-up, not a skip.
pub fn asset(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-assets.sh (or ./regiondrop.sh setup)",
        p.display()
    );
    p
}

pub struct RealModel {
    pub path: &'static str,
    pub size: Option<(usize, usize)>,
    pub norm: InputNorm,
}

/// The default COCO detector, the YOLOv8n-shaped detector and the DBNet text detector.
pub fn real_models() -> Vec<RealModel> {
    vec![
        RealModel {
            path: "data/models/nanodet-416.onnx",
            size: None,
            norm: DecoderKind::NanoDet.input_norm(),
        },
        RealModel {
            path: "data/models/yolov8n-nudenet-320.onnx",
            size: Some((320, 320)),
            norm: DecoderKind::YoloV8.input_norm(),
        },
        RealModel {
            path: "data/models/ppocr-det.onnx",
            size: Some((320, 256)),
            norm: InputNorm {
                mean: [123.675, 116.28, 103.53],
                std: [58.395, 57.12, 57.375],
                bgr: false,
            },
        },
    ]
}

/// The tile size the tests run a plan with (32 px, or the network's largest stride if larger)
/// and the indices of every tile of that grid.
pub fn tiles_of(plan: &Plan) -> (usize, Vec<u32>) {
    let tile = 32.max(plan.max_scale);
    (tile, (0..plan.grid(tile).len() as u32).collect())
}

/// A real model with a detection head.
pub struct Detector {
    pub model: RealModel,
    pub plan: Arc<Plan>,
    pub shapes: Vec<Vec<usize>>,
    pub kind: DecoderKind,
}

/// The real models with a detection head, each with its plan, output shapes and decoder.
pub fn detectors() -> Vec<Detector> {
    real_models()
        .into_iter()
        .filter_map(|model| {
            let plan = load(&model);
            let shapes = plan.output_dims();
            let kind = DecoderKind::detect(&shapes).ok()?;
            Some(Detector {
                model,
                plan,
                shapes,
                kind,
            })
        })
        .collect()
}

pub fn load(m: &RealModel) -> Arc<Plan> {
    Arc::new(
        import(&asset(m.path), &ImportOptions { input_size: m.size })
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// `n` consecutive frames of the sample clip from `skip`, letterboxed to the plan's input.
pub fn clip_frames(plan: &Plan, skip: usize, n: usize) -> Vec<Vec<u8>> {
    let frames = gstregiondrop::video::decode_rgb(&asset("data/video/vtest.avi"), skip, n)
        .expect("decode vtest.avi");
    assert_eq!(frames.len(), n);
    frames
        .iter()
        .map(|f| {
            let mut rgb = vec![0u8; plan.input_w * plan.input_h * 3];
            letterbox(&f.source(), plan.input_w, plan.input_h, &mut rgb);
            rgb
        })
        .collect()
}

pub fn engine(plan: &Arc<Plan>, norm: &InputNorm, cfg: EngineConfig) -> Engine {
    Engine::new(
        plan.clone(),
        norm.clone(),
        EngineConfig {
            backend: BackendKind::Cpu,
            threads: 2,
            ..cfg
        },
    )
    .unwrap()
}

pub fn dense_cfg() -> EngineConfig {
    EngineConfig {
        mode: RunMode::Dense,
        ..Default::default()
    }
}

pub fn exact_cfg(threshold: f32) -> EngineConfig {
    EngineConfig {
        mode: RunMode::Sparse,
        exact: true,
        threshold,
        // No rolling refresh: these tests check what the change mask alone recomputes.
        refresh_tiles: 0,
        ..Default::default()
    }
}

/// max |a - b| / max |b| over all outputs.
pub fn rel_max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    let (mut diff, mut scale) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape, y.shape);
        for (&p, &q) in x.data.iter().zip(&y.data) {
            diff = diff.max((p - q).abs() as f64);
            scale = scale.max(q.abs() as f64);
        }
    }
    diff / scale.max(1e-12)
}

/// A deterministic pseudo-random sequence (no extra crates).
pub use gstregiondrop::rng::Lcg;

pub fn path(p: &str) -> &Path {
    Path::new(p)
}
pub mod onnx_build;
