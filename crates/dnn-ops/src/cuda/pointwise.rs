//! Pointwise convolutions with few output channels (`cuda/pointwise.cu`): a 1×1 filter, stride
//! 1, no padding, K ≤ 8 output channels — the segmentation head, whose K is the class count —
//! in the NHWC modes (bf16 and NHWC fp32 / TF32), where cuDNN ran them on FMA kernels several
//! times slower than memory speed. The forward pass reads the NHWC activation and writes an NHWC
//! activation of the same type with the bias added (as every convolution of these modes); the
//! gradients read the output gradient as NCHW fp32 (what the loss writes; anything else is
//! converted), the data gradient writes an NHWC activation, the filter gradient fp32. The math
//! is fp32 on the filters as given (the KRSC copy of `conv_weight`, which the models pass, is
//! already rounded to bf16 in the bf16 mode).

use magma_tensor::{DType, Tensor};

use super::CudaBackend;
use super::elementwise::{ll, src};
use super::kernels::{ActDst, ActSrc, Stream, check, nhwc_launchers};
use crate::attrs::Conv2dAttrs;
use crate::error::Result;

nhwc_launchers!(forward_kernel = mg_pointwise_forward_bf16 | mg_pointwise_forward_f32(
    x: ActSrc, w: *const f32, bias: *const f32, y: ActDst, pixels: i64, c: i32, k: i32,
    s: Stream,
));
nhwc_launchers!(backward_data_kernel =
    mg_pointwise_backward_data_bf16 | mg_pointwise_backward_data_f32(
    dy: *const f32, w: *const f32, dx: ActDst, pixels: i64, hw: i64, c: i32, k: i32, s: Stream,
));
nhwc_launchers!(backward_filter_kernel =
    mg_pointwise_backward_filter_bf16 | mg_pointwise_backward_filter_f32(
    x: ActSrc, dy: *const f32, dw: *mut f32, partial: *mut f32, pixels: i64, hw: i64, c: i32,
    k: i32, s: Stream,
));

unsafe extern "C" {
    fn mg_pointwise_supported(c: i64, k: i64) -> i32;
    fn mg_pointwise_filter_partials(pixels: i64, c: i64) -> i64;
}

/// Whether a convolution of filter shape `w` (`[K, C, R, S]`) with `attrs` is a pointwise one
/// the kernels take: 1×1, stride 1, no padding, K ≤ 8, C ≤ 1024.
pub(crate) fn is_small_pointwise(w: [usize; 4], attrs: &Conv2dAttrs) -> bool {
    let [k, c, r, s] = w;
    // SAFETY: a pure function of two integers.
    let supported = unsafe { mg_pointwise_supported(ll(c), ll(k)) } != 0;
    r == 1
        && s == 1
        && attrs.stride == [1, 1]
        && attrs.padding == [0, 0]
        && attrs.dilation == [1, 1]
        && supported
}

impl CudaBackend {
    /// The NHWC element type of the pointwise kernels for an activation `x` of `[N, C, H, W]`:
    /// `Some` when the convolutions run in an NHWC layout, `x` is an NHWC activation of its
    /// type and the filter `w` is a small pointwise one.
    pub(crate) fn pointwise_dtype(
        &self,
        x: &Tensor,
        w: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Option<DType> {
        // (`nhwc_dtype` of the layout is `None` in NCHW.)
        let dtype = self.conv_layout().nhwc_dtype()?;
        (is_small_pointwise(w, attrs) && self.nhwc_dtype(x) == Some(dtype)).then_some(dtype)
    }

    /// `y = x * w + bias` for the NHWC activation `x` (`[N, C, H, W]` of `dtype`) and the 1×1
    /// filter `w` (`[K, C, 1, 1]`), as a new NHWC activation `[N, K, H, W]` of `dtype`.
    pub(crate) fn pointwise_forward(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        dtype: DType,
    ) -> Result<Tensor> {
        let [n, c, h, wd] = x.shape4(op)?;
        let k = w.shape()[0];
        let w = self.input(w)?;
        let bias = bias.map(|b| self.input(b)).transpose()?;
        let y = self.nhwc_output([n, k, h, wd], dtype)?;
        let bias_ptr = match &bias {
            Some(b) => src(b)?,
            None => std::ptr::null(),
        };
        // SAFETY: `x` holds n·h·w rows of c values of `dtype` (NHWC), `w` k·c fp32 values,
        // `bias` (when not null) k values and `y` room for n·h·w rows of k values of `dtype`,
        // all on this device; the launcher checks k ≤ 8 and c ≤ 1024.
        check(op, unsafe {
            forward_kernel(dtype)(
                x.channels_last_ptr()? as usize as ActSrc,
                src(&w)?,
                bias_ptr,
                y.channels_last_ptr()? as usize as ActDst,
                ll(n * h * wd),
                c as i32,
                k as i32,
                self.stream(),
            )
        })?;
        Ok(y)
    }

    /// The input gradient `dy * w` of a pointwise convolution as a new NHWC activation of
    /// `dtype` and shape `x_shape` (`[N, C, H, W]`); `dy` is `[N, K, H, W]`.
    pub(crate) fn pointwise_backward_data(
        &self,
        op: &'static str,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        dtype: DType,
    ) -> Result<Tensor> {
        let [n, c, h, wd] = x_shape;
        let k = w.shape()[0];
        let (dy, w) = (self.input(dy)?, self.input(w)?);
        let dx = self.nhwc_output(x_shape, dtype)?;
        // SAFETY: `dy` holds n·k·h·w fp32 values (NCHW), `w` k·c fp32 values and `dx` room for
        // n·h·w rows of c values of `dtype`, all on this device.
        check(op, unsafe {
            backward_data_kernel(dtype)(
                src(&dy)?,
                src(&w)?,
                dx.channels_last_ptr()? as usize as ActDst,
                ll(n * h * wd),
                ll(h * wd),
                c as i32,
                k as i32,
                self.stream(),
            )
        })?;
        Ok(dx)
    }

    /// The filter gradient `[K, C, 1, 1]` (fp32) of a pointwise convolution of the NHWC
    /// activation `x` (`dtype`) with output gradient `dy` (`[N, K, H, W]`).
    pub(crate) fn pointwise_backward_filter(
        &self,
        op: &'static str,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        dtype: DType,
    ) -> Result<Tensor> {
        let [n, c, h, wd] = x.shape4(op)?;
        let k = w_shape[0];
        let dy = self.input(dy)?;
        let pixels = ll(n * h * wd);
        // SAFETY: a pure function of two integers.
        let partials = unsafe { mg_pointwise_filter_partials(pixels, ll(c)) };
        let partial = self.output(&[usize::try_from(partials).unwrap_or(0).max(1)])?;
        let mut dw = self.output(&w_shape)?;
        let dw_ptr = dw.device_ptr_mut()? as *mut f32;
        // SAFETY: `x` holds n·h·w rows of c values of `dtype` (NHWC), `dy` n·k·h·w fp32 values
        // (NCHW), `dw` room for k·c fp32 values and `partial` the launcher's partial count, all
        // on this device; `partial` lives until the kernels are queued (stream order keeps any
        // later user of its memory after them).
        check(op, unsafe {
            backward_filter_kernel(dtype)(
                x.channels_last_ptr()? as usize as ActSrc,
                src(&dy)?,
                dw_ptr,
                partial.device_ptr()? as *mut f32,
                pixels,
                ll(h * wd),
                c as i32,
                k as i32,
                self.stream(),
            )
        })?;
        Ok(dw)
    }
}
