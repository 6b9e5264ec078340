//! Typed errors for tensor construction, views and memory access.

use crate::MemoryKind;

/// Everything that can go wrong when building, viewing or reading a tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {actual} values were given")]
    DataLength {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("cannot reshape {from:?} ({from_len} elements) into {to:?} ({to_len} elements)")]
    Reshape {
        from: Vec<usize>,
        from_len: usize,
        to: Vec<usize>,
        to_len: usize,
    },
    #[error("{op}: expected a tensor of rank {expected}, got shape {shape:?}")]
    Rank {
        op: &'static str,
        expected: usize,
        shape: Vec<usize>,
    },
    #[error("{op}: dimension {dim} is out of range for shape {shape:?}")]
    DimOutOfRange {
        op: &'static str,
        dim: usize,
        shape: Vec<usize>,
    },
    #[error("{op}: range {start}..{end} is out of bounds for dimension {dim} of size {size}")]
    RangeOutOfBounds {
        op: &'static str,
        dim: usize,
        start: usize,
        end: usize,
        size: usize,
    },
    #[error("index {index:?} is out of bounds for shape {shape:?}")]
    IndexOutOfBounds {
        index: Vec<usize>,
        shape: Vec<usize>,
    },
    #[error("permutation {perm:?} is not a permutation of 0..{rank}")]
    BadPermutation { perm: Vec<usize>, rank: usize },
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not match")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    #[error("{op}: the tensor lives in {kind:?} memory, which the host cannot read directly")]
    NotOnHost { op: &'static str, kind: MemoryKind },
    #[error(
        "{op}: the host copy is stale (the device copy was written last); call sync_to_host first"
    )]
    StaleHostCopy { op: &'static str },
    #[error(
        "{op}: the device copy is stale (the host copy was written last); call sync_to_device first"
    )]
    StaleDeviceCopy { op: &'static str },
    #[error("{op}: memory format {format:?} needs a rank-4 tensor, got shape {shape:?}")]
    FormatNeedsRank4 {
        op: &'static str,
        format: crate::MemoryFormat,
        shape: Vec<usize>,
    },
    #[error("initialiser {init}: {reason}")]
    BadInitializer { init: &'static str, reason: String },
    #[error("CUDA call {call} failed: {detail}")]
    Cuda { call: &'static str, detail: String },
    #[error("device memory: {0}")]
    Device(String),
    #[error("ndarray: {0}")]
    Ndarray(String),
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, TensorError>;
