//! The tensor: shared storage, a shape, strides and an offset.

use std::sync::Arc;

use crate::layout::{channels_last_strides, contiguous_strides, numel};
use crate::{DType, MemoryFormat, MemoryKind, Result, Storage, TensorError};

/// An n-dimensional array of `f32` (or, in device memory only, `bf16`).
///
/// Cloning is cheap (the storage is shared); views (`reshape` of a contiguous tensor, `permute`,
/// `narrow`) share storage too. Writing through [`Tensor::host_data_mut`] copies the storage first
/// when another tensor still shares it, so a view never sees a write made through another handle.
///
/// A `bf16` tensor is what a GPU backend's mixed-precision ops pass between themselves (NHWC
/// activations; see [`Tensor::from_device_bf16_channels_last`]). Reading it on the host
/// (`to_vec`, `item`, `contiguous`, ...) widens it to `f32`; its raw address is only given out by
/// [`Tensor::channels_last_ptr`], so code written for `f32` never reads it by mistake.
#[derive(Debug, Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
    dtype: DType,
}

impl Tensor {
    /// A contiguous host tensor over `data`, which must hold exactly `numel(shape)` values.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let expected = numel(shape);
        if data.len() != expected {
            return Err(TensorError::DataLength {
                shape: shape.to_vec(),
                expected,
                actual: data.len(),
            });
        }
        Ok(Self::from_storage_contiguous(Storage::Host(data), shape))
    }

    /// A contiguous tensor over existing storage of exactly `numel(shape)` elements.
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Result<Self> {
        let expected = numel(shape);
        if storage.len() != expected {
            return Err(TensorError::DataLength {
                shape: shape.to_vec(),
                expected,
                actual: storage.len(),
            });
        }
        Ok(Self::from_storage_contiguous(storage, shape))
    }

    fn from_storage_contiguous(storage: Storage, shape: &[usize]) -> Self {
        Self {
            storage: Arc::new(storage),
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
            dtype: DType::F32,
        }
    }

    /// A `bf16` tensor of logical shape `[n, c, h, w]` over device `storage` that holds its
    /// elements in NHWC order, two per 32-bit word (what a GPU backend's bf16 ops write).
    #[cfg(feature = "device-seam")]
    pub fn from_device_bf16_channels_last(storage: Storage, shape: [usize; 4]) -> Result<Self> {
        Self::from_device_channels_last(storage, shape, DType::BF16)
    }

    /// A tensor of logical shape `[n, c, h, w]` over device `storage` that holds its elements in
    /// NHWC order: `bf16` two per 32-bit word, or `f32` (then an ordinary channels-last tensor).
    /// These are the activations a GPU backend's NHWC paths pass between themselves.
    #[cfg(feature = "device-seam")]
    pub fn from_device_channels_last(
        storage: Storage,
        shape: [usize; 4],
        dtype: DType,
    ) -> Result<Self> {
        let numel = numel(&shape);
        let expected = match dtype {
            DType::F32 => numel,
            DType::BF16 => numel.div_ceil(2),
            DType::F16 => {
                return Err(TensorError::ShapeMismatch {
                    op: "from_device_channels_last (f16 storage is not supported)",
                    lhs: shape.to_vec(),
                    rhs: vec![],
                });
            }
        };
        if !matches!(storage, Storage::Device(_)) || storage.len() != expected {
            return Err(TensorError::DataLength {
                shape: shape.to_vec(),
                expected,
                actual: storage.len(),
            });
        }
        Ok(Self {
            storage: Arc::new(storage),
            shape: shape.to_vec(),
            strides: channels_last_strides(&shape),
            offset: 0,
            dtype,
        })
    }

    /// The device address of a whole NHWC device tensor (`bf16` or `f32`, as made by
    /// [`Tensor::from_device_channels_last`]); the caller reads [`Tensor::dtype`] for the
    /// element type. The only way to a `bf16` tensor's address.
    #[cfg(feature = "device-seam")]
    pub fn channels_last_ptr(&self) -> Result<u64> {
        let nhwc_dense = match *self.shape.as_slice() {
            [n, c, h, w] => self.is_contiguous_as(&channels_last_strides(&[n, c, h, w])),
            _ => false,
        } && self.offset == 0;
        let whole = match self.dtype {
            DType::BF16 => self.storage.len() == self.numel().div_ceil(2),
            DType::F32 => self.storage.len() == self.numel(),
            DType::F16 => false,
        };
        match self.storage.as_ref() {
            Storage::Device(buf) if nhwc_dense && whole => Ok(buf.device_ptr()),
            _ => Err(TensorError::ShapeMismatch {
                op: "channels_last_ptr (not a whole NHWC device tensor)",
                lhs: self.shape.clone(),
                rhs: self.strides.clone(),
            }),
        }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        Self::from_storage_contiguous(Storage::Host(vec![value; numel(shape)]), shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, 1.0)
    }

    /// A rank-0 tensor holding `value`.
    pub fn scalar(value: f32) -> Self {
        Self::full(&[], value)
    }

    /// A zero tensor with the shape of `self`.
    pub fn zeros_like(&self) -> Self {
        Self::zeros(&self.shape)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn memory_kind(&self) -> MemoryKind {
        self.storage.kind()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// How many tensors (this one, its clones and views) share this tensor's storage; the
    /// memory is freed when the last of them is dropped.
    pub fn storage_handles(&self) -> usize {
        Arc::strong_count(&self.storage)
    }

    /// Size of dimension `dim`.
    pub fn dim(&self, dim: usize) -> Result<usize> {
        self.shape
            .get(dim)
            .copied()
            .ok_or_else(|| TensorError::DimOutOfRange {
                op: "dim",
                dim,
                shape: self.shape.clone(),
            })
    }

    /// The four sizes of a rank-4 tensor, `(n, c, h, w)`.
    pub fn dims4(&self, op: &'static str) -> Result<(usize, usize, usize, usize)> {
        match *self.shape.as_slice() {
            [n, c, h, w] => Ok((n, c, h, w)),
            _ => Err(TensorError::Rank {
                op,
                expected: 4,
                shape: self.shape.clone(),
            }),
        }
    }

    /// The four sizes of a rank-4 tensor as an array, `[n, c, h, w]`.
    pub fn shape4(&self, op: &'static str) -> Result<[usize; 4]> {
        let (n, c, h, w) = self.dims4(op)?;
        Ok([n, c, h, w])
    }

    /// The two sizes of a rank-2 tensor, `(rows, cols)`.
    pub fn dims2(&self, op: &'static str) -> Result<(usize, usize)> {
        match *self.shape.as_slice() {
            [r, c] => Ok((r, c)),
            _ => Err(TensorError::Rank {
                op,
                expected: 2,
                shape: self.shape.clone(),
            }),
        }
    }

    /// Whether the elements are dense and row-major over the logical shape.
    pub fn is_contiguous(&self) -> bool {
        self.is_contiguous_as(&contiguous_strides(&self.shape))
    }

    fn is_contiguous_as(&self, strides: &[usize]) -> bool {
        self.shape
            .iter()
            .zip(self.strides.iter().zip(strides))
            .all(|(&d, (&s, &e))| d <= 1 || s == e)
    }

    /// The memory format of a dense rank-4 tensor, if it has one.
    pub fn memory_format(&self) -> Option<MemoryFormat> {
        if self.is_contiguous() {
            return Some(MemoryFormat::Contiguous);
        }
        if let [n, c, h, w] = *self.shape.as_slice()
            && self.is_contiguous_as(&channels_last_strides(&[n, c, h, w]))
        {
            return Some(MemoryFormat::ChannelsLast);
        }
        None
    }

    /// The elements of a contiguous host tensor, in logical order.
    ///
    /// Errors when the tensor is not contiguous (call [`Tensor::contiguous`] first) or not readable
    /// from the host.
    pub fn host_data(&self) -> Result<&[f32]> {
        let data = self.storage.host("host_data")?;
        if !self.is_contiguous() {
            return Err(TensorError::ShapeMismatch {
                op: "host_data (tensor is a strided view; call contiguous())",
                lhs: self.shape.clone(),
                rhs: self.strides.clone(),
            });
        }
        Ok(&data[self.offset..self.offset + self.numel()])
    }

    /// Writable elements of a host tensor, made contiguous and unshared first if needed.
    pub fn host_data_mut(&mut self) -> Result<&mut [f32]> {
        if !self.is_contiguous() || self.offset != 0 || self.storage.len() != self.numel() {
            *self = self.contiguous_copy()?;
        }
        if Arc::get_mut(&mut self.storage).is_none() {
            self.storage = Arc::new(self.storage.try_clone()?);
        }
        let storage = Arc::get_mut(&mut self.storage).ok_or(TensorError::Device(
            "storage still shared after copy".to_string(),
        ))?;
        storage.host_mut("host_data_mut")
    }

    /// The elements in logical (row-major) order, copied out.
    /// Device tensors are copied to the host (after all queued work on their device).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let data = self.storage_values("to_vec")?;
        let data = &data[..];
        if self.is_contiguous() {
            return Ok(data[self.offset..self.offset + self.numel()].to_vec());
        }
        let mut out = Vec::with_capacity(self.numel());
        gather_strided(data, self.offset, &self.shape, &self.strides, &mut |v| {
            out.push(v)
        });
        Ok(out)
    }

    /// Consumes the tensor and returns its elements in logical order, without copying when the
    /// tensor is contiguous, unshared and spans its whole storage.
    pub fn into_vec(self) -> Result<Vec<f32>> {
        let whole = self.is_contiguous()
            && self.offset == 0
            && self.storage.len() == self.numel()
            && self.dtype == DType::F32;
        if whole {
            match Arc::try_unwrap(self.storage) {
                Ok(mut storage) => {
                    return match storage.take_host() {
                        Some(v) => Ok(v),
                        None => Tensor::from_storage_contiguous(storage, &self.shape).to_vec(),
                    };
                }
                Err(shared) => {
                    let t = Tensor {
                        storage: shared,
                        shape: self.shape,
                        strides: self.strides,
                        offset: self.offset,
                        dtype: self.dtype,
                    };
                    return t.to_vec();
                }
            }
        }
        self.to_vec()
    }

    /// A host tensor with the same values: a cheap clone when the tensor is already in host
    /// memory, a download (after all queued device work) otherwise.
    pub fn to_host(&self) -> Result<Tensor> {
        match self.storage.as_ref() {
            Storage::Host(_) => Ok(self.clone()),
            #[cfg(feature = "device-seam")]
            _ => Tensor::from_vec(self.to_vec()?, &self.shape),
        }
    }

    /// Every element of the storage, readable on the host: borrowed for host memory, downloaded
    /// for device memory, the host copy of managed memory when it is current.
    fn storage_values(&self, op: &'static str) -> Result<std::borrow::Cow<'_, [f32]>> {
        match self.storage.as_ref() {
            #[cfg(feature = "device-seam")]
            Storage::Device(buf) => {
                let mut out = vec![0.0; buf.len()];
                buf.copy_to_host(&mut out)?;
                if self.dtype == DType::BF16 {
                    // Two bf16 per word, the first element in the low half (little endian); a
                    // bf16 is the top half of the f32 with the same value.
                    out = out
                        .iter()
                        .flat_map(|w| {
                            let bits = w.to_bits();
                            [
                                f32::from_bits(bits << 16),
                                f32::from_bits(bits & 0xffff_0000),
                            ]
                        })
                        .collect();
                }
                Ok(std::borrow::Cow::Owned(out))
            }
            other => Ok(std::borrow::Cow::Borrowed(other.host(op)?)),
        }
    }

    /// The device address of the first element of a contiguous device tensor.
    #[cfg(feature = "device-seam")]
    pub fn device_ptr(&self) -> Result<u64> {
        if self.dtype != DType::F32 {
            return Err(TensorError::ShapeMismatch {
                op: "device_ptr (a bf16 tensor: widen it to f32 first)",
                lhs: self.shape.clone(),
                rhs: self.strides.clone(),
            });
        }
        match self.storage.as_ref() {
            Storage::Device(buf) if self.is_contiguous() => {
                Ok(buf.device_ptr() + 4 * self.offset as u64)
            }
            Storage::Device(_) => Err(TensorError::ShapeMismatch {
                op: "device_ptr (tensor is a strided view; make it contiguous first)",
                lhs: self.shape.clone(),
                rhs: self.strides.clone(),
            }),
            other => Err(TensorError::NotOnHost {
                op: "device_ptr (tensor is not in device memory)",
                kind: other.kind(),
            }),
        }
    }

    /// The device address of a contiguous device tensor that this tensor owns alone, for writing
    /// in place: shared storage is copied first (copy-on-write), as is a view of part of it.
    #[cfg(feature = "device-seam")]
    pub fn device_ptr_mut(&mut self) -> Result<u64> {
        let whole = self.is_contiguous()
            && self.offset == 0
            && self.storage.len() == self.numel()
            && self.dtype == DType::F32;
        if !whole || Arc::get_mut(&mut self.storage).is_none() {
            let storage = match self.storage.as_ref() {
                Storage::Device(buf) if whole => Storage::Device(buf.try_clone()?),
                _ => {
                    return Err(TensorError::NotOnHost {
                        op: "device_ptr_mut (needs a whole contiguous device tensor)",
                        kind: self.storage.kind(),
                    });
                }
            };
            self.storage = Arc::new(storage);
        }
        self.device_ptr()
    }

    /// The only element of a tensor with one element.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(TensorError::ShapeMismatch {
                op: "item",
                lhs: self.shape.clone(),
                rhs: vec![],
            });
        }
        Ok(self.storage_values("item")?[self.offset])
    }

    /// The element at a multi-index.
    pub fn get(&self, index: &[usize]) -> Result<f32> {
        if index.len() != self.rank() || index.iter().zip(&self.shape).any(|(&i, &d)| i >= d) {
            return Err(TensorError::IndexOutOfBounds {
                index: index.to_vec(),
                shape: self.shape.clone(),
            });
        }
        let pos = self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        Ok(self.storage_values("get")?[pos])
    }

    /// A contiguous tensor with the same values (shares storage when already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            Ok(self.clone())
        } else {
            self.contiguous_copy()
        }
    }

    fn contiguous_copy(&self) -> Result<Tensor> {
        Tensor::from_vec(self.to_vec()?, &self.shape)
    }

    /// The same values laid out in `format` (rank-4 only for `ChannelsLast`).
    pub fn to_memory_format(&self, format: MemoryFormat) -> Result<Tensor> {
        match format {
            MemoryFormat::Contiguous => self.contiguous(),
            MemoryFormat::ChannelsLast => {
                if self.memory_format() == Some(MemoryFormat::ChannelsLast) {
                    return Ok(self.clone());
                }
                let (n, c, h, w) =
                    self.dims4("to_memory_format")
                        .map_err(|_| TensorError::FormatNeedsRank4 {
                            op: "to_memory_format",
                            format,
                            shape: self.shape.clone(),
                        })?;
                // NHWC data = permute(0, 2, 3, 1) made contiguous; then view it as NCHW.
                let nhwc = self.permute(&[0, 2, 3, 1])?.to_vec()?;
                Ok(Tensor {
                    storage: Arc::new(Storage::Host(nhwc)),
                    shape: vec![n, c, h, w],
                    strides: channels_last_strides(&[n, c, h, w]),
                    offset: 0,
                    dtype: DType::F32,
                })
            }
        }
    }

    /// The same elements under another shape of equal size (a view when contiguous).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(TensorError::Reshape {
                from: self.shape.clone(),
                from_len: self.numel(),
                to: shape.to_vec(),
                to_len: numel(shape),
            });
        }
        let base = self.contiguous()?;
        Ok(Tensor {
            storage: base.storage,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: base.offset,
            dtype: base.dtype,
        })
    }

    /// A view with dimensions reordered: output dimension `i` is input dimension `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(TensorError::BadPermutation {
                perm: perm.to_vec(),
                rank,
            });
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
            dtype: self.dtype,
        })
    }

    /// A view of `len` entries of dimension `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let size = self.dim(dim).map_err(|_| TensorError::DimOutOfRange {
            op: "narrow",
            dim,
            shape: self.shape.clone(),
        })?;
        if start + len > size {
            return Err(TensorError::RangeOutOfBounds {
                op: "narrow",
                dim,
                start,
                end: start + len,
                size,
            });
        }
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Ok(Tensor {
            storage: self.storage.clone(),
            shape,
            strides: self.strides.clone(),
            offset: self.offset + start * self.strides[dim],
            dtype: self.dtype,
        })
    }

    /// A new contiguous tensor with `f` applied to every element.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Result<Tensor> {
        let mut v = self.to_vec()?;
        v.iter_mut().for_each(|x| *x = f(*x));
        Tensor::from_vec(v, &self.shape)
    }

    /// Whether any element is NaN or infinite.
    pub fn has_non_finite(&self) -> Result<bool> {
        Ok(self.to_vec()?.iter().any(|v| !v.is_finite()))
    }

    /// Largest absolute elementwise difference to `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f32> {
        if self.shape != other.shape {
            return Err(TensorError::ShapeMismatch {
                op: "max_abs_diff",
                lhs: self.shape.clone(),
                rhs: other.shape.clone(),
            });
        }
        let a = self.to_vec()?;
        let b = other.to_vec()?;
        Ok(a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max))
    }
}

/// Visits the elements of a strided view in logical order.
fn gather_strided(
    data: &[f32],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
    out: &mut impl FnMut(f32),
) {
    match shape.len() {
        0 => out(data[offset]),
        1 => {
            for i in 0..shape[0] {
                out(data[offset + i * strides[0]]);
            }
        }
        _ => {
            for i in 0..shape[0] {
                gather_strided(
                    data,
                    offset + i * strides[0],
                    &shape[1..],
                    &strides[1..],
                    out,
                );
            }
        }
    }
}
