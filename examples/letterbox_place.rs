//! A whole frame as the element runs it (letterbox, change detection, network, decoding), with the
//! letterbox on the host and on the device (CUDA: `device_letterbox`), for camera-sized RGB and
//! NV12 frames. On the device also with each frame first written into a block of the backend's
//! frame memory, as an upstream element does with the element's pool, and uploaded from there.
//! The frames are the sample clip's, saved at network size by `regiondrop-bench --save-frames
//! FILE.rgb` and scaled up to the camera size here (nearest pixel), so the change pattern is the
//! clip's.
//!
//! cargo run --release --example letterbox_place -- MODEL FRAMES.rgb [WxH ...] [--precision f16]
//!
//! The backend is `auto` (REGIONDROP_BACKEND=cpu|cuda to choose). Prints one line per run: median
//! and mean ms a frame, the process's CPU time a frame while the analyzer runs it (user and
//! system, every thread: what other cameras of the process cannot use), and the detections of
//! all frames together, which must not depend on where the letterbox ran (the device letterbox
//! gives the host's bytes).

use std::path::Path;
use std::time::Instant;

use gstregiondrop::analyzer::{Analyzer, AnalyzerOptions};
use gstregiondrop::backend::{BackendKind, Precision};
use gstregiondrop::cpu_time::process_cpu_ms as cpu_ms;
use gstregiondrop::engine::EngineConfig;
use gstregiondrop::preprocess::{PackedFrame, PixelSource, Yuv420Frame};
use gstregiondrop::spec::parse_size;

/// Rounds of host and device runs, taking turns.
const ROUNDS: usize = 2;

/// One camera frame in both formats.
struct Camera {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
    /// NV12: the Y plane, then interleaved U and V at half resolution.
    y: Vec<u8>,
    uv: Vec<u8>,
}

impl Camera {
    /// `net` (n × n RGB) scaled to w × h by nearest pixel, and converted to NV12 (BT.601,
    /// limited range).
    fn from_net(net: &[u8], n: (usize, usize), w: usize, h: usize) -> Camera {
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let s = ((y * n.1 / h) * n.0 + x * n.0 / w) * 3;
                rgb[(y * w + x) * 3..][..3].copy_from_slice(&net[s..s + 3]);
            }
        }
        let px = |x: usize, y: usize| {
            let p = &rgb[(y * w + x) * 3..];
            (p[0] as i32, p[1] as i32, p[2] as i32)
        };
        let y_plane = (0..w * h)
            .map(|i| {
                let (r, g, b) = px(i % w, i / w);
                (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
            })
            .collect();
        let mut uv = vec![0u8; w * h / 2];
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                let (r, g, b) = px(cx * 2, cy * 2);
                uv[cy * w + cx * 2] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
                uv[cy * w + cx * 2 + 1] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
            }
        }
        Camera {
            w,
            h,
            rgb,
            y: y_plane,
            uv,
        }
    }

    fn source(&self, nv12: bool) -> Box<dyn PixelSource + '_> {
        match nv12 {
            false => self.rgb_source(&self.rgb),
            true => self.nv12_source(&self.y, &self.uv),
        }
    }

    fn rgb_source<'a>(&self, rgb: &'a [u8]) -> Box<dyn PixelSource + 'a> {
        Box::new(PackedFrame {
            data: rgb,
            width: self.w,
            height: self.h,
            stride: self.w * 3,
            bytes_per_px: 3,
            rgb_offsets: [0, 1, 2],
        })
    }

    fn nv12_source<'a>(&self, y: &'a [u8], uv: &'a [u8]) -> Box<dyn PixelSource + 'a> {
        Box::new(Yuv420Frame {
            y,
            y_stride: self.w,
            u: uv,
            v: uv,
            uv_stride: self.w,
            interleaved: true,
            width: self.w,
            height: self.h,
        })
    }

    /// The frame's bytes, written into `block` (as a decoder would), as a source over it.
    fn in_block<'a>(&self, nv12: bool, block: &'a mut [u8]) -> Box<dyn PixelSource + 'a> {
        if nv12 {
            let (y, uv) = block.split_at_mut(self.y.len());
            y.copy_from_slice(&self.y);
            uv[..self.uv.len()].copy_from_slice(&self.uv);
            self.nv12_source(y, &uv[..self.uv.len()])
        } else {
            block[..self.rgb.len()].copy_from_slice(&self.rgb);
            self.rgb_source(&block[..self.rgb.len()])
        }
    }
}

/// Where a run letterboxes, and where its frames lie.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Host,
    Device,
    /// On the device, each frame first written into a block of the backend's frame memory.
    DeviceFromBlocks,
}

impl Place {
    fn label(self) -> &'static str {
        match self {
            Place::Host => "host",
            Place::Device => "device",
            Place::DeviceFromBlocks => "device, frames in frame memory",
        }
    }
}

/// What a run measured, per timed frame.
struct Run {
    median_ms: f64,
    mean_ms: f64,
    cpu_ms: f64,
    detections: usize,
    backend: String,
}

