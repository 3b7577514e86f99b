//! One video frame in, detections out: letterbox → engine (change mask, sparse network) → decode.
//! The element and the benchmark both drive the network through this.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::detect::{decode_candidates, Candidates, DecodeParams, DecoderKind, Detection, Gate};
use crate::engine::{Engine, EngineConfig, FrameStats};
use crate::error::{Error, Result};
use crate::model::{store, Plan};
use crate::preprocess::{FrameRect, Letterbox, PixelSource};

/// The default model, built by `scripts/setup-assets.sh`: $REGIONDROP_MODEL, else the project's copy.
pub fn default_model_path() -> PathBuf {
    std::env::var_os("REGIONDROP_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/models/nanodet-416.onnx")
        })
}

/// The sample clip: $REGIONDROP_VIDEO, else the project's copy.
pub fn default_video_path() -> PathBuf {
    std::env::var_os("REGIONDROP_VIDEO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/video/vtest.avi"))
}

#[derive(Clone, Debug, Default)]
pub struct AnalyzerOptions {
    pub engine: EngineConfig,
    pub decode: DecodeParams,
    /// None: chosen from the model's outputs.
    pub decoder: Option<DecoderKind>,
    /// For models with dynamic input dims.
    pub input_size: Option<(usize, usize)>,
    /// Frame regions the network is not shown (painted grey before change detection).
    pub ignore: Vec<FrameRect>,
}

pub struct Analyzer {
    engine: Engine,
    /// Frame regions the network is not shown; follows the frame size into the network input.
    pub ignore: Vec<FrameRect>,
    kind: DecoderKind,
    pub params: DecodeParams,
    /// The decoder's score test; its threshold follows `params` before each frame.
    gate: Gate,
    /// The threshold last given to the backend's `set_gate` (NaN: none yet).
    gate_sent: f32,
    /// Candidates selected on the host, reused from frame to frame.
    host_candidates: Candidates,
    rgb: Vec<u8>,
    /// Whether `rgb` holds the last frame (false when the backend letterboxed it on the device).
    image_on_host: bool,
    last: Option<Letterbox>,
}

impl Analyzer {
    /// The plan of `model` at `input_size`, shared with the other engines of the process that run
    /// the same file at the same size (see [`crate::model::store`]).
    pub fn load_plan(model: &Path, input_size: Option<(usize, usize)>) -> Result<Arc<Plan>> {
        store::plan(model, input_size)
    }

    pub fn new(model: &Path, opts: AnalyzerOptions) -> Result<Self> {
        let plan = Self::load_plan(model, opts.input_size)?;
        Self::with_plan(plan, opts)
    }

    pub fn with_plan(plan: Arc<Plan>, opts: AnalyzerOptions) -> Result<Self> {
        let shapes = plan.output_dims();
        let kind = match opts.decoder {
            Some(k) => k,
            None => DecoderKind::detect(&shapes).map_err(|reason| Error::BadModel {
                path: plan.model_path.clone(),
                reason,
            })?,
        };
        let gate = Gate::new(
            kind,
            &shapes,
            plan.input_w,
            plan.input_h,
            opts.decode.conf_threshold,
        )
        .map_err(|reason| Error::BadModel {
            path: plan.model_path.clone(),
            reason,
        })?;
        let rgb = vec![0u8; plan.input_w * plan.input_h * 3];
        let engine = Engine::new(plan, kind.input_norm(), opts.engine)?;
        Ok(Analyzer {
            engine,
            ignore: opts.ignore,
            kind,
            params: opts.decode,
            gate,
            gate_sent: f32::NAN,
            host_candidates: Candidates::default(),
            rgb,
            image_on_host: false,
            last: None,
        })
    }

    /// Memory for incoming frames that the backend reads faster than ordinary memory (see
    /// `Engine::frame_memory`); None where frames are letterboxed on the host, as with regions
    /// to ignore, which reads any memory alike.
    pub fn frame_memory(&self) -> Option<crate::backend::frame_memory::FrameMemory> {
        if self.ignore.is_empty() {
            self.engine.frame_memory()
        } else {
            None
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn decoder(&self) -> DecoderKind {
        self.kind
    }

    /// The letterboxed network input of the last frame (packed RGB), when it was made on the
    /// host (not when the CUDA backend letterboxed the frame on the device).
    pub fn network_image(&self) -> Option<&[u8]> {
        self.image_on_host.then_some(&self.rgb[..])
    }

    /// Runs one frame; boxes come back in frame pixels.
    pub fn process(&mut self, frame: &dyn PixelSource) -> Result<(FrameStats, Vec<Detection>)> {
        let (w, h) = (self.engine.plan().input_w, self.engine.plan().input_h);
        let lb = Letterbox::fit(frame.width(), frame.height(), w, h);
        if self.last.is_some_and(|l| l != lb) {
            self.engine.reset();
        }
        self.last = Some(lb);
        let blank = &mut self.engine.config_mut().blank;
        blank.clear();
        blank.extend(self.ignore.iter().filter_map(|r| lb.to_net_rect(r, w, h)));
        self.send_gate()?;
        let (stats, on_host) = self.engine.process_frame(frame, &mut self.rgb)?;
        self.image_on_host = on_host;
        let dets = self.detections_in_frame()?;
        Ok((stats, dets))
    }

    /// Lets the backend select candidates where the outputs are, at the current threshold.
    fn send_gate(&mut self) -> Result<()> {
        let t = self.params.conf_threshold;
        if self.gate_sent != t {
            self.gate.threshold = t;
            self.engine.set_gate(Some(&self.gate))?;
            self.gate_sent = t;
        }
        Ok(())
    }

    /// Decodes the current outputs into network-input coordinates: from the candidates the
    /// backend selected where it did so at this threshold, else from the outputs on the host.
    pub fn detections(&mut self) -> Result<Vec<Detection>> {
        let dets = match self.engine.candidates() {
            Some(c) if c.threshold <= self.params.conf_threshold => {
                decode_candidates(&self.gate, c, &self.params)
            }
            _ => {
                self.gate.threshold = self.params.conf_threshold;
                let outs = self.engine.output_refs()?;
                self.gate
                    .select(&outs, &mut self.host_candidates)
                    .and_then(|()| {
                        decode_candidates(&self.gate, &self.host_candidates, &self.params)
                    })
            }
        };
        dets.map_err(|reason| Error::BadModel {
            path: self.engine.plan().model_path.clone(),
            reason,
        })
    }

    fn detections_in_frame(&mut self) -> Result<Vec<Detection>> {
        let lb = self.last.expect("a frame was letterboxed");
        let mut dets = self.detections()?;
        for d in &mut dets {
            let (x0, y0) = lb.to_frame(d.bbox[0], d.bbox[1]);
            let (x1, y1) = lb.to_frame(d.bbox[2], d.bbox[3]);
            d.bbox = [x0, y0, x1, y1];
        }
        Ok(dets)
    }

    pub fn reset(&mut self) {
        self.engine.reset();
        self.last = None;
    }
}
