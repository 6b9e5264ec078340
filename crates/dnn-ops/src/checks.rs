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

/// Errors unless the guard of a guarded update holds one value.
pub(crate) fn update_guard(op: &'static str, guard: &Tensor) -> Result<()> {
    if guard.numel() == 1 {
        return Ok(());
    }
    Err(OpError::Shape {
        op,
        what: "guard",
        got: guard.shape().to_vec(),
        expected: "one element".into(),
    })
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

/// `(outer, size of dim, inner)` of a shape split at `dim`.
pub(crate) fn around(
    shape: &[usize],
    dim: usize,
    op: &'static str,
) -> Result<(usize, usize, usize)> {
    if dim >= shape.len() {
        return shape_err(
            op,
            "input",
            shape,
            format!("a tensor with more than {dim} dimensions"),
        );
    }
    Ok((
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    ))
}

/// The output shape of concatenating `parts` along `dim`, with the `(outer, inner)` extents
/// around it; every part must match the first except along `dim`.
pub(crate) fn concat_shape(parts: &[&Tensor], dim: usize) -> Result<(Vec<usize>, usize, usize)> {
    let first = parts.first().ok_or_else(|| OpError::Attr {
        op: "concat",
        reason: "needs at least one tensor".to_string(),
    })?;
    let (outer, _, inner) = around(first.shape(), dim, "concat")?;
    let mut out_shape = first.shape().to_vec();
    out_shape[dim] = 0;
    for p in parts {
        let ok = p.rank() == first.rank()
            && p.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(i, (a, b))| i == dim || a == b);
        if !ok {
            return shape_err(
                "concat",
                "part",
                p.shape(),
                format!("{:?} except along dimension {dim}", first.shape()),
            );
        }
        out_shape[dim] += p.shape()[dim];
    }
    Ok((out_shape, outer, inner))
}

/// `(outer, size of dim, inner)` of `x` after checking that `sizes` add up to dimension `dim`.
pub(crate) fn split_extents(
    x: &Tensor,
    dim: usize,
    sizes: &[usize],
) -> Result<(usize, usize, usize)> {
    let extents = around(x.shape(), dim, "split")?;
    if sizes.iter().sum::<usize>() != extents.1 {
        return Err(OpError::Attr {
            op: "split",
            reason: format!(
                "sizes {sizes:?} do not add up to dimension {dim} of {:?}",
                x.shape()
            ),
        });
    }
    Ok(extents)
}

/// `(n, c, h, w)` of `x` after checking that cropping `pads` leaves something.
pub(crate) fn crop_dims(x: &Tensor, pads: [usize; 4]) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = x.dims4("crop2d")?;
    let [top, bottom, left, right] = pads;
    if top + bottom >= h || left + right >= w {
        return Err(OpError::Attr {
            op: "crop2d",
            reason: format!("cropping {pads:?} leaves nothing of {:?}", x.shape()),
        });
    }
    Ok((n, c, h, w))
}
