//! Conversions between our NCHW fp32 tensors and the NHWC operands of cuDNN's tensor-core paths
//! (kernels in `cuda/layout.cu`), and the NHWC activations of the bf16 and NHWC fp32 modes.
//!
//! When the convolutions run in NHWC (bf16 mixed precision; TF32 by default), a convolution
//! writes its result as an NHWC activation of the mode's element type (bf16: a
//! [`magma_tensor::DType::BF16`] tensor; fp32: a channels-last fp32 tensor); batch norm, ReLU,
//! max pooling, channel concat / split, sums and channel biases keep it so, and the next
//! convolution reads it as it is — no layout conversion between the layers, as PyTorch's
//! channels-last. Every other op gets its operands through [`CudaBackend::input`], which turns
//! an NHWC activation into NCHW fp32 first, so an op without an NHWC path still computes the
//! right values (in fp32, like PyTorch's autocast runs such ops).

use magma_tensor::cuda::CudaBuffer;
use magma_tensor::{DType, Storage, Tensor};

use super::CudaBackend;
use super::cudnn::DataLayout;
use super::kernels::{self, Stream};
use crate::error::Result;

unsafe extern "C" {
    // `cp`: channels per NHWC pixel (≥ c; the extra ones zero padding).
    fn mg_nchw_to_nhwc_bf16(
        x: *const f32,
        y: *mut u16,
        n: i64,
        c: i64,
        cp: i64,
        hw: i64,
        s: Stream,
    ) -> i32;
    fn mg_nchw_to_nhwc_f32(
        x: *const f32,
        y: *mut f32,
        n: i64,
        c: i64,
        cp: i64,
        hw: i64,
        s: Stream,
    ) -> i32;
    fn mg_nhwc_bf16_to_nchw(
        y: *const u16,
        x: *mut f32,
        bias: *const f32,
        n: i64,
        c: i64,
        cp: i64,
        hw: i64,
        s: Stream,
    ) -> i32;
    fn mg_nhwc_f32_to_nchw(
        y: *const f32,
        x: *mut f32,
        bias: *const f32,
        n: i64,
        c: i64,
        cp: i64,
        hw: i64,
        s: Stream,
    ) -> i32;
}

/// `[n, c, h·w]` of a 4-D shape, as the layout kernels take them.
fn nc_hw(shape: &[usize]) -> [i64; 3] {
    [
        shape[0] as i64,
        shape[1] as i64,
        (shape[2] * shape[3]) as i64,
    ]
}

impl CudaBackend {
    /// The element type of `t` when it is an NHWC activation on this device: a whole bf16 NHWC
    /// tensor (bf16 mode), or a whole fp32 channels-last tensor that is not also NCHW-contiguous
    /// (the NHWC fp32 mode: TF32 by default). `None` for everything else.
    pub(crate) fn nhwc_dtype(&self, t: &Tensor) -> Option<DType> {
        let dtype = t.dtype();
        let activation = dtype == DType::BF16 || (dtype == DType::F32 && !t.is_contiguous());
        (activation && self.nhwc_memory(t, dtype).is_some()).then_some(dtype)
    }

    /// The device address of `t` when its memory is NHWC of `dtype` on this device: an NHWC
    /// activation of that type, or an fp32 tensor whose NCHW and NHWC orders coincide (one
    /// channel, or 1×1 images and filters).
    pub(crate) fn nhwc_memory(&self, t: &Tensor, dtype: DType) -> Option<u64> {
        let on_device =
            matches!(t.storage(), Storage::Device(b) if b.ordinal() == self.device.ordinal());
        (on_device && t.dtype() == dtype)
            .then(|| t.channels_last_ptr().ok())
            .flatten()
    }

    /// Whether `t` is an NHWC activation on this device (bf16 or fp32).
    pub(crate) fn is_nhwc(&self, t: &Tensor) -> bool {
        self.nhwc_dtype(t).is_some()
    }

    /// A new NHWC tensor of logical shape `shape` and element type `dtype`, every element to be
    /// written by the caller.
    pub(crate) fn nhwc_output(&self, shape: [usize; 4], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let words = match dtype {
            DType::BF16 => numel.div_ceil(2),
            _ => numel,
        };
        let storage = Storage::Device(Box::new(self.device.alloc(words)?));
        Ok(Tensor::from_device_channels_last(storage, shape, dtype)?)
    }

    /// `t` as an NHWC activation of `dtype`: itself when it is one, converted otherwise.
    pub(crate) fn to_nhwc(&self, op: &'static str, t: &Tensor, dtype: DType) -> Result<Tensor> {
        if self.nhwc_dtype(t) == Some(dtype) {
            return Ok(t.clone());
        }
        let f = self.input(t)?;
        let shape = f.shape4(op)?;
        let out = self.nhwc_output(shape, dtype)?;
        let layout = DataLayout::nhwc_of(dtype);
        self.convert_to_nhwc(op, &f, out.channels_last_ptr()?, layout, shape[1])?;
        Ok(out)
    }

    /// The NCHW fp32 values of an NHWC activation of element type `dtype` (what
    /// [`CudaBackend::input`] hands to ops without an NHWC path).
    pub(crate) fn to_nchw(&self, op: &'static str, t: &Tensor, dtype: DType) -> Result<Tensor> {
        let mut out = self.output(t.shape())?;
        let layout = DataLayout::nhwc_of(dtype);
        self.write_nchw(op, t.channels_last_ptr()?, &mut out, layout, None)?;
        Ok(out)
    }

