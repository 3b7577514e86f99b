//! regiondrop: region-sparse CNN inference for fixed cameras.
//!
//! frame → preprocess → change mask (once) → sparse network on the mask → detections → metadata.

pub mod analyzer;
pub mod backend;
pub mod detect;
pub mod engine;
pub mod error;
pub mod mask;
pub mod model;
pub mod onnxruntime;
pub mod preprocess;
pub mod tensor;
pub mod video;

pub use error::{Error, Result};
