//! Batch normalisation on the CPU: per-channel statistics in f64, parallel over channels.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::elementwise::same_shape;
use crate::attrs::BatchNormAttrs;
use crate::backend::{BatchNormSaved, FusedOps, NormOps};
use crate::error::{OpError, Result, shape_err};

/// `(outer, channels, inner)` of a tensor normalised over every dimension but 1.
fn split_dims(x: &Tensor, op: &'static str) -> Result<(usize, usize, usize)> {
    let s = x.shape();
    if s.len() < 2 {
        return shape_err(op, "input", s, "[N, C, ...]");
    }
    Ok((s[0], s[1], s[2..].iter().product()))
}

fn check_vec(op: &'static str, what: &'static str, t: &Tensor, c: usize) -> Result<()> {
    if t.shape() != [c] {
        return shape_err(op, what, t.shape(), format!("[{c}]"));
    }
    Ok(())
}

/// Sums `f(value, channel)` over one channel's elements.
fn channel_fold(
    xd: &[f32],
    (outer, c, inner): (usize, usize, usize),
    ch: usize,
    f: impl Fn(f32) -> f64,
) -> f64 {
    (0..outer)
        .map(|n| {
            let start = (n * c + ch) * inner;
            xd[start..start + inner].iter().map(|&v| f(v)).sum::<f64>()
        })
        .sum()
}

