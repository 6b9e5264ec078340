//! Adam/AdamW, SGD, Adagrad and RMSProp updates on the GPU, in place (kernels in
//! `cuda/optim.cu`). Parameters and optimizer state given as host tensors migrate to the device
//! on the first step and stay there.

use magma_tensor::Tensor;

use super::CudaBackend;
use super::elementwise::{ll, src};
use super::kernels::{Stream, check};
use crate::attrs::{AdagradStep, AdamStep, RmsPropStep, SgdStep};
use crate::backend::{AdamOperands, OptimizerOps};
use crate::checks::{adam_scalars, update_guard, update_operands};
use crate::error::Result;

unsafe extern "C" {
    fn mg_adam_step_many(
        table: *const std::ffi::c_void,
        count: i64,
        largest: i64,
        lr: f32,
        beta1: f32,
        beta2: f32,
        one_minus_beta1: f32,
        one_minus_beta2: f32,
        eps: f32,
        weight_decay: f32,
        decoupled: i32,
        step_size: f32,
        bc2_sqrt: f32,
        guard: *const f32,
        s: Stream,
    ) -> i32;
    fn mg_adam_step(
        p: *mut f32,
        g: *const f32,
        m: *mut f32,
        v: *mut f32,
        n: i64,
        lr: f32,
        beta1: f32,
        beta2: f32,
        one_minus_beta1: f32,
        one_minus_beta2: f32,
        eps: f32,
        weight_decay: f32,
        decoupled: i32,
        step_size: f32,
        bc2_sqrt: f32,
        s: Stream,
    ) -> i32;
    fn mg_sgd_step(
        p: *mut f32,
        g: *const f32,
        b: *mut f32,
        n: i64,
        lr: f32,
        momentum: f32,
        nesterov: i32,
        weight_decay: f32,
        s: Stream,
    ) -> i32;
    fn mg_adagrad_step(
        p: *mut f32,
        g: *const f32,
        acc: *mut f32,
        n: i64,
        lr: f32,
        eps: f32,
        weight_decay: f32,
        s: Stream,
    ) -> i32;
    fn mg_rmsprop_step(
        p: *mut f32,
        g: *const f32,
        sq: *mut f32,
        b: *mut f32,
        n: i64,
        lr: f32,
        alpha: f32,
        one_minus_alpha: f32,
        eps: f32,
        momentum: f32,
        weight_decay: f32,
        s: Stream,
    ) -> i32;
}

impl CudaBackend {
    /// The writable device address of an in-place operand.
    fn state(&self, t: &mut Tensor) -> Result<*mut f32> {
        Ok(self.in_place(t)? as *mut f32)
    }

    /// The multi-tensor Adam kernel, made only when `guard` (if given) is finite on the device.
    fn adam_many(
        &self,
        operands: &mut [AdamOperands<'_>],
        s: &AdamStep,
        guard: Option<&Tensor>,
    ) -> Result<()> {
        const OP: &str = "adam_step";
        let guard = match guard {
            Some(g) => {
                update_guard(OP, g)?;
                Some(self.input(g)?)
            }
            None => None,
        };
        let guard_ptr = match &guard {
            Some(g) => src(g)?,
            None => std::ptr::null(),
        };
        let (step_size, bc2_sqrt) = adam_scalars(s)?;
        // The table of {param, grad, m, v, n} (five 8-byte words per tensor) the kernel walks,
        // and the gradients it reads, kept alive until the kernel is queued.
        let mut table: Vec<u64> = Vec::with_capacity(5 * operands.len());
        let mut grads = Vec::with_capacity(operands.len());
        let mut largest = 0;
        for o in operands.iter_mut() {
            update_operands(OP, o.param, &[o.grad, o.m, o.v])?;
            let grad = self.input(o.grad)?;
            let n = grad.numel();
            if n == 0 {
                continue;
            }
            let (p, m, v) = (self.state(o.param)?, self.state(o.m)?, self.state(o.v)?);
            table.extend([p as u64, src(&grad)? as u64, m as u64, v as u64, n as u64]);
            largest = largest.max(n);
            grads.push(grad);
        }
        if grads.is_empty() {
            return Ok(());
        }
        // Each word as two f32 bit patterns (the upload copies bits, it does not convert).
        let words: Vec<f32> = table
            .iter()
            .flat_map(|w| [f32::from_bits(*w as u32), f32::from_bits((*w >> 32) as u32)])
            .collect();
        let len = words.len();
        let table = self.input(&Tensor::from_vec(words, &[len])?)?;
        // SAFETY: `table` holds `grads.len()` entries of five 8-byte words in the kernel's
        // layout; each names distinct device tensors owned alone (params and moments, in_place)
        // or alive until queued (the gradients), with `n` elements each; `guard_ptr` is null or
        // one f32 of a device tensor alive until queued.
        check(OP, unsafe {
            mg_adam_step_many(
                src(&table)? as *const std::ffi::c_void,
                ll(grads.len()),
                ll(largest),
                s.lr,
                s.beta1,
                s.beta2,
                1.0 - s.beta1,
                1.0 - s.beta2,
                s.eps,
                s.weight_decay,
                i32::from(s.decoupled_weight_decay),
                step_size,
                bc2_sqrt,
                guard_ptr,
                self.stream(),
            )
        })
    }
}

impl OptimizerOps for CudaBackend {
    fn adam_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        s: &AdamStep,
    ) -> Result<()> {
        update_operands("adam_step", param, &[grad, m, v])?;
        let (step_size, bc2_sqrt) = adam_scalars(s)?;
        let grad = self.input(grad)?;
        let n = grad.numel();
        let (p, m, v) = (self.state(param)?, self.state(m)?, self.state(v)?);
        if n > 0 {
            // SAFETY: `param`, `m` and `v` are distinct device tensors owned alone (in_place),
            // `grad` a device tensor; all hold `n` elements.
            check("adam_step", unsafe {
                mg_adam_step(
                    p,
                    src(&grad)?,
                    m,
                    v,
                    ll(n),
                    s.lr,
                    s.beta1,
                    s.beta2,
                    1.0 - s.beta1,
                    1.0 - s.beta2,
                    s.eps,
                    s.weight_decay,
                    i32::from(s.decoupled_weight_decay),
                    step_size,
                    bc2_sqrt,
                    self.stream(),
                )
            })?;
        }
        Ok(())
    }

