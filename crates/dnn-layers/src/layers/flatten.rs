//! Flattens `[N, ...]` into `[N, features]`.

use dnn_ops::{Graph, Parameter, Var};

use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Reshapes every sample to a vector.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten;

impl Module for Flatten {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        let shape = g.shape(x);
        let Some((&n, rest)) = shape.split_first() else {
            return config_err("Flatten", "cannot flatten a scalar");
        };
        Ok(g.reshape(x, &[n, rest.iter().product()])?)
    }
    fn visit_parameters(&self, _f: &mut dyn FnMut(&Parameter)) {}
    fn visit_parameters_mut(&mut self, _f: &mut dyn FnMut(&mut Parameter)) {}
    fn describe(&self) -> String {
        "Flatten".to_string()
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let (&n, rest) = input.split_first()?;
        Some(vec![n, rest.iter().product()])
    }
}