/// `y = gamma·(x − mean)·inv_std + beta`, parallel over `(n, c)` planes.
fn normalise(
    xd: &[f32],
    dims: (usize, usize, usize),
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f32> {
    let (_, c, inner) = dims;
    let mut y = vec![0.0f32; xd.len()];
    if inner == 0 {
        return y;
    }
    y.par_chunks_mut(inner).enumerate().for_each(|(p, out)| {
        let ch = p % c;
        let scale = gamma[ch] * inv_std[ch];
        let shift = beta[ch] - mean[ch] * scale;
        for (o, &v) in out.iter_mut().zip(&xd[p * inner..(p + 1) * inner]) {
            *o = v * scale + shift;
        }
    });
    y
}

/// The shape checks of batch norm, shared with the CUDA backend so that both refuse the same
/// inputs with the same typed errors.
impl CpuBackend {
    /// Checks `x` `[N, C, ...]` against the per-channel vectors; returns `(outer, C, inner)`.
    /// Training also needs more than one value per channel.
    pub(crate) fn check_batch_norm(
        op: &'static str,
        x: &Tensor,
        vectors: [(&'static str, &Tensor); 4],
        training: bool,
    ) -> Result<(usize, usize, usize)> {
        let dims = split_dims(x, op)?;
        let (outer, c, inner) = dims;
        for (what, t) in vectors {
            check_vec(op, what, t, c)?;
        }
        if training && outer * inner < 2 {
            return Err(OpError::Attr {
                op,
                reason: format!(
                    "training needs more than one value per channel, got input {:?}",
                    x.shape()
                ),
            });
        }
        Ok(dims)
    }

    /// Checks the operands of `batch_norm_backward`; returns `(outer, C, inner)`.
    pub(crate) fn check_batch_norm_backward(
        x: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(usize, usize, usize)> {
        const OP: &str = "batch_norm_backward";
        same_shape(OP, x, dy)?;
        let dims = split_dims(x, OP)?;
        check_vec(OP, "gamma", gamma, dims.1)?;
        check_vec(OP, "saved mean", &saved.mean, dims.1)?;
        check_vec(OP, "saved inv_std", &saved.inv_std, dims.1)?;
        Ok(dims)
    }
}

impl NormOps for CpuBackend {
    fn batch_norm_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let dims = Self::check_batch_norm(
            "batch_norm_train",
            x,
            [
                ("gamma", gamma),
                ("beta", beta),
                ("running_mean", running_mean),
                ("running_var", running_var),
            ],
            true,
        )?;
        let (outer, c, inner) = dims;
        let m = outer * inner;
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let stats: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mean = channel_fold(xd, dims, ch, |v| v as f64) / m as f64;
                let var = channel_fold(xd, dims, ch, |v| (v as f64 - mean).powi(2)) / m as f64;
                (mean, var)
            })
            .collect();
        let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
        let inv_std: Vec<f32> = stats
            .iter()
            .map(|s| (1.0 / (s.1 + attrs.eps as f64).sqrt()) as f32)
            .collect();
        let mom = attrs.momentum;
        let unbias = m as f64 / (m - 1) as f64;
        for (r, s) in running_mean.host_data_mut()?.iter_mut().zip(&stats) {
            *r = (1.0 - mom) * *r + mom * s.0 as f32;
        }
        for (r, s) in running_var.host_data_mut()?.iter_mut().zip(&stats) {
            *r = (1.0 - mom) * *r + mom * (s.1 * unbias) as f32;
        }
        let y = normalise(xd, dims, &mean, &inv_std, &gamma.to_vec()?, &beta.to_vec()?);
        Ok((
            Tensor::from_vec(y, x.shape())?,
            BatchNormSaved {
                mean: Tensor::from_vec(mean, &[c])?,
                inv_std: Tensor::from_vec(inv_std, &[c])?,
            },
        ))
    }

    fn batch_norm_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let dims = Self::check_batch_norm(
            "batch_norm_eval",
            x,
            [
                ("gamma", gamma),
                ("beta", beta),
                ("running_mean", running_mean),
                ("running_var", running_var),
            ],
            false,
        )?;
        let c = dims.1;
        let mean = running_mean.to_vec()?;
        let inv_std: Vec<f32> = running_var
            .to_vec()?
            .iter()
            .map(|v| 1.0 / (v + attrs.eps).sqrt())
            .collect();
        let x = x.contiguous()?;
        let y = normalise(
            x.host_data()?,
            dims,
            &mean,
            &inv_std,
            &gamma.to_vec()?,
            &beta.to_vec()?,
        );
        Ok((
            Tensor::from_vec(y, x.shape())?,
            BatchNormSaved {
                mean: Tensor::from_vec(mean, &[c])?,
                inv_std: Tensor::from_vec(inv_std, &[c])?,
            },
        ))
    }

    fn batch_norm_backward(
        &self,
        x: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
        batch_statistics: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let dims = Self::check_batch_norm_backward(x, dy, gamma, saved)?;
        let (outer, c, inner) = dims;
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let (xd, dyd) = (x.host_data()?, dy.host_data()?);
        let (mean, inv_std, g) = (
            saved.mean.to_vec()?,
            saved.inv_std.to_vec()?,
            gamma.to_vec()?,
        );
        // Per channel: dbeta = Σ dy, dgamma = Σ dy·x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
                for n in 0..outer {
                    let start = (n * c + ch) * inner;
                    for (&v, &d) in xd[start..start + inner]
                        .iter()
                        .zip(&dyd[start..start + inner])
                    {
                        sdy += d as f64;
                        sdyx += d as f64 * ((v - mean[ch]) * inv_std[ch]) as f64;
                    }
                }
                (sdy, sdyx)
            })
            .collect();
        let m = (outer * inner) as f32;
        let mut dx = vec![0.0f32; xd.len()];
        if inner > 0 {
            dx.par_chunks_mut(inner).enumerate().for_each(|(p, out)| {
                let ch = p % c;
                let k = g[ch] * inv_std[ch];
                let (sdy, sdyx) = (sums[ch].0 as f32, sums[ch].1 as f32);
                let range = p * inner..(p + 1) * inner;
                for ((o, &v), &d) in out.iter_mut().zip(&xd[range.clone()]).zip(&dyd[range]) {
                    *o = if batch_statistics {
                        let xhat = (v - mean[ch]) * inv_std[ch];
                        k * (d - sdy / m - xhat * sdyx / m)
                    } else {
                        k * d
                    };
                }
            });
        }
        let dgamma = sums.iter().map(|s| s.1 as f32).collect();
        let dbeta = sums.iter().map(|s| s.0 as f32).collect();
        Ok((
            Tensor::from_vec(dx, x.shape())?,
            Tensor::from_vec(dgamma, &[c])?,
            Tensor::from_vec(dbeta, &[c])?,
        ))
    }
}

/// The reference: batch norm and ReLU composed (the trait's defaults).
impl FusedOps for CpuBackend {}
