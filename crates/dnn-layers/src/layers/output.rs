//! The output layer: logits while training and evaluating (the loss applies its own stable
//! log-softmax), class probabilities (softmax over dimension 1, per pixel for 4-D outputs) when
//! predicting.

use dnn_ops::{Graph, Parameter, Var};

use crate::error::Result;
use crate::module::{Mode, Module};

/// Marks the network's output; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Logits in training and evaluation, softmax probabilities in prediction.
    Softmax,
    /// The values unchanged (regression, or logits wanted at inference).
    Identity,
}

impl Module for Output {
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> Result<Var> {
        Ok(match (self, mode) {
            (Output::Softmax, Mode::Predict) => g.softmax(x)?,
            _ => x,
        })
    }
    fn visit_parameters(&self, _f: &mut dyn FnMut(&Parameter)) {}
    fn visit_parameters_mut(&mut self, _f: &mut dyn FnMut(&mut Parameter)) {}
    fn describe(&self) -> String {
        format!("Output({self:?})")
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        Some(input.to_vec())
    }
}
