//! A chain of modules applied one after another.

use dnn_ops::{Graph, Parameter, Tensor, Var};

use crate::error::Result;
use crate::module::{Mode, Module};

/// Modules applied in order; itself a module.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.layers.iter().map(|l| l.describe()))
            .finish()
    }
}

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer (builder style).
    pub fn with(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a layer.
    pub fn push(&mut self, layer: impl Module + 'static) {
        self.layers.push(Box::new(layer));
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// A table of layers with output shapes (for an input of `input_shape`) and parameter counts.
    pub fn summary(&self, input_shape: &[usize]) -> String {
        let mut out = format!(
            "{:<58} {:>20} {:>12}\n",
            "layer", "output shape", "parameters"
        );
        let mut shape = Some(input_shape.to_vec());
        for layer in &self.layers {
            shape = shape.and_then(|s| layer.output_shape(&s));
            let shown = shape.as_ref().map_or("?".to_string(), |s| format!("{s:?}"));
            out += &format!(
                "{:<58} {:>20} {:>12}\n",
                layer.describe(),
                shown,
                layer.parameter_count()
            );
        }
        out += &format!("total trainable parameters: {}", self.parameter_count());
        out
    }
}

impl Module for Sequential {
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> Result<Var> {
        self.layers
            .iter_mut()
            .try_fold(x, |v, layer| layer.forward(g, v, mode))
    }
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter)) {
        self.layers.iter().for_each(|l| l.visit_parameters(f));
    }
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        self.layers
            .iter_mut()
            .for_each(|l| l.visit_parameters_mut(f));
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        self.layers.iter().for_each(|l| l.visit_buffers(f));
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.layers.iter_mut().for_each(|l| l.visit_buffers_mut(f));
    }
    fn describe(&self) -> String {
        format!("Sequential({} layers)", self.layers.len())
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        self.layers
            .iter()
            .try_fold(input.to_vec(), |s, l| l.output_shape(&s))
    }
}
