//! Optimizers (SGD with momentum and Nesterov, Adagrad, RMSProp, Adam, AdamW) and learning-rate
//! schedules. Updates run on the backend (`OptimizerOps`); state is kept per parameter name so
//! that it can be saved and restored exactly.

mod adagrad;
mod adam;
mod rmsprop;
mod schedule;
mod sgd;
mod state;

pub use adagrad::Adagrad;
pub use adam::Adam;
pub use rmsprop::RmsProp;
pub use schedule::{CosineLr, LrSchedule, ReduceOnPlateau, StepLr};
pub use sgd::Sgd;
pub use state::SlotState;

use dnn_ops::{Backend, Gradients, Tensor};

use crate::error::Result;
use crate::module::Module;

/// Updates a module's parameters from their gradients.
pub trait Optimizer: Send {
    /// One update of every parameter that has a gradient in `grads`.
    fn step(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
    ) -> Result<()>;
    /// [`Self::step`] made only when `guard` (one value: a loss plus the gradients' sum, say)
    /// is finite, the step counted either way: a device backend checks the guard on the device
    /// (the Adam family), so the caller need not wait for it; a caller that later reads a
    /// non-finite guard puts the count back (`state_mut().step`). The default reads the guard
    /// on the host first.
    fn step_if_finite(
        &mut self,
        backend: &dyn Backend,
        module: &mut dyn Module,
        grads: &Gradients,
        guard: &Tensor,
    ) -> Result<()> {
        if guard.item()?.is_finite() {
            self.step(backend, module, grads)
        } else {
            self.state_mut().step += 1;
            Ok(())
        }
    }
    fn learning_rate(&self) -> f32;
    fn set_learning_rate(&mut self, lr: f32);
    /// Short description for logs ("Adam(lr 1e-3)").
    fn describe(&self) -> String;
    /// The per-parameter state (moments, step count), for checkpoints.
    fn state(&self) -> &SlotState;
    fn state_mut(&mut self) -> &mut SlotState;
}
