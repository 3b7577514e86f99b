//! What a frame costs outside the network: letterboxing into the default network input (416×416)
//! for packed RGB and NV12 frames of 720p and 1080p, change detection, and decoding the
//! detections (NanoDet, on the sample clip).
//!
//! cargo run --release --example frame_costs -- [THREADS]

use std::time::Instant;

use gstregiondrop::analyzer::{Analyzer, AnalyzerOptions};
use gstregiondrop::detect::{decode_candidates, Candidates, DecodeParams, DecoderKind, Gate};
use gstregiondrop::mask::{ChangeDetector, DiffMetric, MaskGrowth, RegionMask};
use gstregiondrop::preprocess::{letterbox, PackedFrame, PixelSource, Yuv420Frame};

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

fn median_ms(src: &dyn PixelSource, dst: &mut [u8]) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..40)
        .map(|_| {
            let t = Instant::now();
            letterbox(src, 416, 416, dst);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0])
}

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let mut dst = vec![0u8; 416 * 416 * 3];
    for (w, h) in [(1280usize, 720usize), (1920, 1080)] {
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let y: Vec<u8> = (0..w * h).map(|i| (i * 7 % 251) as u8).collect();
        let uv: Vec<u8> = (0..w * h / 2).map(|i| (i * 3 % 251) as u8).collect();
        let packed = PackedFrame {
            data: &rgb,
            width: w,
            height: h,
            stride: w * 3,
            bytes_per_px: 3,
            rgb_offsets: [0, 1, 2],
        };
        let nv12 = Yuv420Frame {
            y: &y,
            y_stride: w,
            u: &uv,
            v: &uv,
            uv_stride: w,
            interleaved: true,
            width: w,
            height: h,
        };
        let sources: [(&str, &dyn PixelSource); 2] = [("RGB", &packed), ("NV12", &nv12)];
        for (name, src) in sources {
            let (med, min) = pool.install(|| median_ms(src, &mut dst));
            println!(
                "letterbox {name} {w}x{h} -> 416x416, {threads} threads: median {med:.2} ms, \
                 min {min:.2} ms"
            );
        }
    }

    // Change detection and decoding on the clip's frames, as the element runs them.
    let frames =
        gstregiondrop::video::decode_rgb(std::path::Path::new("data/video/vtest.avi"), 0, 60)
            .expect("the sample clip (./regiondrop.sh setup)");
    // The host's letterbox, whatever the backend: its network image feeds the host detector below.
    let opts = AnalyzerOptions {
        engine: gstregiondrop::engine::EngineConfig {
            device_letterbox: Some(false),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut analyzer = Analyzer::new(std::path::Path::new("data/models/nanodet-416.onnx"), opts)
        .expect("the default model (./regiondrop.sh setup)");
    let grid = gstregiondrop::mask::TileGrid::new(416, 416, 32);
    // The default growth (one tile) and a 16-pixel margin (change measured on 8-pixel cells).
    let growths = [
        MaskGrowth::whole_tiles(1),
        MaskGrowth {
            tiles: 0,
            margin: 16,
        },
    ];
    let mut detectors = growths.map(|_| ChangeDetector::new(grid));
    let mut mask = RegionMask::empty(&grid);
    let (mut detect_ms, mut decode_ms, mut cand_ms) =
        ([Vec::new(), Vec::new()], Vec::new(), Vec::new());
    let shapes = analyzer.engine().plan().output_dims();
    let gate = Gate::new(DecoderKind::NanoDet, &shapes, 416, 416, 0.35).expect("NanoDet outputs");
    let mut cands = Candidates::default();
    let mut n_cands = Vec::new();
    for f in &frames {
        analyzer.process(&f.source()).expect("frame");
        let image = analyzer
            .network_image()
            .expect("the CPU backend letterboxes on the host");
        for ((det, growth), ms) in detectors.iter_mut().zip(growths).zip(&mut detect_ms) {
            let t = Instant::now();
            det.detect(image, 24.0, DiffMetric::Max, growth, &mut mask);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        analyzer.detections().expect("decode");
        decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
        // What stays on the host when the device selects the candidates.
        let outs = analyzer.engine_mut().output_refs().expect("outputs");
        gate.select(&outs, &mut cands).expect("selection");
        n_cands.push(cands.len() as f64);
        let t = Instant::now();
        decode_candidates(&gate, &cands, &DecodeParams::default()).expect("decode");
        cand_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let [tiles_ms, cells_ms] = detect_ms;
    println!(
        "change detection (416x416, 32-px tiles, max metric, dilation 1): median {:.3} ms; \
         on 8-px cells with a 16-px margin: median {:.3} ms",
        median(tiles_ms),
        median(cells_ms)
    );
    println!(
        "decode (NanoDet outputs, threshold 0.35, NMS): median {:.3} ms",
        median(decode_ms)
    );
    println!(
        "decode of the selected candidates only (median {} of 3549 anchors): median {:.3} ms",
        median(n_cands),
        median(cand_ms)
    );
}
