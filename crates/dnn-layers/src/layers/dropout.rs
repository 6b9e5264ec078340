//! Inverted dropout, reproducible from a seed.

use dnn_ops::{Graph, Parameter, Var};
use magma_tensor::SeededRng;

use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Zeroes each element with probability `p` in training (scaling the rest by `1/(1−p)`);
/// the identity in evaluation.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    rng: SeededRng,
}

impl Dropout {
    pub fn new(p: f32, rng: &mut SeededRng) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return config_err("Dropout", format!("probability {p} must be in [0, 1)"));
        }
        Ok(Self { p, rng: rng.fork() })
    }
}

impl Module for Dropout {
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> Result<Var> {
        if !mode.is_training() {
            return Ok(x);
        }
        Ok(g.dropout(x, self.p, self.rng.next_u64())?)
    }
    fn visit_parameters(&self, _f: &mut dyn FnMut(&Parameter)) {}
    fn visit_parameters_mut(&mut self, _f: &mut dyn FnMut(&mut Parameter)) {}
    fn describe(&self) -> String {
        format!("Dropout(p = {})", self.p)
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        Some(input.to_vec())
    }
}
