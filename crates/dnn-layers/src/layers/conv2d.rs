//! 2-D convolution layer.

use dnn_ops::{Conv2dAttrs, Graph, Parameter, Var};
use magma_tensor::{Initializer, SeededRng};

use super::weight_bias::WeightBias;
use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Configuration of a [`Conv2d`] layer.
#[derive(Debug, Clone)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub attrs: Conv2dAttrs,
    pub bias: bool,
    pub init: Initializer,
}

impl Conv2dConfig {
    pub fn new(in_channels: usize, out_channels: usize, kernel: [usize; 2]) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            attrs: Conv2dAttrs::new(),
            bias: true,
            init: Initializer::HeUniform,
        }
    }
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.attrs.stride = stride;
        self
    }
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.attrs.padding = padding;
        self
    }
    /// Padding that keeps the spatial size at stride 1 (odd kernels).
    pub fn with_same_padding(mut self) -> Self {
        self.attrs.padding = [
            self.kernel[0] / 2 * self.attrs.dilation[0],
            self.kernel[1] / 2 * self.attrs.dilation[1],
        ];
        self
    }
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.attrs.dilation = dilation;
        self
    }
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    pub fn with_init(mut self, init: Initializer) -> Self {
        self.init = init;
        self
    }

    /// Builds the layer; parameters are named `name/weight` (`[out, in, kh, kw]`) and `name/bias`.
    pub fn init(&self, name: &str, rng: &mut SeededRng) -> Result<Conv2d> {
        if self.in_channels == 0 || self.out_channels == 0 || self.kernel.contains(&0) {
            return config_err(
                name,
                format!("channels and kernel must be positive: {self:?}"),
            );
        }
        let shape = [
            self.out_channels,
            self.in_channels,
            self.kernel[0],
            self.kernel[1],
        ];
        let params = WeightBias::new(
            name,
            self.init.init(&shape, rng)?,
            self.bias.then_some(self.out_channels),
        );
        Ok(Conv2d {
            config: self.clone(),
            params,
        })
    }
}

/// A 2-D convolution on NCHW inputs.
#[derive(Debug, Clone)]
pub struct Conv2d {
    config: Conv2dConfig,
    params: WeightBias,
}

impl Conv2d {
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
}

impl Module for Conv2d {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        let (w, b) = self.params.vars(g);
        Ok(g.conv2d(x, w, b, self.config.attrs)?)
    }
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter)) {
        self.params.visit(f);
    }
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        self.params.visit_mut(f);
    }
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "Conv2d({} → {}, kernel {:?}, stride {:?}, padding {:?})",
            c.in_channels, c.out_channels, c.kernel, c.attrs.stride, c.attrs.padding
        )
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let [n, c, h, w] = *input else { return None };
        if c != self.config.in_channels {
            return None;
        }
        let [ho, wo] = self
            .config
            .attrs
            .output_size([h, w], self.config.kernel)
            .ok()?;
        Some(vec![n, self.config.out_channels, ho, wo])
    }
}
