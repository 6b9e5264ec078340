//! Softmax and log-softmax over dimension 1 through `cudnnSoftmaxForward/Backward` in
//! `CUDNN_SOFTMAX_MODE_CHANNEL` (one distribution per `(n, pixel)`), algorithms `ACCURATE`
//! (max-subtracted) and `LOG`. A tensor `[N, C, ...]` is described as `[N, C, inner, 1]`.

use cudnn_sys as sys;
use magma_tensor::Tensor;

use super::CudaBackend;
use super::cudnn::{ONE, TensorDesc, ZERO, check, dptr, scale};
use crate::backend::SoftmaxOps;
use crate::cpu::CpuBackend;
use crate::error::Result;

fn algo(log: bool) -> sys::cudnnSoftmaxAlgorithm_t {
    if log {
        sys::cudnnSoftmaxAlgorithm_t::CUDNN_SOFTMAX_LOG
    } else {
        sys::cudnnSoftmaxAlgorithm_t::CUDNN_SOFTMAX_ACCURATE
    }
}

impl CudaBackend {
    fn softmax_forward(&self, op: &'static str, x: &Tensor, log: bool) -> Result<Tensor> {
        let (outer, c, inner) = CpuBackend::check_softmax(x, op)?;
        let x = self.input(x)?;
        let mut y = self.output(x.shape())?;
        if x.numel() == 0 {
            return Ok(y);
        }
        let y_ptr = y.device_ptr_mut()?;
        let state = self.lock_state()?;
        let lib = state.handle.lib;
        let desc = TensorDesc::nchw(lib, op, &[outer, c, inner, 1])?;
        // SAFETY: `x` and `y` are contiguous `[outer, c, inner]` device buffers as described;
        // `y` is written with beta = 0.
        check(lib, op, "cudnnSoftmaxForward", unsafe {
            lib.cudnnSoftmaxForward(
                state.handle.raw,
                algo(log),
                sys::cudnnSoftmaxMode_t::CUDNN_SOFTMAX_MODE_CHANNEL,
                scale(&ONE),
                desc.raw,
                dptr(x.device_ptr()?),
                scale(&ZERO),
                desc.raw,
                dptr(y_ptr),
            )
        })?;
        Ok(y)
    }

    fn softmax_backward_impl(
        &self,
        op: &'static str,
        y: &Tensor,
        dy: &Tensor,
        log: bool,
    ) -> Result<Tensor> {
        let (outer, c, inner) = CpuBackend::check_softmax_backward(y, dy, op)?;
        let (y, dy) = (self.input(y)?, self.input(dy)?);
        let mut dx = self.output(y.shape())?;
        if y.numel() == 0 {
            return Ok(dx);
        }
        let dx_ptr = dx.device_ptr_mut()?;
        let state = self.lock_state()?;
        let lib = state.handle.lib;
        let desc = TensorDesc::nchw(lib, op, &[outer, c, inner, 1])?;
        // SAFETY: `y`, `dy` and `dx` are contiguous `[outer, c, inner]` device buffers as
        // described; `dx` is written with beta = 0.
        check(lib, op, "cudnnSoftmaxBackward", unsafe {
            lib.cudnnSoftmaxBackward(
                state.handle.raw,
                algo(log),
                sys::cudnnSoftmaxMode_t::CUDNN_SOFTMAX_MODE_CHANNEL,
                scale(&ONE),
                desc.raw,
                dptr(y.device_ptr()?),
                desc.raw,
                dptr(dy.device_ptr()?),
                scale(&ZERO),
                desc.raw,
                dptr(dx_ptr),
            )
        })?;
        Ok(dx)
    }
}

impl SoftmaxOps for CudaBackend {
    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        self.softmax_forward("softmax", x, false)
    }

    fn softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        self.softmax_backward_impl("softmax_backward", y, dy, false)
    }

    fn log_softmax(&self, x: &Tensor) -> Result<Tensor> {
        self.softmax_forward("log_softmax", x, true)
    }

    fn log_softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        self.softmax_backward_impl("log_softmax_backward", y, dy, true)
    }
}
