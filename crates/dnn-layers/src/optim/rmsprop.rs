//! RMSProp.

use dnn_ops::{Backend, Gradients, RmsPropStep};

use super::{Optimizer, SlotState};
use crate::error::Result;
use crate::module::Module;

/// RMSProp (PyTorch's non-centred rule: α = 0.99, ε = 1e-8).
#[derive(Debug, Clone)]
pub struct RmsProp {
    pub lr: f32,
    pub alpha: f32,
    pub eps: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    state: SlotState,
}

impl RmsProp {
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            weight_decay: 0.0,
            state: SlotState::new(&["square_avg", "momentum"]),
        }
    }
    pub fn with_momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }
    pub fn with_alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
}

impl Optimizer for RmsProp {
    fn step(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
    ) -> Result<()> {
        let hyper = RmsPropStep {
            lr: self.lr,
            alpha: self.alpha,
            eps: self.eps,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        };
        self.state.step_each(module, grads, |p, grad, slots| {
            let [square_avg, momentum] = slots else {
                unreachable!("RMSProp keeps two slots")
            };
            Ok(backend.rmsprop_step(p.value_mut(), grad, square_avg, momentum, &hyper)?)
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
            "RMSProp(lr {:e}, alpha {}, momentum {})",
            self.lr, self.alpha, self.momentum
        )
    }
    fn state(&self) -> &SlotState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut SlotState {
        &mut self.state
    }
}
