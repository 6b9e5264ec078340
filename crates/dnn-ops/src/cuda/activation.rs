//! Pointwise activations: ReLU, sigmoid and tanh through `cudnnActivationForward/Backward`;
//! leaky ReLU, which cuDNN lacks, through our kernels of `cuda/activation.cu`; the ReLU of an
//! NHWC activation (bf16 and NHWC fp32 modes) by the kernels of `nhwc.rs`, keeping it NHWC.
//!
//! Tensors of any shape are described to cuDNN as flat `[1, 1, 1, len]` runs of at most 2^30
//! elements.

use cudnn_sys as sys;
use magma_tensor::Tensor;

use super::CudaBackend;
use super::cudnn::{ActivationDesc, ONE, TensorDesc, ZERO, check, dptr, scale};
use super::kernels::{self, Stream};
use crate::attrs::Activation;
use crate::backend::ActivationOps;
use crate::cpu::CpuBackend;
use crate::error::Result;

unsafe extern "C" {
    fn mg_leaky_relu_forward(x: *const f32, y: *mut f32, n: i64, slope: f32, stream: Stream)
    -> i32;
    fn mg_leaky_relu_backward(
        x: *const f32,
        dy: *const f32,
        dx: *mut f32,
        n: i64,
        slope: f32,
        stream: Stream,
    ) -> i32;
}

/// Elements per cuDNN call (cuDNN dimensions are 32-bit).
const RUN: usize = 1 << 30;

/// `(offset, len)` of the runs covering `n` elements.
fn runs(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(RUN)
        .map(move |start| (start, RUN.min(n - start)))
}

/// Who computes an activation.
enum Route {
    Cudnn(sys::cudnnActivationMode_t),
    LeakyRelu(f32),
}

fn route(kind: Activation) -> Route {
    match kind {
        Activation::Relu => Route::Cudnn(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU),
        Activation::Sigmoid => Route::Cudnn(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_SIGMOID),
        Activation::Tanh => Route::Cudnn(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_TANH),
        Activation::LeakyRelu { negative_slope } => Route::LeakyRelu(negative_slope),
    }
}

/// The address of element `offset` of a device buffer at `base`.
fn at(base: u64, offset: usize) -> u64 {
    base + 4 * offset as u64
}

impl ActivationOps for CudaBackend {
    fn activation(&self, x: &Tensor, kind: Activation) -> Result<Tensor> {
        const OP: &str = "activation";
        if kind == Activation::Relu
            && let Some(dtype) = self.nhwc_dtype(x)
        {
            // An NHWC activation stays one (the bf16 and NHWC fp32 modes).
            return self.nhwc_relu(OP, x, dtype);
        }
        let x = self.input(x)?;
        let mut y = self.output(x.shape())?;
        let n = x.numel();
        if n == 0 {
            return Ok(y);
        }
        let (x_ptr, y_ptr) = (x.device_ptr()?, y.device_ptr_mut()?);
        let mode = match route(kind) {
            Route::Cudnn(mode) => mode,
            Route::LeakyRelu(negative_slope) => {
                // SAFETY: `x` and `y` hold `n` contiguous values on this device.
                let status = unsafe {
                    mg_leaky_relu_forward(
                        x_ptr as usize as *const f32,
                        y_ptr as usize as *mut f32,
                        n as i64,
                        negative_slope,
                        self.stream(),
                    )
                };
                kernels::check(OP, status)?;
                return Ok(y);
            }
        };
        let state = self.lock_state()?;
        let lib = state.handle.lib;
        let act = ActivationDesc::new(lib, OP, mode)?;
        for (start, len) in runs(n) {
            let desc = TensorDesc::nchw(lib, OP, &[1, 1, 1, len])?;
            // SAFETY: `x` and `y` hold `n` values; this run `[start, start + len)` lies inside
            // both; `y` is written with beta = 0.
            check(lib, OP, "cudnnActivationForward", unsafe {
                lib.cudnnActivationForward(
                    state.handle.raw,
                    act.raw,
                    scale(&ONE),
                    desc.raw,
                    dptr(at(x_ptr, start)),
                    scale(&ZERO),
                    desc.raw,
                    dptr(at(y_ptr, start)),
                )
            })?;
        }
        Ok(y)
    }

    fn activation_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        kind: Activation,
    ) -> Result<Tensor> {
        const OP: &str = "activation_backward";
        CpuBackend::check_activation_backward(x, y, dy)?;
        if kind == Activation::Relu
            && let Some(dtype) = self.nhwc_dtype(y)
        {
            // dx = dy where y > 0, NHWC of y's type like y (dy converted to it when it is not).
            return self.nhwc_relu_backward(OP, y, dy, dtype);
        }
        let (x, y, dy) = (self.input(x)?, self.input(y)?, self.input(dy)?);
        let mut dx = self.output(x.shape())?;
        let n = x.numel();
        if n == 0 {
            return Ok(dx);
        }
        let (x_ptr, y_ptr, dy_ptr, dx_ptr) = (
            x.device_ptr()?,
            y.device_ptr()?,
            dy.device_ptr()?,
            dx.device_ptr_mut()?,
        );
        let mode = match route(kind) {
            Route::Cudnn(mode) => mode,
            Route::LeakyRelu(negative_slope) => {
                // SAFETY: `x`, `dy` and `dx` hold `n` contiguous values on this device.
                let status = unsafe {
                    mg_leaky_relu_backward(
                        x_ptr as usize as *const f32,
                        dy_ptr as usize as *const f32,
                        dx_ptr as usize as *mut f32,
                        n as i64,
                        negative_slope,
                        self.stream(),
                    )
                };
                kernels::check(OP, status)?;
                return Ok(dx);
            }
        };
        let state = self.lock_state()?;
        let lib = state.handle.lib;
        let act = ActivationDesc::new(lib, OP, mode)?;
        for (start, len) in runs(n) {
            let desc = TensorDesc::nchw(lib, OP, &[1, 1, 1, len])?;
            // SAFETY: `x`, `y`, `dy` and `dx` hold `n` values; this run lies inside all of them;
            // `dx` is written with beta = 0.
            check(lib, OP, "cudnnActivationBackward", unsafe {
                lib.cudnnActivationBackward(
                    state.handle.raw,
                    act.raw,
                    scale(&ONE),
                    desc.raw,
                    dptr(at(y_ptr, start)),
                    desc.raw,
                    dptr(at(dy_ptr, start)),
                    desc.raw,
                    dptr(at(x_ptr, start)),
                    scale(&ZERO),
                    desc.raw,
                    dptr(at(dx_ptr, start)),
                )
            })?;
        }
        Ok(dx)
    }
}
