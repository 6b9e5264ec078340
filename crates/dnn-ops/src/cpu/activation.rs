//! Pointwise activations on the CPU.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::{empty_with_capacity, par_map};
use super::elementwise::same_shape;
use crate::attrs::Activation;
use crate::backend::ActivationOps;
use crate::error::Result;

fn forward(kind: Activation, x: f32) -> f32 {
    match kind {
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu { negative_slope } => {
            if x > 0.0 {
                x
            } else {
                x * negative_slope
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
    }
}

fn derivative(kind: Activation, x: f32, y: f32) -> f32 {
    match kind {
        Activation::Relu => f32::from(x > 0.0),
        Activation::LeakyRelu { negative_slope } => {
            if x > 0.0 {
                1.0
            } else {
                negative_slope
            }
        }
        Activation::Sigmoid => y * (1.0 - y),
        Activation::Tanh => 1.0 - y * y,
    }
}

impl CpuBackend {
    /// The check of `activation_backward`, shared with the CUDA backend: `x`, `y` and `dy` have
    /// one shape.
    pub(crate) fn check_activation_backward(x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<()> {
        same_shape("activation_backward", x, y)?;
        same_shape("activation_backward", x, dy)
    }
}

impl ActivationOps for CpuBackend {
    fn activation(&self, x: &Tensor, kind: Activation) -> Result<Tensor> {
        let x = x.contiguous()?;
        let v = par_map(x.host_data()?, |e| forward(kind, e));
        Ok(Tensor::from_vec(v, x.shape())?)
    }

    fn activation_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        kind: Activation,
    ) -> Result<Tensor> {
        Self::check_activation_backward(x, y, dy)?;
        let (x, y) = (x.contiguous()?, y.contiguous()?);
        let (xd, yd) = (x.host_data()?, y.host_data()?);
        let dy = dy.contiguous()?;
        let dyd = dy.host_data()?;
        let mut dx = empty_with_capacity(dyd.len());
        dx.par_extend(
            (0..dyd.len())
                .into_par_iter()
                .with_min_len(4096)
                .map(|i| dyd[i] * derivative(kind, xd[i], yd[i])),
        );
        Ok(Tensor::from_vec(dx, x.shape())?)
    }
}
