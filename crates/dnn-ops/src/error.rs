//! Typed errors of operations and of the autodiff graph.

use magma_tensor::TensorError;

/// Everything an operation can refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("{op}: {what} has shape {got:?}, expected {expected}")]
    Shape {
        op: &'static str,
        what: &'static str,
        got: Vec<usize>,
        expected: String,
    },
    #[error("{op}: invalid attribute: {reason}")]
    Attr { op: &'static str, reason: String },
    #[error("{op}: label {value} at position {index} is not a class index in 0..{classes}")]
    BadLabel {
        op: &'static str,
        index: usize,
        value: f32,
        classes: usize,
    },
    #[error(
        "{op}: every target pixel is ignored (ignore_index {ignore_index}), the mean is undefined"
    )]
    AllIgnored { op: &'static str, ignore_index: i64 },
    #[error("{op}: {call} failed: {detail}")]
    Cuda {
        op: &'static str,
        call: &'static str,
        detail: String,
    },
    #[error("autodiff: {0}")]
    Graph(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, OpError>;

/// Shape error helper.
pub(crate) fn shape_err<T>(
    op: &'static str,
    what: &'static str,
    got: &[usize],
    expected: impl Into<String>,
) -> Result<T> {
    Err(OpError::Shape {
        op,
        what,
        got: got.to_vec(),
        expected: expected.into(),
    })
}
