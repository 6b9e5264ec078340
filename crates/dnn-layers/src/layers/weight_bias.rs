//! The weight and optional bias that dense, convolution and transposed-convolution layers share.

use dnn_ops::{Graph, Parameter, Tensor, Var};

use super::join_name;

/// `name/weight` and, when enabled, a zero-initialised `name/bias` of `bias_len` elements.
#[derive(Debug, Clone)]
pub(crate) struct WeightBias {
    weight: Parameter,
    bias: Option<Parameter>,
}

impl WeightBias {
    pub(crate) fn new(name: &str, weight: Tensor, bias_len: Option<usize>) -> Self {
        Self {
            weight: Parameter::new(join_name(name, "weight"), weight),
            bias: bias_len.map(|n| Parameter::new(join_name(name, "bias"), Tensor::zeros(&[n]))),
        }
    }

    /// The weight and bias as variables of `g`.
    pub(crate) fn vars(&self, g: &Graph) -> (Var, Option<Var>) {
        (
            g.param(&self.weight),
            self.bias.as_ref().map(|b| g.param(b)),
        )
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(&Parameter)) {
        f(&self.weight);
        if let Some(b) = &self.bias {
            f(b);
        }
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }
}
