//! Typed errors of layers, models, optimizers and weight files.

use std::path::PathBuf;

use dnn_ops::OpError;
use magma_tensor::TensorError;

/// Everything a layer, model or weight file can refuse.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("{layer}: {reason}")]
    Config { layer: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: the file does not match the model:\n{differences}")]
    Mismatch { path: PathBuf, differences: String },
    #[error("non-finite loss {value} at epoch {epoch}, step {step}; {hint}")]
    NonFiniteLoss {
        epoch: usize,
        step: usize,
        value: f32,
        hint: String,
    },
    #[error("non-finite gradient in parameter {param} at epoch {epoch}, step {step}")]
    NonFiniteGradient {
        param: String,
        epoch: usize,
        step: usize,
    },
    #[error("dataset: {0}")]
    Data(String),
    /// An NCCL call returned an error status (`call`, the status's name and NCCL's own text).
    #[error("NCCL {call} failed: {status} ({message}){detail}")]
    Nccl {
        call: &'static str,
        status: String,
        message: String,
        /// NCCL's last error message or the communicator's asynchronous error, when there is
        /// one (starts with "; ").
        detail: String,
    },
    /// A communicator could not be set up or used: a missing library, a bad rank or size, a
    /// tensor on the wrong device.
    #[error("communicator: {0}")]
    Communicator(String),
    /// The exchange of a communicator's start-up id through a shared folder failed.
    #[error("bootstrap through {path}: {reason}")]
    Bootstrap { path: PathBuf, reason: String },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, LayerError>;

pub(crate) fn config_err<T>(layer: impl Into<String>, reason: impl Into<String>) -> Result<T> {
    Err(LayerError::Config {
        layer: layer.into(),
        reason: reason.into(),
    })
}
