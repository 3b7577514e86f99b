//! The backend trait: everything above it (mask, engine, detect, element) is backend-agnostic.

pub mod cpu;
pub mod frame_memory;
pub mod generic;

/// The plan's graph outputs, copied out of a backend's tensor slots.
pub fn collect_outputs(plan: &crate::model::Plan, slots: &[Tensor]) -> Vec<Tensor> {
    plan.outputs
        .iter()
        .map(|(_, s)| slots[*s].clone())
        .collect()
}

/// NCHW [1, C, H, W] to NHWC, checking the shape against the plan's input.
pub fn nchw_to_nhwc(t: &Tensor, c: usize, h: usize, w: usize) -> Result<Vec<f32>> {
    if t.shape != [1, c, h, w] {
        return Err(crate::Error::Backend(format!(
            "input tensor {:?} does not match the network input [1, {c}, {h}, {w}]",
            t.shape
        )));
    }
    let mut out = vec![0f32; t.len()];
    for ch in 0..c {
        for p in 0..h * w {
            out[p * c + ch] = t.data[ch * h * w + p];
        }
    }
    Ok(out)
}
pub mod cuda;

use crate::detect::{Candidates, Gate};
use crate::error::Result;
use crate::mask::{DiffMetric, MaskGrowth, RegionMask};
use crate::preprocess::InputNorm;
use crate::tensor::Tensor;

/// Active tiles for each step of the plan: for layers, the tiles to compute; for exports, the
/// tiles of the exported buffer that changed; empty for the other steps.
pub struct StepTiles {
    pub per_step: Vec<Vec<u32>>,
}

pub trait Backend: Send {
    fn name(&self) -> &'static str;

    /// The backend and how it runs, for logs (the CUDA backend: device, architecture, GEMM,
    /// precision, graphs, the opt-ins in effect).
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// Normalises the tiles `tiles` of `rgb` (packed RGB u8 at network input size) into the
    /// network input. Other tiles keep what they held.
    fn write_input(&mut self, rgb: &[u8], norm: &InputNorm, tiles: &[u32]) -> Result<()>;

    /// Replaces the whole network input with `nchw` ([1, C, H, W]); for models whose input is
    /// not an RGB image and for conformance tests.
    fn write_input_tensor(&mut self, nchw: &Tensor) -> Result<()>;

    /// Runs every step of the plan; layers only on their listed tiles, reading everything else
    /// from their activation caches.
    fn run(&mut self, tiles: &StepTiles) -> Result<()>;

    /// The graph outputs of the last run, in plan order.
    fn outputs(&mut self) -> Result<Vec<Tensor>>;

    /// The plan's tensor slots, without copying them (the detection decoder reads the outputs in
    /// place). The graph outputs hold the last run's values; intermediate slots need not (a
    /// backend may keep results it does not need on the host on the device, and skip copies
    /// that nothing reads).
    fn slots(&mut self) -> Result<&[Tensor]>;

    /// From the next run on, select the anchors of the graph outputs that pass `gate` (the
    /// detection decoder's score test) where the outputs are, and keep only their rows for
    /// [`Backend::candidates`]; the outputs themselves then come to the host only when
    /// `outputs`/`slots` ask for them. None stops selecting. Returns whether this backend selects
    /// (the CPU backend does not: its outputs are in host memory already, and the decoder reads
    /// them there).
    fn set_gate(&mut self, _gate: Option<&Gate>) -> Result<bool> {
        Ok(false)
    }

    /// The candidates of the last run under the gate given to `set_gate`, sorted by anchor id;
    /// None when the backend does not select (or no run happened since `set_gate`).
    fn candidates(&self) -> Option<&Candidates> {
        None
    }

    /// A copy of feature buffer `buf` (NHWC), for tests and debugging.
    fn read_buffer(&mut self, buf: usize) -> Result<Vec<f32>>;

    /// Change detection on the backend's own device, as `mask::ChangeDetector::detect` does it
    /// (same threshold, metric and growth semantics; everything changed after `new` or
    /// `reset`), against a reference the backend keeps. The reference takes the tiles that the
    /// following `write_input` of the same `rgb` writes (the fired tiles plus the engine's rolling
    /// refresh), and that `write_input` may reuse the frame uploaded here. `None`: not supported,
    /// the engine runs `ChangeDetector` on the host.
    fn detect_changes(
        &mut self,
        _rgb: &[u8],
        _threshold: f32,
        _metric: DiffMetric,
        _growth: MaskGrowth,
        _mask: &mut RegionMask,
    ) -> Option<Result<()>> {
        None
    }

    /// Letterboxes `frame` into the network input where the network runs (the CUDA backend's
    /// kernel), for `Engine::process_frame`; None when this backend takes its input letterboxed
    /// on the host. After `Some(Ok(_))` the engine passes an empty image to `detect_changes` and
    /// `write_input` for this frame.
    fn letterbox_frame(
        &mut self,
        _frame: &dyn crate::preprocess::PixelSource,
    ) -> Option<Result<crate::preprocess::Letterbox>> {
        None
    }

    /// Memory for incoming frames that this backend reads faster than ordinary memory (the CUDA
    /// backend: page-locked blocks, uploaded with no staging copy, when it letterboxes frames
    /// on the device); None where ordinary memory serves as well.
    fn frame_memory(&self) -> Option<frame_memory::FrameMemory> {
        None
    }

    /// Frames read straight from blocks of [`Backend::frame_memory`], with no copy first.
    fn direct_uploads(&self) -> u64 {
        0
    }

    /// A frame failed after `letterbox_frame` took it: wait for whatever may still read the
    /// caller's frame (the CUDA backend's upload straight from a block of `frame_memory`), so
    /// that its memory can be rewritten once the error is returned.
    fn end_failed_frame(&mut self) {}

    /// Forgets cached activations (next run must be dense).
    fn reset(&mut self);

    /// Bytes held for activation caches and weights.
    fn memory_bytes(&self) -> usize;

    /// The number format the convolutions actually run in.
    fn precision(&self) -> Precision {
        Precision::F32
    }

    /// Milliseconds of each run of each plan step (the step's samples, in order), when profiling
    /// is on (REGIONDROP_PROFILE=1).
    fn step_times(&self) -> Option<&[Vec<f64>]> {
        None
    }

    /// Milliseconds of the backend's own phases of a frame (name, one sample per frame), when
    /// profiling is on and the backend times more than its steps (CUDA: host phases and waits).
    fn phase_times(&self) -> &[(&'static str, Vec<f64>)] {
        &[]
    }
}

/// Number format of the GEMM operands of convolutions, summed in f32 either way. The CUDA
/// backend can gather activations and keep weight copies in f16 and multiply them on the tensor
/// cores (cuBLAS or its own kernels); the CPU backend can do the same in bf16 on AMX tiles (Intel
/// Sapphire Rapids and newer) or AVX512-BF16 (AMD Zen 4 and newer). Each backend computes in f32
/// where the other is asked for, as does a CPU without bf16 arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!(
                "unknown precision `{s}` (expected f32, f16 or bf16)"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Which backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(BackendKind::Auto),
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            _ => Err(format!(
                "unknown backend `{s}` (expected auto, cpu or cuda)"
            )),
        }
    }
}