    /// Device memory for `numel` elements of `layout`'s type.
    pub(crate) fn scratch(&self, numel: usize, layout: DataLayout) -> Result<CudaBuffer> {
        Ok(self
            .device
            .alloc((numel * layout.element_bytes()).div_ceil(4).max(1))?)
    }

    /// A copy of the contiguous NCHW fp32 device tensor `x` (4-D) in NHWC of `layout`'s type.
    pub(crate) fn nhwc_copy(
        &self,
        op: &'static str,
        x: &Tensor,
        layout: DataLayout,
    ) -> Result<CudaBuffer> {
        self.nhwc_copy_padded(op, x, layout, x.shape()[1])
    }

    /// [`CudaBackend::nhwc_copy`] with `cp` ≥ C channels per pixel, channels C..cp zero.
    pub(crate) fn nhwc_copy_padded(
        &self,
        op: &'static str,
        x: &Tensor,
        layout: DataLayout,
        cp: usize,
    ) -> Result<CudaBuffer> {
        let [n, _, h, w] = x.shape4(op)?;
        let out = self.scratch(n * cp * h * w, layout)?;
        self.convert_to_nhwc(op, x, out.device_ptr(), layout, cp)?;
        Ok(out)
    }

    /// Writes the contiguous NCHW fp32 device tensor `x` (4-D, C channels) to `dst` in NHWC of
    /// `layout`'s type with `cp` ≥ C channels per pixel (`dst` must hold n·cp·h·w elements;
    /// channels C..cp are written as zeros).
    fn convert_to_nhwc(
        &self,
        op: &'static str,
        x: &Tensor,
        dst: u64,
        layout: DataLayout,
        cp: usize,
    ) -> Result<()> {
        let [n, c, hw] = nc_hw(x.shape());
        debug_assert!(cp as i64 >= c, "padding never drops channels");
        let (src, s, cp) = (x.device_ptr()?, self.stream(), cp as i64);
        let status = match layout {
            // SAFETY: `src` holds n·c·hw fp32 values and `dst` room for n·cp·hw bf16 values, both
            // on this device; the kernel is queued on the backend's stream.
            DataLayout::NhwcBf16 => unsafe {
                mg_nchw_to_nhwc_bf16(src as _, dst as _, n, c, cp, hw, s)
            },
            // SAFETY: as above, with fp32 on both sides.
            DataLayout::NhwcF32 => unsafe {
                mg_nchw_to_nhwc_f32(src as _, dst as _, n, c, cp, hw, s)
            },
            DataLayout::NchwF32 => unreachable!("NCHW operands are used as they are"),
        };
        kernels::check(op, status)
    }

    /// Writes the NHWC values at `src` (of `layout`'s type) into the NCHW fp32 `out`, adding
    /// `bias[c]` when given.
    pub(crate) fn write_nchw(
        &self,
        op: &'static str,
        src: u64,
        out: &mut Tensor,
        layout: DataLayout,
        bias: Option<&Tensor>,
    ) -> Result<()> {
        let c = out.shape().get(1).copied().unwrap_or(0);
        self.nhwc_to_nchw(op, src, out, layout, bias, c)
    }

    /// Writes the NHWC values at `src` (of `layout`'s type, `cp` channels per pixel) into the
    /// NCHW fp32 `out` of C ≤ cp channels: the padding channels C..cp are left out.
    pub(crate) fn write_nchw_padded(
        &self,
        op: &'static str,
        src: u64,
        out: &mut Tensor,
        layout: DataLayout,
        cp: usize,
    ) -> Result<()> {
        self.nhwc_to_nchw(op, src, out, layout, None, cp)
    }

    /// The body of [`CudaBackend::write_nchw`] and [`CudaBackend::write_nchw_padded`].
    fn nhwc_to_nchw(
        &self,
        op: &'static str,
        src: u64,
        out: &mut Tensor,
        layout: DataLayout,
        bias: Option<&Tensor>,
        cp: usize,
    ) -> Result<()> {
        if out.numel() == 0 {
            return Ok(());
        }
        let [n, c, hw] = nc_hw(out.shape());
        let bias = bias.map(|b| b.device_ptr()).transpose()?.unwrap_or(0);
        let (dst, s, cp) = (out.device_ptr_mut()?, self.stream(), cp as i64);
        let status = match layout {
            // SAFETY: `src` holds n·cp·hw bf16 values, `dst` room for n·c·hw fp32 values and
            // `bias` (when not null) `c` values, all on this device.
            DataLayout::NhwcBf16 => unsafe {
                mg_nhwc_bf16_to_nchw(src as _, dst as _, bias as _, n, c, cp, hw, s)
            },
            // SAFETY: as above, with fp32 on both sides.
            DataLayout::NhwcF32 => unsafe {
                mg_nhwc_f32_to_nchw(src as _, dst as _, bias as _, n, c, cp, hw, s)
            },
            DataLayout::NchwF32 => unreachable!("NCHW results are used as they are"),
        };
        kernels::check(op, status)
    }
}
