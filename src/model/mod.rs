//! ONNX import, the graph semantics of non-spatial ops, and the execution plan.

pub mod act;
pub mod eval;
pub mod import;
pub mod onnx;
pub mod plan;
pub mod store;

pub use import::{import, ImportOptions};
pub use plan::Plan;
