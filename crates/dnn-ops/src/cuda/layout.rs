//! Conversions between our NCHW fp32 tensors and the NHWC operands of cuDNN's tensor-core paths
//! (kernels in `cuda/layout.cu`), and the bf16 NHWC activations of the mixed-precision mode.
//!
//! In bf16 mode a convolution without bias writes its result as a bf16 NHWC tensor
//! ([`magma_tensor::DType::BF16`]); batch norm and ReLU keep it so, and the next convolution
//! reads it as it is. Every other op gets its operands through [`CudaBackend::input`], which
//! widens a bf16 tensor to NCHW fp32 first, so an op that has no bf16 path still computes the
//! right values (in fp32, like PyTorch's autocast runs such ops).

use magma_tensor::cuda::CudaBuffer;
use magma_tensor::{DType, Storage, Tensor};

use super::CudaBackend;
use super::cudnn::DataLayout;
use super::kernels::{self, Stream};
use crate::error::Result;

unsafe extern "C" {
    fn mg_nchw_to_nhwc_bf16(x: *const f32, y: *mut u16, n: i64, c: i64, hw: i64, s: Stream) -> i32;
    fn mg_nchw_to_nhwc_f32(x: *const f32, y: *mut f32, n: i64, c: i64, hw: i64, s: Stream) -> i32;
    fn mg_nhwc_bf16_to_nchw(
        y: *const u16,
        x: *mut f32,
        bias: *const f32,
        n: i64,
        c: i64,
        hw: i64,
        s: Stream,
    ) -> i32;
    fn mg_nhwc_f32_to_nchw(
        y: *const f32,
        x: *mut f32,
        bias: *const f32,
        n: i64,
        c: i64,
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
    /// Whether `t` is a whole bf16 NHWC tensor on this device (a mixed-precision activation).
    pub(crate) fn is_bf16_nhwc(&self, t: &Tensor) -> bool {
        t.dtype() == DType::BF16
            && t.bf16_channels_last_ptr().is_ok()
            && matches!(t.storage(), Storage::Device(b) if b.ordinal() == self.device.ordinal())
    }

    /// A new bf16 NHWC tensor of logical shape `shape`, every element to be written by the caller.
    pub(crate) fn bf16_nhwc_output(&self, shape: [usize; 4]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let storage = Storage::Device(Box::new(self.device.alloc(numel.div_ceil(2))?));
        Ok(Tensor::from_device_bf16_channels_last(storage, shape)?)
    }

    /// `t` as a bf16 NHWC tensor: itself when it is one, converted from NCHW fp32 otherwise.
    pub(crate) fn to_bf16_nhwc(&self, op: &'static str, t: &Tensor) -> Result<Tensor> {
        if self.is_bf16_nhwc(t) {
            return Ok(t.clone());
        }
        let f = self.input(t)?;
        let shape = f.shape4(op)?;
        let out = self.bf16_nhwc_output(shape)?;
        self.convert_to_nhwc(op, &f, out.bf16_channels_last_ptr()?, DataLayout::NhwcBf16)?;
        Ok(out)
    }

    /// The NCHW fp32 values of a bf16 NHWC tensor (what [`CudaBackend::input`] hands to ops
    /// without a bf16 path).
    pub(crate) fn widen_bf16(&self, op: &'static str, t: &Tensor) -> Result<Tensor> {
        let mut out = self.output(t.shape())?;
        self.write_nchw(
            op,
            t.bf16_channels_last_ptr()?,
            &mut out,
            DataLayout::NhwcBf16,
            None,
        )?;
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
        let out = self.scratch(x.numel(), layout)?;
        self.convert_to_nhwc(op, x, out.device_ptr(), layout)?;
        Ok(out)
    }

    /// Writes the contiguous NCHW fp32 device tensor `x` (4-D) to `dst` in NHWC of `layout`'s
    /// type (`dst` must hold `x.numel()` such elements).
    fn convert_to_nhwc(
        &self,
        op: &'static str,
        x: &Tensor,
        dst: u64,
        layout: DataLayout,
    ) -> Result<()> {
        let [n, c, hw] = nc_hw(x.shape());
        let (src, s) = (x.device_ptr()?, self.stream());
        let status = match layout {
            // SAFETY: `src` holds n·c·hw fp32 values and `dst` room for as many bf16 values, both
            // on this device; the kernel is queued on the backend's stream.
            DataLayout::NhwcBf16 => unsafe {
                mg_nchw_to_nhwc_bf16(src as _, dst as _, n, c, hw, s)
            },
            // SAFETY: as above, with fp32 on both sides.
            DataLayout::NhwcF32 => unsafe { mg_nchw_to_nhwc_f32(src as _, dst as _, n, c, hw, s) },
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
        if out.numel() == 0 {
            return Ok(());
        }
        let [n, c, hw] = nc_hw(out.shape());
        let bias = bias.map(|b| b.device_ptr()).transpose()?.unwrap_or(0);
        let (dst, s) = (out.device_ptr_mut()?, self.stream());
        let status = match layout {
            // SAFETY: `src` holds n·c·hw bf16 values, `dst` room for as many fp32 values and
            // `bias` (when not null) `c` values, all on this device.
            DataLayout::NhwcBf16 => unsafe {
                mg_nhwc_bf16_to_nchw(src as _, dst as _, bias as _, n, c, hw, s)
            },
            // SAFETY: as above, with fp32 on both sides.
            DataLayout::NhwcF32 => unsafe {
                mg_nhwc_f32_to_nchw(src as _, dst as _, bias as _, n, c, hw, s)
            },
            DataLayout::NchwF32 => unreachable!("NCHW results are used as they are"),
        };
        kernels::check(op, status)
    }
}
