//! Time to letterbox one frame into the default network input (416×416), the per-frame cost the
//! element pays before change detection, for packed RGB and NV12 frames of 720p and 1080p.
//!
//! cargo run --release --example letterbox -- [THREADS]

use std::time::Instant;

use gstregiondrop::preprocess::{letterbox, PackedFrame, PixelSource, Yuv420Frame};

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
                "{name} {w}x{h} -> 416x416, {threads} threads: median {med:.2} ms, min {min:.2} ms"
            );
        }
    }
}
