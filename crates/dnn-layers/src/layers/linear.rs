//! Fully connected layer: `y = x · Wᵀ + b`.

use dnn_ops::{Graph, Parameter, Var};
use magma_tensor::{Initializer, SeededRng};

use super::weight_bias::WeightBias;
use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Configuration of a [`Linear`] layer.
#[derive(Debug, Clone)]
pub struct LinearConfig {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub init: Initializer,
}

impl LinearConfig {
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Self {
            in_features,
            out_features,
            bias: true,
            init: Initializer::HeUniform,
        }
    }
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    pub fn with_init(mut self, init: Initializer) -> Self {
        self.init = init;
        self
    }

    /// Builds the layer; parameters are named `name/weight` and `name/bias`.
    pub fn init(&self, name: &str, rng: &mut SeededRng) -> Result<Linear> {
        if self.in_features == 0 || self.out_features == 0 {
            return config_err(
                name,
                format!(
                    "features must be positive, got {} → {}",
                    self.in_features, self.out_features
                ),
            );
        }
        let params = WeightBias::new(
            name,
            self.init
                .init(&[self.out_features, self.in_features], rng)?,
            self.bias.then_some(self.out_features),
        );
        Ok(Linear {
            config: self.clone(),
            params,
        })
    }
}

/// A fully connected (dense) layer on `[N, in_features]` inputs.
#[derive(Debug, Clone)]
pub struct Linear {
    config: LinearConfig,
    params: WeightBias,
}

impl Module for Linear {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        let (w, b) = self.params.vars(g);
        Ok(g.linear(x, w, b)?)
    }
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter)) {
        self.params.visit(f);
    }
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        self.params.visit_mut(f);
    }
    fn describe(&self) -> String {
        format!(
            "Linear({} → {})",
            self.config.in_features, self.config.out_features
        )
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.len() == 2 && input[1] == self.config.in_features)
            .then(|| vec![input[0], self.config.out_features])
    }
}
