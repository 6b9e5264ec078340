//! The residual block of a ResU-Net: two 3×3 conv-BN stages with an identity (or 1×1
//! projection) shortcut, ReLU after the sum.

use dnn_ops::{Graph, Parameter, Tensor, Var};
use magma_tensor::SeededRng;

use super::{ActivationLayer, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, join_name};
use crate::error::Result;
use crate::module::{Mode, Module};

/// `relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`, shortcut = 1×1 conv + BN when the channel
/// count changes, identity otherwise.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    projection: Option<(Conv2d, BatchNorm)>,
    channels: [usize; 2],
}

impl ResidualBlock {
    pub fn new(
        name: &str,
        in_channels: usize,
        out_channels: usize,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let conv = |i, o| {
            Conv2dConfig::new(i, o, [3, 3])
                .with_same_padding()
                .with_bias(false)
        };
        let projection = if in_channels != out_channels {
            Some((
                Conv2dConfig::new(in_channels, out_channels, [1, 1])
                    .with_bias(false)
                    .init(&join_name(name, "proj"), rng)?,
                BatchNormConfig::new(out_channels).init(&join_name(name, "proj_bn"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(in_channels, out_channels).init(&join_name(name, "conv1"), rng)?,
            bn1: BatchNormConfig::new(out_channels).init(&join_name(name, "bn1"))?,
            conv2: conv(out_channels, out_channels).init(&join_name(name, "conv2"), rng)?,
            bn2: BatchNormConfig::new(out_channels).init(&join_name(name, "bn2"))?,
            projection,
            channels: [in_channels, out_channels],
        })
    }
}

impl Module for ResidualBlock {
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> Result<Var> {
        let mut relu = ActivationLayer::relu();
        let h = self.conv1.forward(g, x, mode)?;
        let h = self.bn1.forward_relu(g, h, mode)?;
        let h = self.bn2.forward(g, self.conv2.forward(g, h, mode)?, mode)?;
        let shortcut = match &mut self.projection {
            Some((conv, bn)) => bn.forward(g, conv.forward(g, x, mode)?, mode)?,
            None => x,
        };
        relu.forward(g, g.add(h, shortcut)?, mode)
    }
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter)) {
        self.conv1.visit_parameters(f);
        self.bn1.visit_parameters(f);
        self.conv2.visit_parameters(f);
        self.bn2.visit_parameters(f);
        if let Some((c, b)) = &self.projection {
            c.visit_parameters(f);
            b.visit_parameters(f);
        }
    }
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        self.conv1.visit_parameters_mut(f);
        self.bn1.visit_parameters_mut(f);
        self.conv2.visit_parameters_mut(f);
        self.bn2.visit_parameters_mut(f);
        if let Some((c, b)) = &mut self.projection {
            c.visit_parameters_mut(f);
            b.visit_parameters_mut(f);
        }
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        self.bn1.visit_buffers(f);
        self.bn2.visit_buffers(f);
        if let Some((_, b)) = &self.projection {
            b.visit_buffers(f);
        }
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.bn1.visit_buffers_mut(f);
        self.bn2.visit_buffers_mut(f);
        if let Some((_, b)) = &mut self.projection {
            b.visit_buffers_mut(f);
        }
    }
    fn describe(&self) -> String {
        format!("ResidualBlock({} → {})", self.channels[0], self.channels[1])
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let [n, c, h, w] = *input else { return None };
        (c == self.channels[0]).then(|| vec![n, self.channels[1], h, w])
    }
}
