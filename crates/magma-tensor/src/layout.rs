//! Element types, memory formats and stride arithmetic.

/// The element type a tensor stores: `F32` everywhere; `BF16` in device memory only, for the
/// activations of a GPU backend's mixed-precision ops; `F16` is named for the seam, unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
}

/// How the elements of a rank-4 activation are ordered in memory.
///
/// The logical shape is always `[N, C, H, W]` (as in PyTorch); the format only decides the
/// strides. `ChannelsLast` is NHWC memory order, what the cuDNN tensor-core paths want.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryFormat {
    /// Row-major over the logical shape (NCHW for activations).
    Contiguous,
    /// NHWC memory order behind an NCHW logical shape.
    ChannelsLast,
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for (stride, &dim) in strides.iter_mut().zip(shape).rev() {
        *stride = acc;
        acc *= dim.max(1);
    }
    strides
}

/// NHWC strides of a logical `[N, C, H, W]` shape.
pub fn channels_last_strides(shape: &[usize; 4]) -> Vec<usize> {
    let [_, c, h, w] = *shape;
    let (c, h, w) = (c.max(1), h.max(1), w.max(1));
    vec![h * w * c, 1, w * c, c]
}

/// Number of elements in `shape` (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
