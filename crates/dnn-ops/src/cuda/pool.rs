//! Max and average pooling: cuDNN for the forward passes and the average backward; our own kernel
//! (`cuda/pool.cu`) for the max backward, because the CPU routes each gradient to the *first*
//! maximum of its window (and to the first NaN), a tie rule cuDNN does not document.
//!
//! Floor mode with padding at most half the window means no window reaches past the padded
//! border, so cuDNN's `COUNT_INCLUDE_PADDING` divides by `kh·kw` exactly as PyTorch does, and
//! `COUNT_EXCLUDE_PADDING` by the clipped window, as the CPU's `count_include_pad = false`.
//!
//! Max pooling of an NHWC activation (bf16 or fp32: the bf16 and NHWC fp32 modes) stays NHWC of
//! its type, forward and backward, by our own kernels with the same windows and tie rule.

use cudnn_sys as sys;
use magma_tensor::{DType, Tensor};

use super::CudaBackend;
use super::cudnn::{ONE, PoolDesc, TensorDesc, ZERO, check, dptr, scale};
use super::kernels::{self, ActDst, ActSrc, Stream, nhwc_launchers};
use crate::attrs::Pool2dAttrs;
use crate::backend::PoolOps;
use crate::cpu::CpuBackend;
use crate::error::{OpError, Result};

nhwc_launchers!(max_pool_nhwc = mg_max_pool2d_nhwc_bf16 | mg_max_pool2d_nhwc_f32(
    x: ActSrc, y: ActDst, n: i64, c: i64, h: i32, w: i32, ho: i32, wo: i32, kh: i32, kw: i32,
    sh: i32, sw: i32, ph: i32, pw: i32, stream: Stream,
));
nhwc_launchers!(max_pool_backward_nhwc =
    mg_max_pool2d_backward_nhwc_bf16 | mg_max_pool2d_backward_nhwc_f32(
    x: ActSrc, dy: ActSrc, dx: ActDst, n: i64, c: i64, h: i32, w: i32, ho: i32, wo: i32,
    kh: i32, kw: i32, sh: i32, sw: i32, ph: i32, pw: i32, stream: Stream,
));

unsafe extern "C" {
    fn mg_max_pool2d_backward(
        x: *const f32,
        dy: *const f32,
        dx: *mut f32,
        planes: i64,
        h: i32,
        w: i32,
        ho: i32,
        wo: i32,
        kh: i32,
        kw: i32,
        sh: i32,
        sw: i32,
        ph: i32,
        pw: i32,
        stream: Stream,
    ) -> i32;
}

fn avg_mode(attrs: &Pool2dAttrs) -> sys::cudnnPoolingMode_t {
    if attrs.count_include_pad {
        sys::cudnnPoolingMode_t::CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
    } else {
        sys::cudnnPoolingMode_t::CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING
    }
}

/// A size as the kernel's `int`.
fn int(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| OpError::Attr {
        op,
        reason: format!("size {v} does not fit a 32-bit integer"),
    })
}

/// The geometry arguments of the pooling kernels: h, w, ho, wo, kh, kw, sh, sw, ph, pw.
fn geometry(
    op: &'static str,
    [h, w]: [usize; 2],
    [ho, wo]: [usize; 2],
    attrs: &Pool2dAttrs,
) -> Result<[i32; 10]> {
    let mut g = [0; 10];
    let values = [
        h,
        w,
        ho,
        wo,
        attrs.kernel[0],
        attrs.kernel[1],
        attrs.stride[0],
        attrs.stride[1],
        attrs.padding[0],
        attrs.padding[1],
    ];
    for (slot, v) in g.iter_mut().zip(values) {
        *slot = int(op, v)?;
    }
    Ok(g)
}

