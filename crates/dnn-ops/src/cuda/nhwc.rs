//! The elementwise and per-channel kernels on NHWC activations (`cuda/nhwc.cu`), for both
//! element types of the NHWC modes: bf16 (mixed precision) and fp32 (TF32 by default). ReLU and
//! its backward, the sum of two activations, a channel bias and the per-channel sum (the bias
//! gradient) read the activations as they are; the first three write an NHWC activation of the
//! same type, the sum an fp32 vector.
//!
//! Each kernel has a `_bf16` and an `_f32` launcher with the same parameters
//! ([`super::kernels::nhwc_launchers`]); `*_kernel(dtype)` picks the one of a tensor's element
//! type.

use magma_tensor::{DType, Tensor};

use super::CudaBackend;
use super::elementwise::{dst, ll, scratch_words, src};
use super::kernels::{ActDst, ActSrc, Stream, check, nhwc_launchers};
use crate::error::Result;

nhwc_launchers!(relu_kernel = mg_relu_bf16 | mg_relu_f32(
    x: ActSrc, y: ActDst, n: i64, s: Stream,
));
nhwc_launchers!(relu_backward_kernel = mg_relu_backward_bf16 | mg_relu_backward_f32(
    y: ActSrc, dy: ActSrc, dx: ActDst, n: i64, s: Stream,
));
nhwc_launchers!(add_kernel = mg_add_bf16 | mg_add_f32(
    a: ActSrc, b: ActSrc, y: ActDst, n: i64, s: Stream,
));
nhwc_launchers!(channel_bias_kernel =
    mg_add_channel_bias_nhwc_bf16 | mg_add_channel_bias_nhwc_f32(
    x: ActSrc, bias: *const f32, y: ActDst, m: i64, c: i64, s: Stream,
));
nhwc_launchers!(channel_sum_kernel = mg_sum_per_channel_nhwc_bf16 | mg_sum_per_channel_nhwc_f32(
    x: ActSrc, out: *mut f32, partials: *mut f64, m: i64, c: i64, s: Stream,
));

unsafe extern "C" {
    fn mg_sum_per_channel_nhwc_partials(m: i64, c: i64) -> i64;
}

/// The read-only address of an NHWC activation.
fn act(t: &Tensor) -> Result<ActSrc> {
    Ok(t.channels_last_ptr()? as usize as ActSrc)
}

/// The address of an NHWC activation the caller's kernel writes.
fn act_mut(t: &Tensor) -> Result<ActDst> {
    Ok(t.channels_last_ptr()? as usize as ActDst)
}

impl CudaBackend {
    /// `max(0, x)` of an NHWC activation of `dtype`, into a new one (NaN passes).
    pub(crate) fn nhwc_relu(&self, op: &'static str, x: &Tensor, dtype: DType) -> Result<Tensor> {
        let y = self.nhwc_output(x.shape4(op)?, dtype)?;
        // SAFETY: `x` and `y` hold `numel` values of `dtype` in the same NHWC order on this
        // device.
        check(op, unsafe {
            relu_kernel(dtype)(act(x)?, act_mut(&y)?, ll(x.numel()), self.stream())
        })?;
        Ok(y)
    }

    /// `dy` where the ReLU output `y` (an NHWC activation of `dtype`) is positive, zero
    /// elsewhere; `dy` is converted to `y`'s layout and type when it is not in them.
    pub(crate) fn nhwc_relu_backward(
        &self,
        op: &'static str,
        y: &Tensor,
        dy: &Tensor,
        dtype: DType,
    ) -> Result<Tensor> {
        let dy = self.to_nhwc(op, dy, dtype)?;
        let dx = self.nhwc_output(y.shape4(op)?, dtype)?;
        // SAFETY: `y`, `dy` and `dx` hold `numel` values of `dtype` in the same NHWC order on
        // this device.
        check(op, unsafe {
            relu_backward_kernel(dtype)(
                act(y)?,
                act(&dy)?,
                act_mut(&dx)?,
                ll(y.numel()),
                self.stream(),
            )
        })?;
        Ok(dx)
    }

    /// `a + b` of two NHWC activations of `dtype` and the same shape, into a new one.
    pub(crate) fn nhwc_add(
        &self,
        op: &'static str,
        a: &Tensor,
        b: &Tensor,
        dtype: DType,
    ) -> Result<Tensor> {
        let y = self.nhwc_output(a.shape4(op)?, dtype)?;
        // SAFETY: `a`, `b` and `y` hold `numel` values of `dtype` each, in the same NHWC order.
        check(op, unsafe {
            add_kernel(dtype)(act(a)?, act(b)?, act_mut(&y)?, ll(a.numel()), self.stream())
        })?;
        Ok(y)
    }

    /// `x + bias[c]` of an NHWC activation `x` written into the NHWC activation `y` of the same
    /// shape and type, which may be `x` itself (the kernel reads each element before writing it).
    pub(crate) fn add_channel_bias_nhwc(
        &self,
        op: &'static str,
        x: &Tensor,
        bias: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        let [n, c, h, w] = x.shape4(op)?;
        let bias = self.input(bias)?;
        // SAFETY: `x` and `y` hold n·h·w rows of c values of `x`'s type on this device, `bias`
        // c fp32.
        check(op, unsafe {
            channel_bias_kernel(x.dtype())(
                act(x)?,
                src(&bias)?,
                act_mut(y)?,
                ll(n * h * w),
                ll(c),
                self.stream(),
            )
        })
    }

    /// The per-channel sum (fp32, fp64 partial sums in a fixed order) of an NHWC activation.
    pub(crate) fn nhwc_sum_per_channel(&self, op: &'static str, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = x.shape4(op)?;
        let m = n * h * w;
        let mut out = self.output(&[c])?;
        // SAFETY: a pure host function of its arguments.
        let words = unsafe { mg_sum_per_channel_nhwc_partials(ll(m), ll(c)) };
        let mut partials = scratch_words(self, usize::try_from(words).expect("positive"))?;
        // SAFETY: `x` holds m rows of c values of its type, `out` c fp32, `partials` the
        // launcher's count of doubles.
        check(op, unsafe {
            channel_sum_kernel(x.dtype())(
                act(x)?,
                dst(&mut out)?,
                dst(&mut partials)? as *mut f64,
                ll(m),
                ll(c),
                self.stream(),
            )
        })?;
        Ok(out)
    }
}
