//! Batch normalisation layer (per channel, for `[N, C]` and `[N, C, H, W]` inputs).

use dnn_ops::backend::RunningStats;
use dnn_ops::{BatchNormAttrs, Graph, Parameter, Tensor, Var};

use super::join_name;
use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Configuration of a [`BatchNorm`] layer.
#[derive(Debug, Clone)]
pub struct BatchNormConfig {
    pub channels: usize,
    pub attrs: BatchNormAttrs,
}

impl BatchNormConfig {
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            attrs: BatchNormAttrs::default(),
        }
    }
    pub fn with_momentum(mut self, momentum: f32) -> Self {
        self.attrs.momentum = momentum;
        self
    }
    pub fn with_eps(mut self, eps: f32) -> Self {
        self.attrs.eps = eps;
        self
    }

    /// Builds the layer: parameters `name/gamma`, `name/beta`; buffers `name/running_mean`,
    /// `name/running_var`.
    pub fn init(&self, name: &str) -> Result<BatchNorm> {
        if self.channels == 0 {
            return config_err(name, "channels must be positive");
        }
        if !(0.0..=1.0).contains(&self.attrs.momentum) || self.attrs.eps <= 0.0 {
            return config_err(
                name,
                format!(
                    "momentum must be in [0, 1] and eps positive: {:?}",
                    self.attrs
                ),
            );
        }
        Ok(BatchNorm {
            config: self.clone(),
            gamma: Parameter::new(join_name(name, "gamma"), Tensor::ones(&[self.channels])),
            beta: Parameter::new(join_name(name, "beta"), Tensor::zeros(&[self.channels])),
            stats: RunningStats::new(self.channels),
            mean_name: join_name(name, "running_mean"),
            var_name: join_name(name, "running_var"),
        })
    }
}

/// Batch normalisation with learned scale and shift and running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    config: BatchNormConfig,
    gamma: Parameter,
    beta: Parameter,
    stats: RunningStats,
    mean_name: String,
    var_name: String,
}

impl BatchNorm {
    pub fn running_stats(&self) -> &RunningStats {
        &self.stats
    }

    /// This norm followed by a ReLU, as one graph op (fused on backends that can).
    pub fn forward_relu(&mut self, g: &Graph, x: Var, mode: Mode) -> Result<Var> {
        let (gamma, beta) = (g.param(&self.gamma), g.param(&self.beta));
        Ok(g.batch_norm_relu(
            x,
            gamma,
            beta,
            &mut self.stats,
            self.config.attrs,
            mode.is_training(),
        )?)
    }
}

impl Module for BatchNorm {
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> Result<Var> {
        let (gamma, beta) = (g.param(&self.gamma), g.param(&self.beta));
        Ok(g.batch_norm(
            x,
            gamma,
            beta,
            &mut self.stats,
            self.config.attrs,
            mode.is_training(),
        )?)
    }
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter)) {
        f(&self.gamma);
        f(&self.beta);
    }
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        f(&mut self.gamma);
        f(&mut self.beta);
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        f(&self.mean_name, &self.stats.mean);
        f(&self.var_name, &self.stats.var);
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(&self.mean_name, &mut self.stats.mean);
        f(&self.var_name, &mut self.stats.var);
    }
    fn describe(&self) -> String {
        format!("BatchNorm({})", self.config.channels)
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.get(1) == Some(&self.config.channels)).then(|| input.to_vec())
    }
}
