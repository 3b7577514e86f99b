//! The engine drives one frame: change mask (once) → per-layer tile lists → backend run. It decides
//! dense vs sparse (first frame, refresh, reset, break-even) and keeps the timing figures.

pub mod profile;

use std::sync::Arc;
use std::time::Instant;

use crate::backend::cuda::{self, CudaOptions};
use crate::backend::{cpu::CpuBackend, Backend, BackendKind, Precision, StepTiles};
use crate::detect::{Candidates, Gate};
use crate::error::{Error, Result};
use crate::mask::{ChangeDetector, DiffMetric, MaskGrowth, RegionMask, TileGrid};
use crate::model::import::halo_for;
use crate::model::plan::{LayerOp, Operand, Plan, Step};
use crate::preprocess::{blank_rects, letterbox, InputNorm, NetRect, PixelSource};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RunMode {
    /// Sparse unless dense is predicted to be faster (or a refresh is due).
    #[default]
    Auto,
    /// Always dense: the baseline.
    Dense,
    /// Sparse on every frame after the first, whatever the active fraction.
    Sparse,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub tile: usize,
    /// Per-tile difference (0..255 pixel units) above which a tile is recomputed.
    pub threshold: f32,
    pub metric: DiffMetric,
    /// Tiles to grow the change mask by.
    pub dilation: usize,
    /// Input pixels to grow the change mask by beyond `dilation`, from the changed 8-pixel cells
    /// of the tiles that fire (0 = whole tiles only): a step finer than a tile of dilation (see
    /// [`MaskGrowth`]).
    pub margin: usize,
    /// Grow the mask per layer by each layer's reach, so sparse equals dense.
    pub exact: bool,
    /// Without `exact`: how many tiles around the change mask a layer's reach may still grow the
    /// mask (0 = one common mask for every layer, as in the published method).
    pub growth_limit: usize,
    /// Full dense frame every N frames (0 = never, except the first and after a reset).
    pub refresh_interval: u64,
    /// Rolling refresh: this many extra tiles per frame, round robin, so no tile stays stale for
    /// more than tiles / N frames (0 = off).
    pub refresh_tiles: usize,
    pub threads: usize,
    pub backend: BackendKind,
    pub device_id: usize,
    /// Number format of the convolutions' operands: f16 on the CUDA backend, bf16 on CPUs with
    /// AMX or AVX512-BF16; a backend that cannot computes in f32.
    pub precision: Precision,
    /// Letterbox frames on the device where the backend can (CUDA, with its change detection on
    /// the device) in `process_frame`. None: the backend's default (CUDA: on, unless
    /// `REGIONDROP_CUDA_LETTERBOX=0`).
    pub device_letterbox: Option<bool>,
    pub mode: RunMode,
    /// Work fraction above which dense runs instead; None = measured while running.
    pub break_even: Option<f64>,
    /// Network-input rectangles painted the letterbox grey before change detection, in
    /// `process_frame` (the frame's `ignore-regions`): letterboxed on the host when there are any.
    pub blank: Vec<NetRect>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tile: 32,
            // Measured on the sample clip (BENCHMARKS.md): above ~24 codec noise no longer fires
            // tiles; one tile of dilation keeps the frequent classes' AP50 against dense ≥ 0.99.
            threshold: 24.0,
            metric: DiffMetric::Max,
            dilation: 1,
            margin: 0,
            exact: false,
            growth_limit: 0,
            refresh_interval: 0,
            refresh_tiles: 8,
            threads: 0,
            backend: BackendKind::Auto,
            device_id: 0,
            precision: Precision::F32,
            device_letterbox: None,
            mode: RunMode::Auto,
            break_even: None,
            blank: Vec::new(),
        }
    }
}

