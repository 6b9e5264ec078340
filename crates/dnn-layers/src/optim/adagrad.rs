//! Adagrad.

use dnn_ops::{AdagradStep, Backend, Gradients};

use super::{Optimizer, SlotState};
use crate::error::Result;
use crate::module::Module;

/// Adagrad (PyTorch's rule, ε = 1e-10, no learning-rate decay).
#[derive(Debug, Clone)]
pub struct Adagrad {
    pub lr: f32,
    pub eps: f32,
    pub weight_decay: f32,
    state: SlotState,
}

impl Adagrad {
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            eps: 1e-10,
            weight_decay: 0.0,
            state: SlotState::new(&["sum_sq"]),
        }
    }
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Adagrad {
    fn step(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
    ) -> Result<()> {
        let hyper = AdagradStep {
            lr: self.lr,
            eps: self.eps,
            weight_decay: self.weight_decay,
        };
        self.state.step_each(module, grads, |p, grad, slots| {
            Ok(backend.adagrad_step(p.value_mut(), grad, &mut slots[0], &hyper)?)
        })
    }
    fn learning_rate(&self) -> f32 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn describe(&self) -> String {
        format!("Adagrad(lr {:e})", self.lr)
    }
    fn state(&self) -> &SlotState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut SlotState {
        &mut self.state
    }
}
