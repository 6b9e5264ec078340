//! RMSProp.

use dnn_ops::{Backend, Gradients, RmsPropStep};

use super::{Optimizer, SlotState};
use crate::error::Result;
use crate::module::{Module, try_for_each_parameter_mut};

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
        self.state.step += 1;
        let hyper = RmsPropStep {
            lr: self.lr,
            alpha: self.alpha,
            eps: self.eps,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        };
        let state = &mut self.state;
        try_for_each_parameter_mut(module, |p| {
            let Some(grad) = grads.param(p.id()) else {
                return Ok(());
            };
            let slots = state.slots_for(p.name(), p.value());
            let (sq, buf) = slots.split_at_mut(1);
            backend.rmsprop_step(p.value_mut(), grad, &mut sq[0], &mut buf[0], &hyper)?;
            Ok(())
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
