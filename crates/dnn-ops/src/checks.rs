//! Checks and update-rule scalars shared by every backend, so that the CPU and CUDA backends
//! refuse the same inputs with the same typed errors and compute the same step constants.

use magma_tensor::Tensor;

use crate::attrs::AdamStep;
use crate::error::{OpError, Result, shape_err};

/// Errors unless `a` and `b` have the same shape.
pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return shape_err(op, "second operand", b.shape(), format!("{:?}", a.shape()));
    }
    Ok(())
}

/// `(outer, channels, inner)` for an operation over dimension 1.
pub(crate) fn channel_dims(shape: &[usize], op: &'static str) -> Result<(usize, usize, usize)> {
    if shape.len() < 2 {
        return shape_err(op, "input", shape, "[N, C, ...]");
    }
    Ok((shape[0], shape[1], shape[2..].iter().product()))
}

/// Errors unless every operand of an in-place update has the parameter's shape.
pub(crate) fn update_operands(
    op: &'static str,
    param: &Tensor,
    operands: &[&Tensor],
) -> Result<()> {
    operands.iter().try_for_each(|t| same_shape(op, param, t))
}

/// Adam's `(step size lr / (1 − β₁ᵗ), √(1 − β₂ᵗ))` for step `t ≥ 1`, computed in f64.
pub(crate) fn adam_scalars(s: &AdamStep) -> Result<(f32, f32)> {
    if s.step == 0 {
        return Err(OpError::Attr {
            op: "adam_step",
            reason: "step counts from 1".to_string(),
        });
    }
    let bc1 = 1.0 - (s.beta1 as f64).powi(s.step as i32);
    let bc2 = 1.0 - (s.beta2 as f64).powi(s.step as i32);
    Ok(((s.lr as f64 / bc1) as f32, bc2.sqrt() as f32))
}