/// Runs every frame through a new analyzer; None where the backend has no frame memory for
/// [`Place::DeviceFromBlocks`].
fn run(
    model: &Path,
    frames: &[Camera],
    nv12: bool,
    place: Place,
    precision: Precision,
) -> Result<Option<Run>, String> {
    let opts = AnalyzerOptions {
        engine: EngineConfig {
            device_letterbox: Some(place != Place::Host),
            backend: std::env::var("REGIONDROP_BACKEND")
                .ok()
                .map_or(Ok(BackendKind::Auto), |b| b.parse())?,
            precision,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut analyzer = Analyzer::new(model, opts).map_err(|e| e.to_string())?;
    // Two blocks in turn, as a pool hands them out.
    let mut blocks = Vec::new();
    if place == Place::DeviceFromBlocks {
        let Some(memory) = analyzer.frame_memory() else {
            return Ok(None);
        };
        let bytes = frames[0]
            .rgb
            .len()
            .max(frames[0].y.len() + frames[0].uv.len());
        for _ in 0..2 {
            blocks.push(memory(bytes).map_err(|e| e.to_string())?);
        }
    }
    let mut ms = Vec::with_capacity(frames.len());
    let (mut detections, mut cpu) = (0, 0.0);
    for (i, f) in frames.iter().enumerate() {
        let source = match blocks.get_mut(i % 2) {
            Some(block) => f.in_block(nv12, block.as_mut()),
            None => f.source(nv12),
        };
        let (t, cpu0) = (Instant::now(), cpu_ms());
        let (_, dets) = analyzer.process(&*source).map_err(|e| e.to_string())?;
        // The first frame is dense and pays for first-use work: not timed.
        if i > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            cpu += cpu_ms() - cpu0;
        }
        detections += dets.len();
    }
    let timed = ms.len().max(1) as f64;
    let mean_ms = ms.iter().sum::<f64>() / timed;
    ms.sort_by(f64::total_cmp);
    let in_place = analyzer.engine().direct_uploads();
    Ok(Some(Run {
        median_ms: ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
        mean_ms,
        cpu_ms: cpu / timed,
        detections,
        backend: format!(
            "{}; {in_place} frames uploaded in place",
            analyzer.engine().backend_details()
        ),
    }))
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: letterbox_place MODEL FRAMES.rgb [WxH ...] [--precision f16]";
    let (model, frames_path) = match &args[..] {
        [m, f, ..] => (Path::new(m), Path::new(f)),
        _ => return Err(usage.into()),
    };
    let mut precision = Precision::F32;
    let mut sizes = Vec::new();
    let mut rest = args[2..].iter();
    while let Some(a) = rest.next() {
        if a == "--precision" {
            precision = rest.next().ok_or(usage)?.parse()?;
        } else {
            let (w, h) = parse_size(a)?;
            sizes.push((w & !1, h & !1));
        }
    }
    if sizes.is_empty() {
        sizes = vec![(1920, 1080), (1280, 720)];
    }
    // The network size from the model, to cut the saved frames.
    let plan = gstregiondrop::model::import(model, &Default::default())
        .map_err(|e| format!("{}: {e}", model.display()))?;
    let n = (plan.input_w, plan.input_h);
    let bytes =
        std::fs::read(frames_path).map_err(|e| format!("{}: {e}", frames_path.display()))?;
    let net: Vec<&[u8]> = bytes.chunks_exact(n.0 * n.1 * 3).collect();
    if net.len() < 2 {
        return Err(format!(
            "{}: fewer than two {}x{} RGB frames",
            frames_path.display(),
            n.0,
            n.1
        ));
    }
    for (w, h) in sizes {
        let frames: Vec<Camera> = net.iter().map(|f| Camera::from_net(f, n, w, h)).collect();
        for nv12 in [false, true] {
            let format = if nv12 { "NV12" } else { "RGB" };
            let mut seen = Vec::new();
            for round in 0..ROUNDS {
                for place in [Place::Host, Place::Device, Place::DeviceFromBlocks] {
                    let Some(r) = run(model, &frames, nv12, place, precision)? else {
                        println!("{format} {w}x{h}: no frame memory on this backend");
                        continue;
                    };
                    println!(
                        "{format} {w}x{h}, letterbox on the {} (round {round}): median \
                         {:.3} ms, mean {:.3} ms, CPU {:.3} ms a frame, {} detections in {} \
                         frames{}",
                        place.label(),
                        r.median_ms,
                        r.mean_ms,
                        r.cpu_ms,
                        r.detections,
                        frames.len(),
                        if round == 0 && place != Place::Host {
                            format!("; {}", r.backend)
                        } else {
                            String::new()
                        }
                    );
                    seen.push(r.detections);
                }
            }
            if seen.iter().any(|&d| d != seen[0]) {
                println!("{format} {w}x{h}: DETECTIONS DIFFER between runs: {seen:?}");
            }
        }
    }
    Ok(())
}
