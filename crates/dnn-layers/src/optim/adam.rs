//! Adam and AdamW (decoupled weight decay).

use dnn_ops::backend::AdamOperands;
use dnn_ops::{AdamStep, Backend, Gradients, Tensor};

use super::{Optimizer, SlotState};
use crate::error::Result;
use crate::module::Module;

/// Adam (Kingma & Ba) with optional L2 penalty, or AdamW with decoupled weight decay.
#[derive(Debug, Clone)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
    state: SlotState,
}

impl Adam {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight decay).
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            state: SlotState::new(&["m", "v"]),
        }
    }
    /// AdamW: decoupled weight decay (PyTorch's default 0.01).
    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        Self {
            weight_decay,
            decoupled: true,
            ..Self::new(lr)
        }
    }
    pub fn with_betas(mut self, beta1: f32, beta2: f32) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl Adam {
    /// `Adam(lr …)` or `AdamW(lr …, wd …)`.
    pub fn describe_short(&self) -> String {
        if self.decoupled {
            format!(
                "AdamW(lr {:e}, weight decay {})",
                self.lr, self.weight_decay
            )
        } else {
            format!("Adam(lr {:e})", self.lr)
        }
    }
}

impl Adam {
    /// One update of every parameter in `grads` in one backend call (one kernel on the GPU),
    /// made only when `guard` (if given) is finite.
    fn update(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
        guard: Option<&Tensor>,
    ) -> Result<()> {
        let hyper = AdamStep {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled_weight_decay: self.decoupled,
            step: self.state.step + 1,
        };
        self.state.step_all(module, grads, |taken| {
            let mut operands: Vec<AdamOperands<'_>> = taken
                .iter_mut()
                .map(|t| {
                    let [m, v] = &mut t.slots[..] else {
                        unreachable!("Adam keeps two slots")
                    };
                    AdamOperands {
                        param: &mut t.param,
                        grad: &t.grad,
                        m,
                        v,
                    }
                })
                .collect();
            match guard {
                Some(guard) => backend.adam_step_many_if_finite(&mut operands, &hyper, guard)?,
                None => backend.adam_step_many(&mut operands, &hyper)?,
            }
            Ok(())
        })
    }
}

impl Optimizer for Adam {
    fn step(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
    ) -> Result<()> {
        self.update(backend, module, grads, None)
    }

    fn step_if_finite(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
        guard: &Tensor,
    ) -> Result<()> {
        self.update(backend, module, grads, Some(guard))
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn describe(&self) -> String {
        let name = if self.decoupled { "AdamW" } else { "Adam" };
        format!(
            "{name}(lr {:e}, betas ({}, {}), weight decay {})",
            self.lr, self.beta1, self.beta2, self.weight_decay
        )
    }
    fn state(&self) -> &SlotState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut SlotState {
        &mut self.state
    }
}
