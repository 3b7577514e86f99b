//! One error type for the whole library: every variant names what went wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read model file {path}: {source}")]
    ModelIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid ONNX model (protobuf decode failed: {reason})")]
    ModelDecode { path: PathBuf, reason: String },
    #[error("{path}: unsupported ONNX op `{op}` at node `{node}`{detail}")]
    UnsupportedOp {
        path: PathBuf,
        op: String,
        node: String,
        detail: String,
    },
    #[error("{path}: node `{node}` ({op}): {reason}")]
    BadNode {
        path: PathBuf,
        op: String,
        node: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("invalid setting: {0}")]
    Settings(String),
    #[error("backend error: {0}")]
    Backend(String),
    #[error("tensor op {op}: {reason}")]
    Tensor { op: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn tensor_err(op: &str, reason: impl Into<String>) -> Error {
    Error::Tensor {
        op: op.to_string(),
        reason: reason.into(),
    }
}

/// The message a caught panic carried ("unknown panic" where it carried no text), for the error
/// that reports it.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
