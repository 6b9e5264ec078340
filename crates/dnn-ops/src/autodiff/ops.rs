//! The differentiable ops of a [`Graph`]: each computes its value with the backend and records
//! a backward function built from the backend's backward ops.

use magma_tensor::Tensor;

use super::graph::{Graph, Var};
use crate::attrs::{Activation, BatchNormAttrs, Conv2dAttrs, ConvTranspose2dAttrs, Pool2dAttrs};
use crate::backend::{Backend, RunningStats};
use crate::error::{OpError, Result};

impl Graph<'_> {
    fn values(&self, vars: &[Var]) -> Vec<Tensor> {
        vars.iter().map(|&v| self.value(v)).collect()
    }

    // ---- linear algebra -------------------------------------------------------------------

    /// `a · b` for rank-2 values.
    pub fn matmul(&self, a: Var, b: Var) -> Result<Var> {
        let [av, bv] = <[Tensor; 2]>::try_from(self.values(&[a, b])).expect("two values");
        let y = self.backend().matmul(&av, &bv, false, false)?;
        Ok(self.record("matmul", y, &[a, b], move |be, dy| {
            Ok(vec![
                Some(be.matmul(dy, &bv, false, true)?),
                Some(be.matmul(&av, dy, true, false)?),
            ])
        }))
    }

    /// `x · wᵀ + b` with `x: [N, in]`, `w: [out, in]`, `b: [out]` (a fully connected layer).
    pub fn linear(&self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let (xv, wv) = (self.value(x), self.value(w));
        let mut y = self.backend().matmul(&xv, &wv, false, true)?;
        if let Some(b) = b {
            y = self.backend().add_channel_bias(&y, &self.value(b))?;
        }
        let mut inputs = vec![x, w];
        inputs.extend(b);
        let has_bias = b.is_some();
        Ok(self.record("linear", y, &inputs, move |be, dy| {
            let mut g = vec![
                Some(be.matmul(dy, &wv, false, false)?),
                Some(be.matmul(dy, &xv, true, false)?),
            ];
            if has_bias {
                g.push(Some(be.sum_per_channel(dy)?));
            }
            Ok(g)
        }))
    }

    // ---- convolutions ----------------------------------------------------------------------

    /// 2-D convolution (`w: [out, in, kh, kw]`, optional `b: [out]`).
    pub fn conv2d(&self, x: Var, w: Var, b: Option<Var>, attrs: Conv2dAttrs) -> Result<Var> {
        let xv = self.value(x);
        let wv = self.backend().conv_weight(&self.value(w))?;
        let bv = b.map(|b| self.value(b));
        let y = self.backend().conv2d(&xv, &wv, bv.as_ref(), &attrs)?;
        let mut inputs = vec![x, w];
        inputs.extend(b);
        let has_bias = b.is_some();
        let (need_dx, need_dw) = (self.needs_grad(x), self.needs_grad(w));
        Ok(self.record("conv2d", y, &inputs, move |be, dy| {
            let [dx, dw] = be.conv2d_backward(&xv, &wv, dy, &attrs, [need_dx, need_dw])?;
            let mut g = vec![dx, dw];
            if has_bias {
                g.push(Some(be.sum_per_channel(dy)?));
            }
            Ok(g)
        }))
    }

    /// 2-D transposed convolution (`w: [in, out, kh, kw]`, optional `b: [out]`).
    pub fn conv_transpose2d(
        &self,
        x: Var,
        w: Var,
        b: Option<Var>,
        attrs: ConvTranspose2dAttrs,
    ) -> Result<Var> {
        let xv = self.value(x);
        let wv = self.backend().conv_weight(&self.value(w))?;
        let bv = b.map(|b| self.value(b));
        let y = self
            .backend()
            .conv_transpose2d(&xv, &wv, bv.as_ref(), &attrs)?;
        let mut inputs = vec![x, w];
        inputs.extend(b);
        let has_bias = b.is_some();
        let (need_dx, need_dw) = (self.needs_grad(x), self.needs_grad(w));
        Ok(self.record("conv_transpose2d", y, &inputs, move |be, dy| {
            let [dx, dw] =
                be.conv_transpose2d_backward(&xv, &wv, dy, &attrs, [need_dx, need_dw])?;
            let mut g = vec![dx, dw];
            if has_bias {
                g.push(Some(be.sum_per_channel(dy)?));
            }
            Ok(g)
        }))
    }

    // ---- pooling and resampling ------------------------------------------------------------

    pub fn max_pool2d(&self, x: Var, attrs: Pool2dAttrs) -> Result<Var> {
        let xv = self.value(x);
        let y = self.backend().max_pool2d(&xv, &attrs)?;
        let yv = y.clone();
        Ok(self.record("max_pool2d", y, &[x], move |be, dy| {
            Ok(vec![Some(be.max_pool2d_backward(&xv, &yv, dy, &attrs)?)])
        }))
    }

    pub fn avg_pool2d(&self, x: Var, attrs: Pool2dAttrs) -> Result<Var> {
        let xv = self.value(x);
        let y = self.backend().avg_pool2d(&xv, &attrs)?;
        let x_shape = xv.shape4("avg_pool2d")?;
        Ok(self.record("avg_pool2d", y, &[x], move |be, dy| {
            Ok(vec![Some(be.avg_pool2d_backward(dy, x_shape, &attrs)?)])
        }))
    }

    /// Bilinear resampling to `out_hw` (`align_corners = false`).
    pub fn upsample_bilinear(&self, x: Var, out_hw: [usize; 2]) -> Result<Var> {
        let xv = self.value(x);
        let y = self.backend().upsample_bilinear(&xv, out_hw)?;
        let x_shape = xv.shape4("upsample_bilinear")?;
        Ok(self.record("upsample_bilinear", y, &[x], move |be, dy| {
            Ok(vec![Some(be.upsample_bilinear_backward(dy, x_shape)?)])
        }))
    }

    // ---- activations and normalisation -----------------------------------------------------

    pub fn activation(&self, x: Var, kind: Activation) -> Result<Var> {
        let xv = self.value(x);
        let y = self.backend().activation(&xv, kind)?;
        let yv = y.clone();
        Ok(self.record("activation", y, &[x], move |be, dy| {
            Ok(vec![Some(be.activation_backward(&xv, &yv, dy, kind)?)])
        }))
    }

    pub fn relu(&self, x: Var) -> Result<Var> {
        self.activation(x, Activation::Relu)
    }

    pub fn sigmoid(&self, x: Var) -> Result<Var> {
        self.activation(x, Activation::Sigmoid)
    }

    pub fn tanh(&self, x: Var) -> Result<Var> {
        self.activation(x, Activation::Tanh)
    }

    /// Batch normalisation over `(N, H, W)`. In training mode it normalises with batch statistics
    /// and updates `stats`; otherwise it uses them, unchanged.
    pub fn batch_norm(
        &self,
        x: Var,
        gamma: Var,
        beta: Var,
        stats: &mut RunningStats,
        attrs: BatchNormAttrs,
        training: bool,
    ) -> Result<Var> {
        let (xv, gv, bv) = (self.value(x), self.value(gamma), self.value(beta));
        let be = self.backend();
        let (y, saved) = if training {
            be.batch_norm_train(&xv, &gv, &bv, &mut stats.mean, &mut stats.var, &attrs)?
        } else {
            be.batch_norm_eval(&xv, &gv, &bv, &stats.mean, &stats.var, &attrs)?
        };
        Ok(
            self.record("batch_norm", y, &[x, gamma, beta], move |be, dy| {
                let (dx, dg, db) = be.batch_norm_backward(&xv, dy, &gv, &saved, training)?;
                Ok(vec![Some(dx), Some(dg), Some(db)])
            }),
        )
    }

    /// `relu(batch_norm(x))` as one op, so that a backend may fuse the two (one pass over the
    /// activation each way instead of two); the same values as the two ops in a row.
    pub fn batch_norm_relu(
        &self,
        x: Var,
        gamma: Var,
        beta: Var,
        stats: &mut RunningStats,
        attrs: BatchNormAttrs,
        training: bool,
    ) -> Result<Var> {
        let (xv, gv, bv) = (self.value(x), self.value(gamma), self.value(beta));
        let be = self.backend();
        let (y, saved) = if training {
            be.batch_norm_relu_train(&xv, &gv, &bv, &mut stats.mean, &mut stats.var, &attrs)?
        } else {
            be.batch_norm_relu_eval(&xv, &gv, &bv, &stats.mean, &stats.var, &attrs)?
        };
        let yv = y.clone();
        Ok(
            self.record("batch_norm_relu", y, &[x, gamma, beta], move |be, dy| {
                let (dx, dg, db) = if training {
                    be.batch_norm_relu_backward(&xv, &yv, dy, &gv, &saved)?
                } else {
                    let dz = be.activation_backward(&yv, &yv, dy, Activation::Relu)?;
                    be.batch_norm_backward(&xv, &dz, &gv, &saved, false)?
                };
                Ok(vec![Some(dx), Some(dg), Some(db)])
            }),
        )
    }

    /// Softmax over dimension 1 (per pixel across channels).
    pub fn softmax(&self, x: Var) -> Result<Var> {
        let y = self.backend().softmax(&self.value(x))?;
        let yv = y.clone();
        Ok(self.record("softmax", y, &[x], move |be, dy| {
            Ok(vec![Some(be.softmax_backward(&yv, dy)?)])
        }))
    }

    /// Log-softmax over dimension 1 (per pixel across channels).
    pub fn log_softmax(&self, x: Var) -> Result<Var> {
        let y = self.backend().log_softmax(&self.value(x))?;
        let yv = y.clone();
        Ok(self.record("log_softmax", y, &[x], move |be, dy| {
            Ok(vec![Some(be.log_softmax_backward(&yv, dy)?)])
        }))
    }

    /// Inverted dropout with probability `p`, reproducible from `seed`. Identity when not recording.
    pub fn dropout(&self, x: Var, p: f32, seed: u64) -> Result<Var> {
        if !self.is_recording() || p == 0.0 {
            return Ok(x);
        }
        let (y, mask) = self.backend().dropout(&self.value(x), p, seed)?;
        Ok(self.record("dropout", y, &[x], move |be, dy| {
            Ok(vec![Some(be.mul(dy, &mask)?)])
        }))
    }

    // ---- shape -----------------------------------------------------------------------------

    /// Concatenation along `dim` (channel skip connections use `dim = 1`).
    pub fn concat(&self, parts: &[Var], dim: usize) -> Result<Var> {
        let values = self.values(parts);
        let refs: Vec<&Tensor> = values.iter().collect();
        let y = self.backend().concat(&refs, dim)?;
        let sizes: Vec<usize> = values.iter().map(|v| v.shape()[dim]).collect();
        Ok(self.record("concat", y, parts, move |be, dy| {
            Ok(be.split(dy, dim, &sizes)?.into_iter().map(Some).collect())
        }))
    }

    /// Splits along `dim` into parts of `sizes`.
    pub fn split(&self, x: Var, dim: usize, sizes: &[usize]) -> Result<Vec<Var>> {
        let xv = self.value(x);
        let parts = self.backend().split(&xv, dim, sizes)?;
        let full = xv.shape().to_vec();
        let mut start = 0;
        let mut out = Vec::with_capacity(parts.len());
        for (part, &len) in parts.into_iter().zip(sizes) {
            let (full, before) = (full.clone(), start);
            start += len;
            out.push(self.record("split", part, &[x], move |be, dy| {
                // Place dy at its offset inside zeros of the full shape.
                let mut pieces = Vec::new();
                let mut zeros_shape = full.clone();
                if before > 0 {
                    zeros_shape[dim] = before;
                    pieces.push(be.full(&zeros_shape, 0.0)?);
                }
                pieces.push(dy.clone());
                let after = full[dim] - before - len;
                if after > 0 {
                    zeros_shape[dim] = after;
                    pieces.push(be.full(&zeros_shape, 0.0)?);
                }
                let refs: Vec<&Tensor> = pieces.iter().collect();
                Ok(vec![Some(be.concat(&refs, dim)?)])
            }));
        }
        Ok(out)
    }

    /// Zero padding of the last two dimensions by `[top, bottom, left, right]`.
    pub fn pad2d(&self, x: Var, pads: [usize; 4]) -> Result<Var> {
        let y = self.backend().pad2d(&self.value(x), pads)?;
        Ok(self.record("pad2d", y, &[x], move |be, dy| {
            Ok(vec![Some(be.crop2d(dy, pads)?)])
        }))
    }

    /// Removes `[top, bottom, left, right]` rows and columns of the last two dimensions.
    pub fn crop2d(&self, x: Var, pads: [usize; 4]) -> Result<Var> {
        let y = self.backend().crop2d(&self.value(x), pads)?;
        Ok(self.record("crop2d", y, &[x], move |be, dy| {
            Ok(vec![Some(be.pad2d(dy, pads)?)])
        }))
    }

    /// The same values under another shape.
    pub fn reshape(&self, x: Var, shape: &[usize]) -> Result<Var> {
        let xv = self.value(x);
        let y = xv.reshape(shape)?;
        let x_shape = xv.shape().to_vec();
        Ok(self.record("reshape", y, &[x], move |_, dy| {
            Ok(vec![Some(dy.reshape(&x_shape)?)])
        }))
    }

    // ---- elementwise and reductions --------------------------------------------------------

    pub fn add(&self, a: Var, b: Var) -> Result<Var> {
        let y = self.backend().add(&self.value(a), &self.value(b))?;
        Ok(self.record("add", y, &[a, b], |_, dy| {
            Ok(vec![Some(dy.clone()), Some(dy.clone())])
        }))
    }

    pub fn sub(&self, a: Var, b: Var) -> Result<Var> {
        let y = self.backend().sub(&self.value(a), &self.value(b))?;
        Ok(self.record("sub", y, &[a, b], |be, dy| {
            Ok(vec![Some(dy.clone()), Some(be.affine(dy, -1.0, 0.0)?)])
        }))
    }

    pub fn mul(&self, a: Var, b: Var) -> Result<Var> {
        let (av, bv) = (self.value(a), self.value(b));
        let y = self.backend().mul(&av, &bv)?;
        Ok(self.record("mul", y, &[a, b], move |be, dy| {
            Ok(vec![Some(be.mul(dy, &bv)?), Some(be.mul(dy, &av)?)])
        }))
    }

    /// `alpha · x`.
    pub fn scale(&self, x: Var, alpha: f32) -> Result<Var> {
        let y = self.backend().affine(&self.value(x), alpha, 0.0)?;
        Ok(self.record("scale", y, &[x], move |be, dy| {
            Ok(vec![Some(be.affine(dy, alpha, 0.0)?)])
        }))
    }

    /// Adds a per-channel vector `b: [C]` along dimension 1.
    pub fn add_channel_bias(&self, x: Var, b: Var) -> Result<Var> {
        let y = self
            .backend()
            .add_channel_bias(&self.value(x), &self.value(b))?;
        Ok(self.record("add_channel_bias", y, &[x, b], |be, dy| {
            Ok(vec![Some(dy.clone()), Some(be.sum_per_channel(dy)?)])
        }))
    }

    /// Sum of all elements (a scalar).
    pub fn sum(&self, x: Var) -> Result<Var> {
        let xv = self.value(x);
        let y = self.backend().sum_all(&xv)?;
        let shape = xv.shape().to_vec();
        Ok(self.record("sum", y, &[x], move |be, dy| {
            Ok(vec![Some(be.broadcast_scalar(dy, &shape)?)])
        }))
    }

    /// Mean of all elements (a scalar).
    pub fn mean(&self, x: Var) -> Result<Var> {
        let n = self.value(x).numel();
        if n == 0 {
            return Err(OpError::Graph("mean of an empty tensor".to_string()));
        }
        let s = self.sum(x)?;
        self.scale(s, 1.0 / n as f32)
    }

    // ---- losses ----------------------------------------------------------------------------

    /// Mean pixel-wise cross-entropy of `logits: [N, C, ...]` against integer `labels: [N, ...]`,
    /// with optional class weights and an ignored label (PyTorch semantics).
    pub fn cross_entropy(
        &self,
        logits: Var,
        labels: &Tensor,
        class_weights: Option<&Tensor>,
        ignore_index: Option<i64>,
    ) -> Result<Var> {
        let (loss, dlogits) = self.backend().cross_entropy(
            &self.value(logits),
            labels,
            class_weights,
            ignore_index,
        )?;
        Ok(self.record(
            "cross_entropy",
            loss,
            &[logits],
            move |be: &dyn Backend, dy| {
                let scale = be.broadcast_scalar(dy, dlogits.shape())?;
                Ok(vec![Some(be.mul(&dlogits, &scale)?)])
            },
        ))
    }

    /// Mean cross-entropy weighted per pixel (`Σ wᵢ·CEᵢ / Σ wᵢ`), `pixel_weights` shaped like the
    /// labels. The weights are constants (no gradient flows into them).
    pub fn pixel_weighted_cross_entropy(
        &self,
        logits: Var,
        labels: &Tensor,
        pixel_weights: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<Var> {
        let (loss, dlogits) = self.backend().pixel_weighted_cross_entropy(
            &self.value(logits),
            labels,
            pixel_weights,
            ignore_index,
        )?;
        Ok(self.record(
            "pixel_weighted_cross_entropy",
            loss,
            &[logits],
            move |be: &dyn Backend, dy| {
                let scale = be.broadcast_scalar(dy, dlogits.shape())?;
                Ok(vec![Some(be.mul(&dlogits, &scale)?)])
            },
        ))
    }

    /// Soft multi-class Dice loss of the softmax of `logits` against integer `labels`.
    pub fn soft_dice(
        &self,
        logits: Var,
        labels: &Tensor,
        eps: f32,
        ignore_index: Option<i64>,
    ) -> Result<Var> {
        let (loss, dlogits) =
            self.backend()
                .soft_dice(&self.value(logits), labels, eps, ignore_index)?;
        Ok(
            self.record("soft_dice", loss, &[logits], move |be: &dyn Backend, dy| {
                let scale = be.broadcast_scalar(dy, dlogits.shape())?;
                Ok(vec![Some(be.mul(&dlogits, &scale)?)])
            }),
        )
    }
}
