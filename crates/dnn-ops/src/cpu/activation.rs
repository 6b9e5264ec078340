//! Pointwise activations on the CPU.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
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
        let mut v = x.to_vec()?;
        v.par_iter_mut()
            .with_min_len(4096)
            .for_each(|e| *e = forward(kind, *e));
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
        let mut dx = dy.to_vec()?;
        dx.par_iter_mut()
            .with_min_len(4096)
            .enumerate()
            .for_each(|(i, d)| *d *= derivative(kind, xd[i], yd[i]));
        Ok(Tensor::from_vec(dx, x.shape())?)
    }
}
