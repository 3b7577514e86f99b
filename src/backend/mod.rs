//! The backend trait: everything above it (mask, engine, detect, element) is backend-agnostic.

pub mod cpu;
pub mod cuda;

use crate::error::Result;
use crate::preprocess::InputNorm;
use crate::tensor::Tensor;

/// Active tiles for each step of the plan (empty for non-layer steps).
pub struct StepTiles {
    pub per_step: Vec<Vec<u32>>,
}

pub trait Backend: Send {
    fn name(&self) -> &'static str;

    /// Normalises the tiles `tiles` of `rgb` (packed RGB u8 at network input size) into the
    /// network input. Other tiles keep what they held.
    fn write_input(&mut self, rgb: &[u8], norm: &InputNorm, tiles: &[u32]) -> Result<()>;

    /// Runs every step of the plan; layers only on their listed tiles, reading everything else
    /// from their activation caches.
    fn run(&mut self, tiles: &StepTiles) -> Result<()>;

    /// The graph outputs of the last run, in plan order.
    fn outputs(&mut self) -> Result<Vec<Tensor>>;

    /// Forgets cached activations (next run must be dense).
    fn reset(&mut self);

    /// Bytes held for activation caches and weights.
    fn memory_bytes(&self) -> usize;
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
            _ => Err(format!("unknown backend `{s}` (expected auto, cpu or cuda)")),
        }
    }
}