impl CudaBackend {
    /// Max pooling of a non-empty NHWC activation of `dtype` into an NHWC result of that type.
    fn max_pool2d_nhwc(
        &self,
        dtype: DType,
        x: &Tensor,
        y_shape: [usize; 4],
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        let [n, c, h, w] = x.shape4(OP)?;
        let y = self.nhwc_output(y_shape, dtype)?;
        let g = geometry(OP, [h, w], [y_shape[2], y_shape[3]], attrs)?;
        let pool = max_pool_nhwc(dtype);
        // SAFETY: `x` holds n·h·w·c values of `dtype` and `y` n·ho·wo·c, NHWC on this device;
        // every window read lies inside its image (clipped to it).
        let status = unsafe {
            pool(
                x.channels_last_ptr()? as usize as ActSrc,
                y.channels_last_ptr()? as usize as ActDst,
                n as i64,
                c as i64,
                g[0],
                g[1],
                g[2],
                g[3],
                g[4],
                g[5],
                g[6],
                g[7],
                g[8],
                g[9],
                self.stream(),
            )
        };
        kernels::check(OP, status)?;
        Ok(y)
    }

    /// The max-pooling backward of an NHWC activation of `dtype`: `dy` as such (converted when
    /// it is not), `dx` likewise.
    fn max_pool2d_backward_nhwc(
        &self,
        dtype: DType,
        x: &Tensor,
        dy: &Tensor,
        [ho, wo]: [usize; 2],
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d_backward";
        let [n, c, h, w] = x.shape4(OP)?;
        let dy = self.to_nhwc(OP, dy, dtype)?;
        let dx = self.nhwc_output([n, c, h, w], dtype)?;
        let g = geometry(OP, [h, w], [ho, wo], attrs)?;
        let backward = max_pool_backward_nhwc(dtype);
        // SAFETY: `x` and `dx` hold n·h·w·c values of `dtype` and `dy` n·ho·wo·c, NHWC on this
        // device; the kernel writes every element of `dx` and reads only inside the others.
        let status = unsafe {
            backward(
                x.channels_last_ptr()? as usize as ActSrc,
                dy.channels_last_ptr()? as usize as ActSrc,
                dx.channels_last_ptr()? as usize as ActDst,
                n as i64,
                c as i64,
                g[0],
                g[1],
                g[2],
                g[3],
                g[4],
                g[5],
                g[6],
                g[7],
                g[8],
                g[9],
                self.stream(),
            )
        };
        kernels::check(OP, status)?;
        Ok(dx)
    }

    fn pool_forward(
        &self,
        op: &'static str,
        x: &Tensor,
        attrs: &Pool2dAttrs,
        mode: sys::cudnnPoolingMode_t,
    ) -> Result<Tensor> {
        let y_shape = CpuBackend::check_pool2d(x, attrs, op)?;
        if y_shape.contains(&0) {
            return self.output(&y_shape);
        }
        if x.numel() == 0 {
            // Windows that lie wholly in the padding of an empty image.
            return self.zeros(&y_shape);
        }
        if op == "max_pool2d"
            && let Some(dtype) = self.nhwc_dtype(x)
        {
            return self.max_pool2d_nhwc(dtype, x, y_shape, attrs);
        }
        let x = self.input(x)?;
        let mut y = self.output(&y_shape)?;
        let y_ptr = y.device_ptr_mut()?;
        let state = self.lock_state()?;
        let lib = state.handle.lib;
        let pool = PoolDesc::new(lib, op, mode, attrs.kernel, attrs.padding, attrs.stride)?;
        let x_desc = TensorDesc::nchw(lib, op, x.shape())?;
        let y_desc = TensorDesc::nchw(lib, op, &y_shape)?;
        // SAFETY: the descriptors match the contiguous device buffers of `x` (read) and `y`
        // (written, beta = 0).
        check(lib, op, "cudnnPoolingForward", unsafe {
            lib.cudnnPoolingForward(
                state.handle.raw,
                pool.raw,
                scale(&ONE),
                x_desc.raw,
                dptr(x.device_ptr()?),
                scale(&ZERO),
                y_desc.raw,
                dptr(y_ptr),
            )
        })?;
        Ok(y)
    }
}

impl PoolOps for CudaBackend {
    fn max_pool2d(&self, x: &Tensor, attrs: &Pool2dAttrs) -> Result<Tensor> {
        self.pool_forward(
            "max_pool2d",
            x,
            attrs,
            sys::cudnnPoolingMode_t::CUDNN_POOLING_MAX_DETERMINISTIC,
        )
    }

