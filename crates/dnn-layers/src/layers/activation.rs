//! Pointwise activation layer (ReLU, leaky ReLU, sigmoid, tanh) and per-pixel softmax.

use dnn_ops::{Activation, Graph, Parameter, Var};

use crate::error::Result;
use crate::module::{Mode, Module};

/// An activation layer. `Softmax` normalises over dimension 1 (per pixel for 4-D outputs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActivationLayer {
    Pointwise(Activation),
    Softmax,
}

impl ActivationLayer {
    pub fn relu() -> Self {
        Self::Pointwise(Activation::Relu)
    }
    pub fn leaky_relu(negative_slope: f32) -> Self {
        Self::Pointwise(Activation::LeakyRelu { negative_slope })
    }
    pub fn sigmoid() -> Self {
        Self::Pointwise(Activation::Sigmoid)
    }
    pub fn tanh() -> Self {
        Self::Pointwise(Activation::Tanh)
    }
    pub fn softmax() -> Self {
        Self::Softmax
    }
}

impl Module for ActivationLayer {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        Ok(match *self {
            Self::Pointwise(kind) => g.activation(x, kind)?,
            Self::Softmax => g.softmax(x)?,
        })
    }
    fn visit_parameters(&self, _f: &mut dyn FnMut(&Parameter)) {}
    fn visit_parameters_mut(&mut self, _f: &mut dyn FnMut(&mut Parameter)) {}
    fn describe(&self) -> String {
        match self {
            Self::Pointwise(kind) => format!("{kind:?}"),
            Self::Softmax => "Softmax(dim 1)".to_string(),
        }
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        Some(input.to_vec())
    }
}
