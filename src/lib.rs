//! regiondrop: region-sparse CNN inference for fixed cameras.
//!
//! frame → preprocess → change mask (once) → sparse network on the mask → detections → metadata.

pub mod error;
pub mod mask;
pub mod model;
pub mod tensor;

pub use error::{Error, Result};