    fn max_pool2d_backward(
        &self,
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d_backward";
        let (n, c, h, w) = x.dims4(OP)?;
        let [_, _, ho, wo] = CpuBackend::check_pool2d_backward([n, c, h, w], dy, attrs, OP)?;
        if x.numel() == 0 || ho * wo == 0 {
            return self.zeros(x.shape());
        }
        if let Some(dtype) = self.nhwc_dtype(x) {
            return self.max_pool2d_backward_nhwc(dtype, x, dy, [ho, wo], attrs);
        }
        let (x, dy) = (self.input(x)?, self.input(dy)?);
        let mut dx = self.output(x.shape())?;
        let dx_ptr = dx.device_ptr_mut()?;
        let planes = i64::try_from(n * c).map_err(|_| OpError::Attr {
            op: OP,
            reason: "too many planes".into(),
        })?;
        // SAFETY: `x` and `dx` hold `n·c·h·w` values and `dy` `n·c·ho·wo`, contiguous on this
        // device; the kernel writes every element of `dx` and reads only inside the others.
        let status = unsafe {
            mg_max_pool2d_backward(
                x.device_ptr()? as usize as *const f32,
                dy.device_ptr()? as usize as *const f32,
                dx_ptr as usize as *mut f32,
                planes,
                int(OP, h)?,
                int(OP, w)?,
                int(OP, ho)?,
                int(OP, wo)?,
                int(OP, attrs.kernel[0])?,
                int(OP, attrs.kernel[1])?,
                int(OP, attrs.stride[0])?,
                int(OP, attrs.stride[1])?,
                int(OP, attrs.padding[0])?,
                int(OP, attrs.padding[1])?,
                self.stream(),
            )
        };
        kernels::check(OP, status)?;
        Ok(dx)
    }

    fn avg_pool2d(&self, x: &Tensor, attrs: &Pool2dAttrs) -> Result<Tensor> {
        self.pool_forward("avg_pool2d", x, attrs, avg_mode(attrs))
    }

    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor> {
        const OP: &str = "avg_pool2d_backward";
        let y_shape = CpuBackend::check_pool2d_backward(x_shape, dy, attrs, OP)?;
        if x_shape.contains(&0) || y_shape.contains(&0) {
            return self.zeros(&x_shape);
        }
        let dy = self.input(dy)?;
        let mut dx = self.output(&x_shape)?;
        let dx_ptr = dx.device_ptr_mut()?;
        let mut state = self.lock_state()?;
        // cuDNN's pooling backward takes the forward's `x` and `y` too; average pooling reads
        // neither, so `dy` stands for `y` (same shape) and the workspace for `x`.
        let x_stand_in = state.workspace(&self.device, x_shape.iter().product::<usize>() * 4)?;
        let lib = state.handle.lib;
        let pool = PoolDesc::new(
            lib,
            OP,
            avg_mode(attrs),
            attrs.kernel,
            attrs.padding,
            attrs.stride,
        )?;
        let x_desc = TensorDesc::nchw(lib, OP, &x_shape)?;
        let y_desc = TensorDesc::nchw(lib, OP, &y_shape)?;
        let dy_ptr = dy.device_ptr()?;
        // SAFETY: the descriptors match the device buffers: `dy` (as y and dy) of `y_shape`, the
        // workspace (at least `x_shape` values, as x) and `dx` of `x_shape` (written, beta = 0).
        check(lib, OP, "cudnnPoolingBackward", unsafe {
            lib.cudnnPoolingBackward(
                state.handle.raw,
                pool.raw,
                scale(&ONE),
                y_desc.raw,
                dptr(dy_ptr),
                y_desc.raw,
                dptr(dy_ptr),
                x_desc.raw,
                dptr(x_stand_in),
                scale(&ZERO),
                x_desc.raw,
                dptr(dx_ptr),
            )
        })?;
        Ok(dx)
    }
}
