//! Stochastic gradient descent with momentum and Nesterov momentum.

use dnn_ops::{Backend, Gradients, SgdStep};

use super::{Optimizer, SlotState};
use crate::error::Result;
use crate::module::Module;

/// SGD (PyTorch's update rule, no dampening).
#[derive(Debug, Clone)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    state: SlotState,
}

impl Sgd {
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            state: SlotState::new(&["velocity"]),
        }
    }
    pub fn with_momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    fn step(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
    ) -> Result<()> {
        let hyper = SgdStep {
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        };
        self.state.step_each(module, grads, |p, grad, slots| {
            Ok(backend.sgd_step(p.value_mut(), grad, &mut slots[0], &hyper)?)
        })
    }
    fn learning_rate(&self) -> f32 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn describe(&self) -> String {
        format!(
            "SGD(lr {:e}, momentum {}, nesterov {}, weight decay {})",
            self.lr, self.momentum, self.nesterov, self.weight_decay
        )
    }
    fn state(&self) -> &SlotState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut SlotState {
        &mut self.state
    }
}
