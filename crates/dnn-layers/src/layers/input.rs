//! The input layer: declares and checks the per-sample shape a network accepts.

use dnn_ops::{Graph, Parameter, Var};

use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Checks that every batch has the declared per-sample shape (`None` = any size in that place).
#[derive(Debug, Clone)]
pub struct Input {
    sample_shape: Vec<Option<usize>>,
}

impl Input {
    /// A fixed per-sample shape, e.g. `[1, 28, 28]`.
    pub fn new(sample_shape: &[usize]) -> Self {
        Self {
            sample_shape: sample_shape.iter().map(|&d| Some(d)).collect(),
        }
    }
    /// A per-sample shape with free dimensions, e.g. `[Some(3), None, None]` for RGB of any size.
    pub fn with_free_dims(sample_shape: Vec<Option<usize>>) -> Self {
        Self { sample_shape }
    }
}

impl Module for Input {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        let shape = g.shape(x);
        let ok = shape.len() == self.sample_shape.len() + 1
            && shape[1..]
                .iter()
                .zip(&self.sample_shape)
                .all(|(d, want)| want.is_none_or(|w| w == *d));
        if !ok {
            return config_err(
                "Input",
                format!(
                    "batch of shape {shape:?} does not match per-sample shape {:?}",
                    self.sample_shape
                ),
            );
        }
        Ok(x)
    }
    fn visit_parameters(&self, _f: &mut dyn FnMut(&Parameter)) {}
    fn visit_parameters_mut(&mut self, _f: &mut dyn FnMut(&mut Parameter)) {}
    fn describe(&self) -> String {
        format!("Input({:?})", self.sample_shape)
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        Some(input.to_vec())
    }
}
