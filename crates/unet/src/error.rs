//! Errors of the segmentation workflows.

use std::path::PathBuf;

/// Everything training, evaluation or prediction can refuse.
#[derive(Debug, thiserror::Error)]
pub enum UnetError {
    #[error(transparent)]
    Layer(#[from] dnn_layers::LayerError),
    #[error(transparent)]
    Op(#[from] dnn_ops::OpError),
    #[error(transparent)]
    Tensor(#[from] magma_tensor::TensorError),
    #[error(transparent)]
    Dataset(#[from] dnn_data::DataError),
    /// A dataset problem found by this crate (class counts, empty splits).
    #[error("{0}")]
    Data(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid option: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, UnetError>;