impl EngineConfig {
    /// How far the change mask grows around the changed pixels.
    pub fn growth(&self) -> MaskGrowth {
        MaskGrowth {
            tiles: self.dilation,
            margin: self.margin,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameStats {
    pub frame: u64,
    /// Changed tiles / all tiles (after dilation).
    pub active_fraction: f64,
    /// MAC-weighted fraction of the network actually computed.
    pub work_fraction: f64,
    pub dense: bool,
    pub ms: f64,
}

pub struct Engine {
    plan: Arc<Plan>,
    cfg: EngineConfig,
    norm: InputNorm,
    backend: Box<dyn Backend>,
    detector: ChangeDetector,
    grid: TileGrid,
    mask: RegionMask,
    buf_masks: Vec<RegionMask>,
    scratch: RegionMask,
    dilate_scratch: RegionMask,
    bound: RegionMask,
    input_tiles: Vec<u32>,
    tiles: StepTiles,
    halos: Vec<usize>,
    frames: u64,
    since_refresh: u64,
    need_dense: bool,
    backend_warning: Option<String>,
    /// Why `backend=auto` chose the CPU where it did (no usable CUDA driver or device).
    backend_reason: Option<String>,
    /// Measured sparse efficiency (dense_ms · work / sparse_ms), smoothed.
    efficiency: f64,
    dense_ms: Option<f64>,
}

impl Engine {
    pub fn new(plan: Arc<Plan>, norm: InputNorm, cfg: EngineConfig) -> Result<Self> {
        if cfg.tile == 0 || !cfg.tile.is_multiple_of(plan.max_scale) {
            return Err(Error::Settings(format!(
                "tile-size {} must be a positive multiple of the network's largest stride {}",
                cfg.tile, plan.max_scale
            )));
        }
        let Chosen {
            backend,
            warning: backend_warning,
            reason: backend_reason,
        } = make_backend(plan.clone(), &cfg)?;
        let grid = plan.grid(cfg.tile);
        let halos = plan
            .steps
            .iter()
            .map(|s| match s {
                Step::Layer(l) => halo_for(l, cfg.tile),
                _ => 0,
            })
            .collect();
        Ok(Engine {
            detector: ChangeDetector::new(grid),
            mask: RegionMask::empty(&grid),
            buf_masks: vec![RegionMask::empty(&grid); plan.buffers.len()],
            scratch: RegionMask::empty(&grid),
            dilate_scratch: RegionMask::empty(&grid),
            bound: RegionMask::empty(&grid),
            input_tiles: Vec::with_capacity(grid.len()),
            tiles: StepTiles {
                per_step: plan
                    .steps
                    .iter()
                    .map(|_| Vec::with_capacity(grid.len()))
                    .collect(),
            },
            halos,
            grid,
            plan,
            cfg,
            norm,
            backend,
            frames: 0,
            since_refresh: 0,
            need_dense: true,
            backend_warning,
            backend_reason,
            efficiency: 0.8,
            dense_ms: None,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn grid(&self) -> TileGrid {
        self.grid
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Threshold and other detection settings may change between frames.
    pub fn config_mut(&mut self) -> &mut EngineConfig {
        &mut self.cfg
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The number format the backend's convolutions run in.
    pub fn precision(&self) -> Precision {
        self.backend.precision()
    }

    /// Set when `auto` found a GPU that could not be used and fell back to the CPU, or when a
    /// precision was asked of a backend that computes it in f32.
    pub fn backend_warning(&self) -> Option<&str> {
        self.backend_warning.as_deref()
    }

    /// "cuda backend", or "cpu backend (CUDA not available: why)" where `backend=auto` fell back
    /// because there is no usable driver or device (for the log: not a warning, most machines
    /// have no NVIDIA GPU).
    pub fn backend_label(&self) -> String {
        match &self.backend_reason {
            Some(r) => format!("{} backend ({r})", self.backend_name()),
            None => format!("{} backend", self.backend_name()),
        }
    }

    /// How the backend runs, for logs (see `Backend::describe`).
    pub fn backend_details(&self) -> String {
        self.backend.describe()
    }

    /// Per-step milliseconds of every run so far, when the backend profiles.
    pub fn step_times(&self) -> Option<&[Vec<f64>]> {
        self.backend.step_times()
    }

    /// The backend's own per-frame phases, when it profiles them (see `Backend::phase_times`).
    pub fn phase_times(&self) -> &[(&'static str, Vec<f64>)] {
        self.backend.phase_times()
    }

    pub fn memory_bytes(&self) -> usize {
        self.backend.memory_bytes()
    }

    /// Memory for incoming frames that the backend reads faster than ordinary memory (see
    /// `Backend::frame_memory`): what the element offers upstream as its buffer pool.
    /// None where frames are letterboxed on the host (`blank` regions), which reads any memory
    /// alike.
    pub fn frame_memory(&self) -> Option<crate::backend::frame_memory::FrameMemory> {
        self.cfg
            .blank
            .is_empty()
            .then(|| self.backend.frame_memory())
            .flatten()
    }

    /// Frames the backend read straight from blocks of [`Engine::frame_memory`].
    pub fn direct_uploads(&self) -> u64 {
        self.backend.direct_uploads()
    }

    /// A copy of one feature cache (NHWC), for tests and debugging.
    pub fn read_buffer(&mut self, buf: usize) -> Result<Vec<f32>> {
        self.backend.read_buffer(buf)
    }

    /// The pixels the caches reflect (packed RGB at network size). Kept by the host detector only:
    /// when the backend detects changes itself (CUDA), only the refreshed tiles are current here.
    pub fn reference_image(&self) -> &[u8] {
        self.detector.reference()
    }

    /// The change mask of the last frame.
    pub fn mask(&self) -> &RegionMask {
        &self.mask
    }

    /// Forgets caches and reference: the next frame is dense.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.backend.reset();
        self.need_dense = true;
    }

    /// Letterboxes and runs one frame: on the device when the backend letterboxes there (the CUDA
    /// backend with `device_letterbox`; `rgb` is then left as it was), else into `rgb` (packed RGB
    /// at network input size) on the host, where the `blank` rectangles are then painted grey.
    /// Returns whether the host image was written. As for `process`, `FrameStats::ms` starts after
    /// the letterbox (change mask and network).
    pub fn process_frame(
        &mut self,
        frame: &dyn PixelSource,
        rgb: &mut [u8],
    ) -> Result<(FrameStats, bool)> {
        // Blanked regions are painted on the host image.
        let on_device = if self.cfg.blank.is_empty() {
            self.backend.letterbox_frame(frame)
        } else {
            None
        };
        match on_device {
            Some(Ok(_)) => self
                .process_image(None, Instant::now())
                .map(|s| (s, false))
                .inspect_err(|_| self.backend.end_failed_frame()),
            Some(Err(e)) => {
                self.backend.end_failed_frame();
                Err(e)
            }
            None => {
                letterbox(frame, self.plan.input_w, self.plan.input_h, rgb);
                blank_rects(rgb, self.plan.input_w, &self.cfg.blank);
                self.process_image(Some(rgb), Instant::now())
                    .map(|s| (s, true))
            }
        }
    }

    /// Runs one frame given as packed RGB at network input size (already letterboxed).
    pub fn process(&mut self, rgb: &[u8]) -> Result<FrameStats> {
        self.process_image(Some(rgb), Instant::now())
    }

    /// Runs the frame in `rgb`, or (None) the one the backend letterboxed on the device.
    fn process_image(&mut self, rgb: Option<&[u8]>, start: Instant) -> Result<FrameStats> {
        let host = rgb.unwrap_or(&[]);
        let mut mask = std::mem::take(&mut self.mask);
        if self.cfg.mode == RunMode::Dense {
            // The baseline sees every pixel of every frame.
            mask.fill(true);
        } else {
            // The backend's own detector (GPU: the frame is uploaded once, the reference stays on
            // the device), else the host one. The rolling refresh cursor stays here either way.
            let detected = match self.backend.detect_changes(
                host,
                self.cfg.threshold,
                self.cfg.metric,
                self.cfg.growth(),
                &mut mask,
            ) {
                Some(r) => r,
                None => match rgb {
                    Some(rgb) => {
                        self.detector.detect(
                            rgb,
                            self.cfg.threshold,
                            self.cfg.metric,
                            self.cfg.growth(),
                            &mut mask,
                        );
                        Ok(())
                    }
                    None => Err(Error::Backend(
                        "a frame letterboxed on the device needs change detection there".into(),
                    )),
                },
            };
            if let Err(e) = detected {
                self.mask = mask;
                return Err(e);
            }
            match rgb {
                Some(rgb) => self
                    .detector
                    .refresh(rgb, self.cfg.refresh_tiles, &mut mask),
                None => self
                    .detector
                    .refresh_mask(self.cfg.refresh_tiles, &mut mask),
            };
        }
        let r = self.run_masked(host, &mask, start);
        self.mask = mask;
        r
    }

    /// Runs one frame on a given change mask (the input is rewritten only on masked tiles).
    /// Benchmarks and tests use it to control the active fraction.
    pub fn process_with_mask(&mut self, rgb: &[u8], mask: &RegionMask) -> Result<FrameStats> {
        let start = Instant::now();
        let mask = if self.need_dense {
            RegionMask::full(&self.grid)
        } else {
            mask.clone()
        };
        let r = self.run_masked(rgb, &mask, start);
        self.mask = mask;
        r
    }

    /// Runs the network densely on a raw input tensor [1, C, H, W] (non-image inputs, conformance).
    pub fn process_tensor(&mut self, nchw: &Tensor) -> Result<FrameStats> {
        let start = Instant::now();
        self.backend.write_input_tensor(nchw)?;
        let full = RegionMask::full(&self.grid);
        self.plan_tiles(&full, true);
        self.backend.run(&self.tiles)?;
        self.frames += 1;
        Ok(FrameStats {
            frame: self.frames,
            active_fraction: 1.0,
            work_fraction: 1.0,
            dense: true,
            ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }

    fn run_masked(&mut self, rgb: &[u8], mask: &RegionMask, start: Instant) -> Result<FrameStats> {
        let mut input_tiles = std::mem::take(&mut self.input_tiles);
        mask.active_tiles(&mut input_tiles);
        let written = self.backend.write_input(rgb, &self.norm, &input_tiles);
        self.input_tiles = input_tiles;
        written?;

        let refresh_due =
            self.cfg.refresh_interval > 0 && self.since_refresh + 1 >= self.cfg.refresh_interval;
        let work = self.plan_tiles(mask, false);
        let dense = match self.cfg.mode {
            RunMode::Dense => true,
            _ if self.need_dense || refresh_due => true,
            RunMode::Sparse => false,
            RunMode::Auto => match self.cfg.break_even {
                Some(be) => work > be,
                None => work > self.efficiency.clamp(0.2, 1.0),
            },
        };
        let work = if dense {
            self.plan_tiles(mask, true)
        } else {
            work
        };
        self.backend.run(&self.tiles)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if dense {
            self.dense_ms = Some(match self.dense_ms {
                Some(d) => 0.8 * d + 0.2 * ms,
                None => ms,
            });
            self.since_refresh = 0;
        } else {
            self.since_refresh += 1;
            if let (Some(d), true) = (self.dense_ms, work >= 0.05) {
                let eff = (d * work / ms).clamp(0.05, 1.5);
                self.efficiency = 0.9 * self.efficiency + 0.1 * eff;
            }
        }
        self.need_dense = false;
        self.frames += 1;
        Ok(FrameStats {
            frame: self.frames,
            active_fraction: mask.fraction(),
            work_fraction: work,
            dense,
            ms,
        })
    }

    /// Fills the per-step tile lists from the change mask; returns the MAC-weighted work fraction.
    fn plan_tiles(&mut self, mask: &RegionMask, dense: bool) -> f64 {
        for m in &mut self.buf_masks {
            m.fill(dense);
        }
        if !dense {
            self.buf_masks[0].copy_from(mask);
        }
        // Per-layer growth follows each layer's reach (exact), limited to `growth_limit` tiles
        // around the change mask; a limit of 0 is the single common mask for every layer.
        let limit = if self.cfg.exact {
            None
        } else {
            Some(self.cfg.growth_limit)
        };
        let mut bound = std::mem::take(&mut self.bound);
        if let Some(g) = limit {
            bound.copy_from(mask);
            bound.dilate(g, &mut self.dilate_scratch);
        }
        let (mut done, mut total) = (0.0, 0.0);
        for (si, step) in self.plan.steps.iter().enumerate() {
            let tiles = &mut self.tiles.per_step[si];
            tiles.clear();
            if let Step::Export { input, .. } = step {
                // Exports copy only what changed in their buffer.
                self.buf_masks[input.buf].active_tiles(tiles);
                continue;
            }
            let Step::Layer(l) = step else { continue };
            let mut m = std::mem::take(&mut self.scratch);
            if dense {
                m.fill(true);
            } else {
                m.copy_from(&self.buf_masks[l.input.buf]);
                if let LayerOp::Binary {
                    rhs: Operand::View(v),
                    ..
                } = &l.op
                {
                    m.union_with(&self.buf_masks[v.buf]);
                }
                if l.global {
                    m.fill(true);
                } else {
                    m.dilate(self.halos[si], &mut self.dilate_scratch);
                }
                if limit.is_some() {
                    m.intersect_with(&bound);
                }
            }
            self.buf_masks[l.output.buf].union_with(&m);
            m.active_tiles(tiles);
            done += l.macs * m.fraction();
            total += l.macs;
            self.scratch = m;
        }
        self.bound = bound;
        if total > 0.0 {
            done / total
        } else {
            0.0
        }
    }

    /// The graph outputs of the last frame.
    pub fn outputs(&mut self) -> Result<Vec<Tensor>> {
        self.backend.outputs()
    }

    /// Asks the backend to select the anchors that pass `gate` where the outputs are (see
    /// [`Backend::set_gate`]); returns whether it does.
    pub fn set_gate(&mut self, gate: Option<&Gate>) -> Result<bool> {
        self.backend.set_gate(gate)
    }

    /// The last frame's candidates under the gate of `set_gate`, where the backend selects them.
    pub fn candidates(&self) -> Option<&Candidates> {
        self.backend.candidates()
    }

    /// The graph outputs of the last frame, in place (no copy of their data).
    pub fn output_refs(&mut self) -> Result<Vec<&Tensor>> {
        let slots = self.backend.slots()?;
        Ok(self.plan.outputs.iter().map(|(_, s)| &slots[*s]).collect())
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// The backend the settings give, with what to say about the choice.
struct Chosen {
    backend: Box<dyn Backend>,
    /// For a GStreamer warning: auto fell back from an unusable GPU, or a precision was asked of a
    /// backend that computes it in f32.
    warning: Option<String>,
    /// For the log: why auto runs on the CPU where no usable CUDA driver or device was found.
    reason: Option<String>,
}

/// The backend, a warning when it is not what the settings asked for (`auto` fell back from an
/// unusable GPU, or a precision was asked of a backend that cannot compute in it), and why auto
/// chose the CPU.
fn make_backend(plan: Arc<Plan>, cfg: &EngineConfig) -> Result<Chosen> {
    let cpu = |plan, note: Option<String>| -> Result<(Box<dyn Backend>, Option<String>)> {
        let b: Box<dyn Backend> = Box::new(CpuBackend::with_precision(
            plan,
            cfg.tile,
            cfg.threads,
            cfg.precision,
        )?);
        let precision_note = match cfg.precision {
            Precision::F16 => Some(
                "precision f16 applies to the CUDA backend; the CPU backend computes in f32 \
                 (bf16 on CPUs with AMX or AVX512-BF16)",
            ),
            Precision::Bf16 if b.precision() != Precision::Bf16 => {
                Some(if CpuBackend::bf16_available() {
                    "precision bf16: no convolution of this model has the 16 or more input \
                 channels the bf16 kernels take; all compute in f32"
                } else {
                    "precision bf16 needs a CPU with AMX-BF16 (Intel Sapphire Rapids or newer, and \
                 Linux 5.16 or newer to grant its tiles) or AVX512-BF16 (AMD Zen 4 or newer, \
                 Intel Cooper Lake); this one computes in f32"
                })
            }
            _ => None,
        };
        let note = match (note, precision_note) {
            (Some(n), Some(f)) => Some(format!("{n}; {f}")),
            (n, f) => n.or(f.map(String::from)),
        };
        Ok((b, note))
    };
    let cuda_note = |b: Box<dyn Backend>| {
        let note = (cfg.precision == Precision::Bf16).then(|| {
            "precision bf16 applies to the CPU backend; the CUDA backend computes in f32 \
             (f16 for its tensor cores)"
                .to_string()
        });
        (b, note)
    };
    let opts = CudaOptions {
        // bf16 is the CPU's format: the CUDA backend computes it in f32 (and `cuda_note` says so).
        precision: match cfg.precision {
            Precision::Bf16 => Precision::F32,
            p => p,
        },
        device_letterbox: cfg.device_letterbox,
        ..CudaOptions::default()
    };
    let (backend, warning) = match cfg.backend {
        BackendKind::Cpu => cpu(plan, None)?,
        BackendKind::Cuda => cuda_note(cuda::create(plan, cfg.tile, cfg.device_id, opts)?),
        BackendKind::Auto => match cuda::available(cfg.device_id) {
            Ok(()) => match cuda::create(plan.clone(), cfg.tile, cfg.device_id, opts) {
                Ok(b) => cuda_note(b),
                Err(e) => cpu(
                    plan,
                    Some(format!(
                        "CUDA device {} found but unusable ({e}); running on the CPU",
                        cfg.device_id
                    )),
                )?,
            },
            Err(why) => {
                let (backend, warning) = cpu(plan, None)?;
                return Ok(Chosen {
                    backend,
                    warning,
                    reason: Some(format!("CUDA not available: {why}")),
                });
            }
        },
    };
    Ok(Chosen {
        backend,
        warning,
        reason: None,
    })
}
