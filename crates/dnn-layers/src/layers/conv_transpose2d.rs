//! 2-D transposed convolution layer (the U-Net's learned upsampling).

use dnn_ops::{ConvTranspose2dAttrs, Graph, Parameter, Var};
use magma_tensor::{Initializer, SeededRng};

use super::weight_bias::WeightBias;
use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Configuration of a [`ConvTranspose2d`] layer.
#[derive(Debug, Clone)]
pub struct ConvTranspose2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub attrs: ConvTranspose2dAttrs,
    pub bias: bool,
    pub init: Initializer,
}

impl ConvTranspose2dConfig {
    pub fn new(in_channels: usize, out_channels: usize, kernel: [usize; 2]) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            attrs: ConvTranspose2dAttrs::new(),
            bias: true,
            init: Initializer::HeUniform,
        }
    }
    /// The U-Net's 2×2, stride-2 upsampling (doubles height and width).
    pub fn up2(in_channels: usize, out_channels: usize) -> Self {
        Self::new(in_channels, out_channels, [2, 2]).with_stride([2, 2])
    }
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.attrs.stride = stride;
        self
    }
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.attrs.padding = padding;
        self
    }
    pub fn with_output_padding(mut self, output_padding: [usize; 2]) -> Self {
        self.attrs.output_padding = output_padding;
        self
    }
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builds the layer; parameters `name/weight` (`[in, out, kh, kw]`, PyTorch's layout) and `name/bias`.
    pub fn init(&self, name: &str, rng: &mut SeededRng) -> Result<ConvTranspose2d> {
        if self.in_channels == 0 || self.out_channels == 0 || self.kernel.contains(&0) {
            return config_err(
                name,
                format!("channels and kernel must be positive: {self:?}"),
            );
        }
        let shape = [
            self.in_channels,
            self.out_channels,
            self.kernel[0],
            self.kernel[1],
        ];
        let params = WeightBias::new(
            name,
            self.init.init(&shape, rng)?,
            self.bias.then_some(self.out_channels),
        );
        Ok(ConvTranspose2d {
            config: self.clone(),
            params,
        })
    }
}

/// A 2-D transposed convolution on NCHW inputs.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    config: ConvTranspose2dConfig,
    params: WeightBias,
}

impl Module for ConvTranspose2d {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        let (w, b) = self.params.vars(g);
        Ok(g.conv_transpose2d(x, w, b, self.config.attrs)?)
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
            "ConvTranspose2d({} → {}, kernel {:?}, stride {:?})",
            c.in_channels, c.out_channels, c.kernel, c.attrs.stride
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
