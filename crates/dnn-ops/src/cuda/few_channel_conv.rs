//! 3×3 convolutions of few-channel NCHW images (`cuda/few_channel_conv.cu`): C ≤ 4 input
//! channels — the network's first layer on RGB — stride 1, dilation 1, padding ≤ 2, K ∈ {4, 8,
//! 12, 16, 32, 64, 128} output channels, in the NHWC modes (bf16 and NHWC fp32 / TF32). cuDNN
//! runs these on FMA kernels and needs the image converted to NHWC first; these kernels read the
//! loader's NCHW fp32 image as it is and write the NHWC activation of the layout's type (forward
//! pass), or the fp32 filter gradient from that activation's gradient (fp32 activations only:
//! in bf16 cuDNN's tensor-core kernels on the input padded to 8 channels were faster).

use magma_tensor::{DType, Tensor};

use super::CudaBackend;
use super::elementwise::{ll, src};
use super::kernels::{ActDst, Stream, check, nhwc_launchers};
use crate::attrs::Conv2dAttrs;
use crate::error::Result;

nhwc_launchers!(forward_kernel = mg_few_channel_conv_forward_bf16 | mg_few_channel_conv_forward_f32(
    x: *const f32, w: *const f32, bias: *const f32, y: ActDst, n: i64, c: i64, h: i64, wd: i64,
    k: i64, ph: i64, pw: i64, s: Stream,
));
unsafe extern "C" {
    fn mg_few_channel_conv_backward_filter_f32(
        x: *const f32,
        dy: *const f32,
        dw: *mut f32,
        partial: *mut f32,
        n: i64,
        c: i64,
        h: i64,
        wd: i64,
        k: i64,
        ph: i64,
        pw: i64,
        s: Stream,
    ) -> i32;
    fn mg_few_channel_conv_supported(
        n: i64,
        c: i64,
        h: i64,
        w: i64,
        k: i64,
        ph: i64,
        pw: i64,
    ) -> i32;
    fn mg_few_channel_filter_partials(
        n: i64,
        c: i64,
        h: i64,
        w: i64,
        k: i64,
        ph: i64,
        pw: i64,
    ) -> i64;
}

impl CudaBackend {
    /// The NHWC element type of the few-channel kernels for a convolution of the image `x`
    /// (`[N, C, H, W]`) by a filter of shape `w` with `attrs`: `Some` when the convolutions run
    /// in an NHWC layout, `x` is not an NHWC activation (an image as loaded) and the problem is
    /// one the kernels take.
    pub(crate) fn few_channel_dtype(
        &self,
        x: &Tensor,
        w: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Option<DType> {
        let dtype = self.conv_layout().nhwc_dtype()?;
        let [k, c, r, s] = w;
        let [n, _, h, wd] = <[usize; 4]>::try_from(x.shape()).ok()?;
        let [ph, pw] = attrs.padding;
        // SAFETY: a pure function of its integers (the geometry's limits included: anything
        // else stays on cuDNN).
        let supported = unsafe {
            mg_few_channel_conv_supported(ll(n), ll(c), ll(h), ll(wd), ll(k), ll(ph), ll(pw))
        };
        (supported != 0
            && [r, s] == [3, 3]
            && attrs.stride == [1, 1]
            && attrs.dilation == [1, 1]
            && self.nhwc_dtype(x).is_none())
        .then_some(dtype)
    }

    /// The convolution of the image `x` by `w` (+ `bias`) as a new NHWC activation of `dtype`.
    pub(crate) fn few_channel_forward(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &Conv2dAttrs,
        dtype: DType,
    ) -> Result<Tensor> {
        let [n, c, h, wd] = x.shape4(op)?;
        let k = w.shape()[0];
        let [ph, pw] = attrs.padding;
        let (x, w) = (self.input(x)?, self.input(w)?);
        let bias = bias.map(|b| self.input(b)).transpose()?;
        let y = self.nhwc_output([n, k, h + 2 * ph - 2, wd + 2 * pw - 2], dtype)?;
        let bias_ptr = match &bias {
            Some(b) => src(b)?,
            None => std::ptr::null(),
        };
        // SAFETY: `x` holds n·c·h·w fp32 values (NCHW), `w` k·c·9 fp32 values, `bias` (when not
        // null) k values and `y` room for the NHWC output of `dtype`, all on this device; the
        // launcher checks the geometry.
        check(op, unsafe {
            forward_kernel(dtype)(
                src(&x)?,
                src(&w)?,
                bias_ptr,
                y.channels_last_ptr()? as usize as ActDst,
                ll(n),
                ll(c),
                ll(h),
                ll(wd),
                ll(k),
                ll(ph),
                ll(pw),
                self.stream(),
            )
        })?;
        Ok(y)
    }

    /// Whether the filter gradient of the convolution of the image `x` by a filter of shape `w`
    /// runs on these kernels: a problem they take ([`CudaBackend::few_channel_dtype`]) whose
    /// output gradient `dy` is an fp32 NHWC activation.
    pub(crate) fn few_channel_filter_applies(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> bool {
        self.few_channel_dtype(x, w, attrs) == Some(DType::F32)
            && self.nhwc_dtype(dy) == Some(DType::F32)
    }

    /// The filter gradient (fp32 `[K, C, 3, 3]`) of the convolution of the image `x`, from the
    /// output gradient `dy`, an fp32 NHWC activation
    /// ([`CudaBackend::few_channel_filter_applies`]).
    pub(crate) fn few_channel_backward_filter(
        &self,
        op: &'static str,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor> {
        let [n, c, h, wd] = x.shape4(op)?;
        let k = w_shape[0];
        let [ph, pw] = attrs.padding;
        let x = self.input(x)?;
        let (ln, lc, lh, lw, lk, lph, lpw) = (ll(n), ll(c), ll(h), ll(wd), ll(k), ll(ph), ll(pw));
        // SAFETY: a pure function of its integers.
        let partials = unsafe { mg_few_channel_filter_partials(ln, lc, lh, lw, lk, lph, lpw) };
        let partial = self.output(&[usize::try_from(partials).unwrap_or(0).max(1)])?;
        let mut dw = self.output(&w_shape)?;
        let dw_ptr = dw.device_ptr_mut()? as *mut f32;
        // SAFETY: `x` holds n·c·h·w fp32 values (NCHW), `dy` the fp32 NHWC output gradient,
        // `dw` room for k·c·9 fp32 values and `partial` the launcher's count, all on this
        // device; `partial` lives until the kernels are queued.
        check(op, unsafe {
            mg_few_channel_conv_backward_filter_f32(
                src(&x)?,
                dy.channels_last_ptr()? as usize as *const f32,
                dw_ptr,
                partial.device_ptr()? as *mut f32,
                ln,
                lc,
                lh,
                lw,
                lk,
                lph,
                lpw,
                self.stream(),
            )
        })?;
        Ok(dw)
    }
}