    fn adam_step_many(&self, operands: &mut [AdamOperands<'_>], s: &AdamStep) -> Result<()> {
        self.adam_many(operands, s, None)
    }

    fn adam_step_many_if_finite(
        &self,
        operands: &mut [AdamOperands<'_>],
        s: &AdamStep,
        guard: &Tensor,
    ) -> Result<()> {
        self.adam_many(operands, s, Some(guard))
    }

    fn sgd_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        velocity: &mut Tensor,
        s: &SgdStep,
    ) -> Result<()> {
        update_operands("sgd_step", param, &[grad, velocity])?;
        let grad = self.input(grad)?;
        let n = grad.numel();
        let (p, b) = (self.state(param)?, self.state(velocity)?);
        if n > 0 {
            // SAFETY: `param` and `velocity` are distinct device tensors owned alone, `grad` a
            // device tensor; all hold `n` elements.
            check("sgd_step", unsafe {
                mg_sgd_step(
                    p,
                    src(&grad)?,
                    b,
                    ll(n),
                    s.lr,
                    s.momentum,
                    i32::from(s.nesterov),
                    s.weight_decay,
                    self.stream(),
                )
            })?;
        }
        Ok(())
    }

    fn adagrad_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        sum_sq: &mut Tensor,
        s: &AdagradStep,
    ) -> Result<()> {
        update_operands("adagrad_step", param, &[grad, sum_sq])?;
        let grad = self.input(grad)?;
        let n = grad.numel();
        let (p, acc) = (self.state(param)?, self.state(sum_sq)?);
        if n > 0 {
            // SAFETY: `param` and `sum_sq` are distinct device tensors owned alone, `grad` a
            // device tensor; all hold `n` elements.
            check("adagrad_step", unsafe {
                mg_adagrad_step(
                    p,
                    src(&grad)?,
                    acc,
                    ll(n),
                    s.lr,
                    s.eps,
                    s.weight_decay,
                    self.stream(),
                )
            })?;
        }
        Ok(())
    }

    fn rmsprop_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        square_avg: &mut Tensor,
        momentum_buf: &mut Tensor,
        s: &RmsPropStep,
    ) -> Result<()> {
        update_operands("rmsprop_step", param, &[grad, square_avg, momentum_buf])?;
        let grad = self.input(grad)?;
        let n = grad.numel();
        let (p, sq, b) = (
            self.state(param)?,
            self.state(square_avg)?,
            self.state(momentum_buf)?,
        );
        if n > 0 {
            // SAFETY: `param`, `square_avg` and `momentum_buf` are distinct device tensors owned
            // alone, `grad` a device tensor; all hold `n` elements.
            check("rmsprop_step", unsafe {
                mg_rmsprop_step(
                    p,
                    src(&grad)?,
                    sq,
                    b,
                    ll(n),
                    s.lr,
                    s.alpha,
                    1.0 - s.alpha,
                    s.eps,
                    s.momentum,
                    s.weight_decay,
                    self.stream(),
                )
            })?;
        }
        Ok(())
    }
}
