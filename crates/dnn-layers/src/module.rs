//! The `Module` trait: something with parameters (and buffers) that maps a variable to a variable.

use dnn_ops::{Graph, Parameter, Tensor, Var};

use crate::error::Result;

/// What a forward pass is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, dropout, logits out.
    Train,
    /// Running statistics, no dropout, logits out (losses and metrics).
    Eval,
    /// As `Eval`, and output layers turn logits into probabilities.
    Predict,
}

impl Mode {
    /// Whether batch statistics and dropout apply.
    pub fn is_training(self) -> bool {
        self == Mode::Train
    }
}

/// A layer or a network of layers.
///
/// Parameters and buffers are named by path (`down1/conv1/weight`), which is how they are saved
/// and loaded.
pub trait Module: Send {
    /// Applies the module to `x` on graph `g`.
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> Result<Var>;

    /// Visits every trainable parameter.
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter));

    /// Visits every trainable parameter mutably (optimizers, weight loading).
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter));

    /// Visits every non-trainable state tensor (batch-norm running statistics) with its name.
    fn visit_buffers(&self, _f: &mut dyn FnMut(&str, &Tensor)) {}

    /// Visits every buffer mutably (weight loading).
    fn visit_buffers_mut(&mut self, _f: &mut dyn FnMut(&str, &mut Tensor)) {}

    /// A one-line description for model summaries.
    fn describe(&self) -> String;

    /// The output shape for a given input shape, if the module can tell without running.
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let _ = input;
        None
    }

    /// Number of trainable scalars.
    fn parameter_count(&self) -> usize {
        let mut n = 0;
        self.visit_parameters(&mut |p| n += p.value().numel());
        n
    }
}

/// Runs `f` on every parameter mutably, stopping at the first error.
pub fn try_for_each_parameter_mut(
    module: &mut dyn Module,
    mut f: impl FnMut(&mut Parameter) -> Result<()>,
) -> Result<()> {
    let mut first_error = None;
    module.visit_parameters_mut(&mut |p| {
        if first_error.is_none()
            && let Err(e) = f(p)
        {
            first_error = Some(e);
        }
    });
    first_error.map_or(Ok(()), Err)
}

/// Names of every parameter and buffer, in visiting order.
pub fn state_names(module: &dyn Module) -> Vec<String> {
    let mut names = Vec::new();
    module.visit_parameters(&mut |p| names.push(p.name().to_string()));
    module.visit_buffers(&mut |n, _| names.push(n.to_string()));
    names
}
