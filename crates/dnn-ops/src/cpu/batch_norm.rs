//! Batch normalisation on the CPU, alone and fused with a following ReLU: per-channel
//! statistics combined in f64, parallel over channels.
//!
//! Every per-channel sum runs over blocks of [`BLOCK`] values summed in 16 f32 lanes (which
//! the compiler vectorises) and combines the blocks in f64, in a fixed order: the results do not
//! depend on the thread count. The statistics take one read of the input (a block's deviations
//! about its own mean are summed while it is in L1, and blocks are merged by Chan et al.'s
//! pairwise update), the fused forward pass writes `max(0, x·scale + shift)` in one more, and
//! the fused backward pass folds the ReLU mask into the norm's two sums and its data gradient.
//! In training both directions take one task per channel for both of their passes (given at
//! least one channel per thread), so the second pass reads the channel's planes from the core's
//! L2, where the first left them.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::written_in_full;
use super::elementwise::same_shape;
use super::reduce::{BLOCK, lane_sum};
use super::vectorized::vectorized;
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

/// The planes `[inner]` of channel `ch` in a `(outer, c, inner)` tensor, in order.
fn channel_planes(
    data: &[f32],
    (outer, c, inner): (usize, usize, usize),
    ch: usize,
) -> impl Iterator<Item = &[f32]> {
    (0..outer).map(move |n| &data[(n * c + ch) * inner..(n * c + ch + 1) * inner])
}

/// One channel's mean and (biased) variance: per block its f32 sum and its squared deviations
/// about its own mean, merged into f64 totals by the pairwise update.
#[inline(always)]
fn channel_moments(xd: &[f32], dims: (usize, usize, usize), ch: usize) -> (f64, f64) {
    let (mut count, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
    for plane in channel_planes(xd, dims, ch) {
        for block in plane.chunks(BLOCK) {
            let nb = block.len() as f64;
            let block_mean = lane_sum(block, block, block, |x, _, _| x) / block.len() as f32;
            let block_m2 = lane_sum(block, block, block, |x, _, _| {
                let d = x - block_mean;
                d * d
            });
            let total = count + nb;
            let delta = f64::from(block_mean) - mean;
            mean += delta * nb / total;
            m2 += f64::from(block_m2) + delta * delta * count * nb / total;
            count = total;
        }
    }
    if count == 0.0 {
        return (0.0, 0.0);
    }
    (mean, m2 / count)
}

/// `1 / √(var + eps)` of a channel's (biased) variance, in f64, rounded to f32 once.
fn inv_std_of(var: f64, eps: f64) -> f32 {
    (1.0 / (var + eps).sqrt()) as f32
}

/// One channel's `(scale, shift)` = `(gamma·inv_std, beta − mean·scale)`: `y = x·scale + shift`.
fn channel_coefficients(mean: f32, inv_std: f32, gamma: f32, beta: f32) -> (f32, f32) {
    let scale = gamma * inv_std;
    (scale, beta - mean * scale)
}

/// Every channel's `scale`, then every channel's `shift`.
type Coefficients = (Vec<f32>, Vec<f32>);

/// Per channel `(scale, shift)` ([`channel_coefficients`]).
fn coefficients(mean: &[f32], inv_std: &[f32], gamma: &[f32], beta: &[f32]) -> Coefficients {
    (0..mean.len())
        .map(|ch| channel_coefficients(mean[ch], inv_std[ch], gamma[ch], beta[ch]))
        .unzip()
}

/// `out = src·scale + shift` (then `max(0, ·)` when `relu`) over one plane.
#[inline(always)]
fn normalise_plane(src: &[f32], out: &mut [f32], scale: f32, shift: f32, relu: bool) {
    if relu {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = (v * scale + shift).max(0.0);
        }
    } else {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v * scale + shift;
        }
    }
}

/// `y = x·scale + shift` per channel (then `max(0, ·)` when `relu`), parallel over `(n, c)`
/// planes (evaluation: the coefficients are known before the pass).
fn normalise(
    xd: &[f32],
    dims: (usize, usize, usize),
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    let (_, c, inner) = dims;
    let mut y = written_in_full(xd.len());
    if inner == 0 {
        return y;
    }
    y.par_chunks_mut(inner).enumerate().for_each(|(p, out)| {
        let ch = p % c;
        let src = &xd[p * inner..(p + 1) * inner];
        vectorized(|| normalise_plane(src, out, scale[ch], shift[ch], relu))
    });
    y
}

/// The planes of `data` (`(outer, c, inner)`) grouped by channel, each channel's in image
/// order: one task per channel can then write its planes while the channel's input, just
/// read for its statistics, is still in the core's L2.
fn planes_by_channel(
    data: &mut [f32],
    (outer, c, inner): (usize, usize, usize),
) -> Vec<Vec<&mut [f32]>> {
    let mut by_channel: Vec<Vec<&mut [f32]>> = (0..c).map(|_| Vec::with_capacity(outer)).collect();
    if inner > 0 {
        for (p, plane) in data.chunks_mut(inner).enumerate() {
            by_channel[p % c].push(plane);
        }
    }
    by_channel
}

/// Training-mode batch norm (then ReLU when `relu`): per channel, in one task, its mean and
/// variance (f64), then its planes normalised with `scale = gamma·inv_std` and
/// `shift = beta − mean·scale` (with fewer channels than threads, the statistics first and then
/// every plane in parallel). Returns `y`, each channel's `(mean, variance)` and the
/// coefficients `(scale, shift)` the pass used.
fn normalise_with_batch_statistics(
    xd: &[f32],
    dims: (usize, usize, usize),
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Vec<(f64, f64)>, Coefficients) {
    let coefficients_of = |ch: usize, (mean, var): (f64, f64)| {
        channel_coefficients(mean as f32, inv_std_of(var, eps), gamma[ch], beta[ch])
    };
    if dims.1 < rayon::current_num_threads() {
        // Fewer channels than threads: the statistics per channel, then all (n, c) planes.
        let stats: Vec<(f64, f64)> = (0..dims.1)
            .into_par_iter()
            .map(|ch| vectorized(|| channel_moments(xd, dims, ch)))
            .collect();
        let (scale, shift): Coefficients = stats
            .iter()
            .enumerate()
            .map(|(ch, &moments)| coefficients_of(ch, moments))
            .unzip();
        let y = normalise(xd, dims, &scale, &shift, relu);
        return (y, stats, (scale, shift));
    }
    let mut y = written_in_full(xd.len());
    let per_channel: Vec<_> = planes_by_channel(&mut y, dims)
        .into_par_iter()
        .enumerate()
        .map(|(ch, outs)| {
            vectorized(|| {
                let moments = channel_moments(xd, dims, ch);
                let (scale, shift) = coefficients_of(ch, moments);
                for (out, src) in outs.into_iter().zip(channel_planes(xd, dims, ch)) {
                    normalise_plane(src, out, scale, shift, relu);
                }
                (moments, scale, shift)
            })
        })
        .collect();
    let stats = per_channel.iter().map(|&(moments, _, _)| moments).collect();
    let coefficients = per_channel.iter().map(|&(_, scale, shift)| (scale, shift));
    (y, stats, coefficients.unzip())
}

/// Where the backward pass of a batch norm fused with a ReLU takes the ReLU's mask from.
#[derive(Clone, Copy)]
enum ReluMask<'a> {
    /// No ReLU: the gradient passes whole.
    None,
    /// The ReLU's output `y`: `y > 0`.
    Output(&'a [f32]),
    /// The forward pass's per-channel `(scale, shift)`: `x·scale + shift > 0`, the very test
    /// (same operands, same operations) behind the forward's `max(0, x·scale + shift)`, without
    /// reading `y` (one operand less in each of the backward's two passes).
    Coefficients(&'a [f32], &'a [f32]),
}

/// The per-channel sums of the backward pass, `(Σ dz, Σ dz·(x − mean))` in f64, where `dz` is
/// `dy` masked by the ReLU's mask, if any.
#[inline(always)]
fn channel_grad_sums(
    xd: &[f32],
    dyd: &[f32],
    relu: ReluMask,
    dims: (usize, usize, usize),
    ch: usize,
    mean: f32,
) -> (f64, f64) {
    let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
    let planes = channel_planes(xd, dims, ch).zip(channel_planes(dyd, dims, ch));
    for (n, (xp, dp)) in planes.enumerate() {
        let (_, c, inner) = dims;
        for start in (0..inner).step_by(BLOCK) {
            let end = (start + BLOCK).min(inner);
            let (xb, db) = (&xp[start..end], &dp[start..end]);
            let (s1, s2) = match relu {
                ReluMask::Output(y) => {
                    let yb = &y[(n * c + ch) * inner + start..(n * c + ch) * inner + end];
                    let dz = |d: f32, y: f32| d * f32::from(y > 0.0);
                    (
                        lane_sum(db, yb, yb, |d, y, _| dz(d, y)),
                        lane_sum(db, yb, xb, |d, y, x| dz(d, y) * (x - mean)),
                    )
                }
                ReluMask::Coefficients(scale, shift) => {
                    let (sc, sh) = (scale[ch], shift[ch]);
                    let dz = |d: f32, x: f32| d * f32::from(x * sc + sh > 0.0);
                    (
                        lane_sum(db, xb, xb, |d, x, _| dz(d, x)),
                        lane_sum(db, xb, xb, |d, x, _| dz(d, x) * (x - mean)),
                    )
                }
                ReluMask::None => (
                    lane_sum(db, db, db, |d, _, _| d),
                    lane_sum(db, xb, xb, |d, x, _| d * (x - mean)),
                ),
            };
            sdy += f64::from(s1);
            sdyx += f64::from(s2);
        }
    }
    (sdy, sdyx)
}

/// One plane of the data gradient, `dx = k·dz − b − (x − mean)·e`, for plane `p` (`(n, c)`
/// flattened) of channel `ch`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad_plane(
    out: &mut [f32],
    xd: &[f32],
    dyd: &[f32],
    relu: ReluMask,
    (p, ch, inner): (usize, usize, usize),
    k: f32,
    (b, e): (f32, f32),
    mu: f32,
) {
    let range = p * inner..(p + 1) * inner;
    let (xs, ds) = (&xd[range.clone()], &dyd[range.clone()]);
    match relu {
        ReluMask::Output(y) => {
            let ys = &y[range];
            let dz = |d: f32, y: f32| d * f32::from(y > 0.0);
            for (((o, &v), &d), &y) in out.iter_mut().zip(xs).zip(ds).zip(ys) {
                *o = k * dz(d, y) - b - (v - mu) * e;
            }
        }
        ReluMask::Coefficients(scale, shift) => {
            let (sc, sh) = (scale[ch], shift[ch]);
            let dz = |d: f32, x: f32| d * f32::from(x * sc + sh > 0.0);
            for ((o, &v), &d) in out.iter_mut().zip(xs).zip(ds) {
                *o = k * dz(d, v) - b - (v - mu) * e;
            }
        }
        ReluMask::None => {
            for ((o, &v), &d) in out.iter_mut().zip(xs).zip(ds) {
                *o = k * d - b - (v - mu) * e;
            }
        }
    }
}

/// `(dx, dgamma, dbeta)` of batch norm (followed by a ReLU whose mask `relu` gives, if any).
#[allow(clippy::too_many_arguments)]
fn backward(
    xd: &[f32],
    dyd: &[f32],
    relu: ReluMask,
    dims: (usize, usize, usize),
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    batch_statistics: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (outer, c, inner) = dims;
    let m = (outer * inner) as f32;
    // Per channel: dbeta = Σ dz, dgamma = Σ dz·x̂ = inv_std · Σ dz·(x − mean).
    let sums_of = |ch: usize| {
        let (sdy, sdxm) = channel_grad_sums(xd, dyd, relu, dims, ch, mean[ch]);
        (sdy, sdxm * f64::from(inv_std[ch]))
    };
    // dx = k·(dz − Σdz/m − x̂·Σdz·x̂/m) = k·dz − b − (x − mean)·e
    let terms = |ch: usize, (sdy, sdyx): (f64, f64)| {
        let k = gamma[ch] * inv_std[ch];
        let be = if batch_statistics {
            let (sdy, sdyx) = (sdy as f32, sdyx as f32);
            (k * sdy / m, k * inv_std[ch] * sdyx / m)
        } else {
            (0.0, 0.0)
        };
        (k, be)
    };
    let mut dx = written_in_full(xd.len());
    let sums: Vec<(f64, f64)> = if c >= rayon::current_num_threads() {
        // One task per channel for both passes: its x and dy are still in L2 for the second.
        planes_by_channel(&mut dx, dims)
            .into_par_iter()
            .enumerate()
            .map(|(ch, outs)| {
                vectorized(|| {
                    let sums = sums_of(ch);
                    let (k, be) = terms(ch, sums);
                    for (n, out) in outs.into_iter().enumerate() {
                        grad_plane(out, xd, dyd, relu, (n * c + ch, ch, inner), k, be, mean[ch]);
                    }
                    sums
                })
            })
            .collect()
    } else {
        // Fewer channels than threads: the sums per channel, then dx over all (n, c) planes.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| vectorized(|| sums_of(ch)))
            .collect();
        if inner > 0 {
            dx.par_chunks_mut(inner).enumerate().for_each(|(p, out)| {
                let ch = p % c;
                let (k, be) = terms(ch, sums[ch]);
                vectorized(|| grad_plane(out, xd, dyd, relu, (p, ch, inner), k, be, mean[ch]));
            });
        }
        sums
    };
    let dgamma = sums.iter().map(|s| s.1 as f32).collect();
    let dbeta = sums.iter().map(|s| s.0 as f32).collect();
    (dx, dgamma, dbeta)
}

/// The shape checks of batch norm, shared with the CUDA backend so that both refuse the same
/// inputs with the same typed errors.
impl CpuBackend {
    /// Checks `x` `[N, C, ...]` against the per-channel vectors (gamma, beta, running mean and
    /// variance); returns `(outer, C, inner)`.
    /// Training also needs more than one value per channel.
    pub(crate) fn check_batch_norm(
        op: &'static str,
        x: &Tensor,
        [gamma, beta, running_mean, running_var]: [&Tensor; 4],
        training: bool,
    ) -> Result<(usize, usize, usize)> {
        let dims = split_dims(x, op)?;
        let (outer, c, inner) = dims;
        let named = [
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ];
        for (what, t) in named {
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

impl CpuBackend {
    /// Batch norm in training mode, followed by a ReLU when `relu`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train_impl(
        op: &'static str,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
        relu: bool,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let dims = Self::check_batch_norm(op, x, [gamma, beta, running_mean, running_var], true)?;
        let (outer, c, inner) = dims;
        let m = outer * inner;
        let x = x.contiguous()?;
        let (gamma, beta) = (gamma.to_vec()?, beta.to_vec()?);
        let (y, stats, used) = normalise_with_batch_statistics(
            x.host_data()?,
            dims,
            &gamma,
            &beta,
            attrs.eps as f64,
            relu,
        );
        let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
        let inv_std: Vec<f32> = stats
            .iter()
            .map(|s| inv_std_of(s.1, attrs.eps as f64))
            .collect();
        let mom = attrs.momentum;
        let unbias = m as f64 / (m - 1) as f64;
        for (r, s) in running_mean.host_data_mut()?.iter_mut().zip(&stats) {
            *r = (1.0 - mom) * *r + mom * s.0 as f32;
        }
        for (r, s) in running_var.host_data_mut()?.iter_mut().zip(&stats) {
            *r = (1.0 - mom) * *r + mom * (s.1 * unbias) as f32;
        }
        let mask = relu.then_some(used);
        Self::with_saved(y, x.shape(), c, mean, inv_std, mask)
    }

    /// Batch norm with the running statistics, followed by a ReLU when `relu`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_eval_impl(
        op: &'static str,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        attrs: &BatchNormAttrs,
        relu: bool,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let dims = Self::check_batch_norm(op, x, [gamma, beta, running_mean, running_var], false)?;
        let mean = running_mean.to_vec()?;
        let inv_std: Vec<f32> = running_var
            .to_vec()?
            .iter()
            .map(|v| 1.0 / (v + attrs.eps).sqrt())
            .collect();
        Self::normalised(&x.contiguous()?, dims, mean, inv_std, gamma, beta, relu)
    }

    /// [`normalise`]d contiguous `x` and the statistics it used, as tensors.
    #[allow(clippy::too_many_arguments)]
    fn normalised(
        x: &Tensor,
        dims: (usize, usize, usize),
        mean: Vec<f32>,
        inv_std: Vec<f32>,
        gamma: &Tensor,
        beta: &Tensor,
        relu: bool,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let (scale, shift) = coefficients(&mean, &inv_std, &gamma.to_vec()?, &beta.to_vec()?);
        let y = normalise(x.host_data()?, dims, &scale, &shift, relu);
        let mask = relu.then_some((scale, shift));
        Self::with_saved(y, x.shape(), dims.1, mean, inv_std, mask)
    }

    /// `y` and the statistics it used, as tensors. With a ReLU (`mask`: its per-channel
    /// coefficients), its backward pass takes the mask from the input through the same
    /// coefficients (`ReluMask::Coefficients`).
    fn with_saved(
        y: Vec<f32>,
        shape: &[usize],
        c: usize,
        mean: Vec<f32>,
        inv_std: Vec<f32>,
        mask: Option<Coefficients>,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let relu_mask = match mask {
            Some((scale, shift)) => Some((
                Tensor::from_vec(scale, &[c])?,
                Tensor::from_vec(shift, &[c])?,
            )),
            None => None,
        };
        Ok((
            Tensor::from_vec(y, shape)?,
            BatchNormSaved {
                mean: Tensor::from_vec(mean, &[c])?,
                inv_std: Tensor::from_vec(inv_std, &[c])?,
                relu_mask,
            },
        ))
    }

    /// Batch norm's backward pass (through a ReLU with output `relu_y` first, if given).
    fn batch_norm_backward_impl(
        x: &Tensor,
        relu_y: Option<&Tensor>,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
        batch_statistics: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let dims = Self::check_batch_norm_backward(x, dy, gamma, saved)?;
        let c = dims.1;
        if let Some(y) = relu_y {
            same_shape("batch_norm_relu_backward", x, y)?;
        }
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        // The mask from the forward pass's coefficients where it kept them, else from the
        // ReLU's output.
        let coefficients = match (&saved.relu_mask, relu_y) {
            (Some((scale, shift)), Some(_)) => {
                for v in [scale, shift] {
                    if v.shape() != [c] {
                        return shape_err(
                            "batch_norm_relu_backward",
                            "saved ReLU mask coefficients",
                            v.shape(),
                            format!("[{c}]"),
                        );
                    }
                }
                Some((scale.to_vec()?, shift.to_vec()?))
            }
            _ => None,
        };
        let y = match (&coefficients, relu_y) {
            (None, Some(y)) => Some(y.contiguous()?),
            _ => None,
        };
        let relu = match (&coefficients, &y) {
            (Some((scale, shift)), _) => ReluMask::Coefficients(scale, shift),
            (None, Some(y)) => ReluMask::Output(y.host_data()?),
            (None, None) => ReluMask::None,
        };
        let (dx, dgamma, dbeta) = backward(
            x.host_data()?,
            dy.host_data()?,
            relu,
            dims,
            &saved.mean.to_vec()?,
            &saved.inv_std.to_vec()?,
            &gamma.to_vec()?,
            batch_statistics,
        );
        Ok((
            Tensor::from_vec(dx, x.shape())?,
            Tensor::from_vec(dgamma, &[c])?,
            Tensor::from_vec(dbeta, &[c])?,
        ))
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
        Self::batch_norm_train_impl(
            "batch_norm_train",
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            attrs,
            false,
        )
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
        Self::batch_norm_eval_impl(
            "batch_norm_eval",
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            attrs,
            false,
        )
    }

    fn batch_norm_backward(
        &self,
        x: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
        batch_statistics: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        Self::batch_norm_backward_impl(x, None, dy, gamma, saved, batch_statistics)
    }
}

/// Batch norm and ReLU in one pass each way (the composition's values, without the ReLU's
/// separate read and write of the whole activation).
impl FusedOps for CpuBackend {
    fn batch_norm_relu_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        Self::batch_norm_train_impl(
            "batch_norm_relu_train",
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            attrs,
            true,
        )
    }

    fn batch_norm_relu_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        Self::batch_norm_eval_impl(
            "batch_norm_relu_eval",
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            attrs,
            true,
        )
    }

    fn batch_norm_relu_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        Self::batch_norm_backward_impl(x, Some(y), dy, gamma, saved, true)
    }
}

#[cfg(test)]
mod tests {
    use magma_tensor::{SeededRng, Tensor};

    use super::CpuBackend;
    use crate::attrs::BatchNormAttrs;
    use crate::backend::{FusedOps, NormOps};
    use crate::testing::random_tensor;

    /// Training batch norm (alone and with its ReLU) and its backward pass (no mask, the ReLU's
    /// coefficients, the ReLU's output) on one thread pool: `[y, dx, dgamma, dbeta]` per variant.
    fn passes(threads: usize, x: &Tensor, dy: &Tensor, c: usize) -> Vec<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let be = CpuBackend::new();
            let mut rng = SeededRng::new(5);
            let gamma = random_tensor(&[c], &mut rng, 0.1);
            let beta = random_tensor(&[c], &mut rng, 0.0);
            let attrs = BatchNormAttrs::default();
            let mut out = Vec::new();
            for relu in [false, true] {
                let (mut rm, mut rv) = (Tensor::zeros(&[c]), Tensor::ones(&[c]));
                let (y, saved) = if relu {
                    be.batch_norm_relu_train(x, &gamma, &beta, &mut rm, &mut rv, &attrs)
                } else {
                    be.batch_norm_train(x, &gamma, &beta, &mut rm, &mut rv, &attrs)
                }
                .unwrap();
                let (dx, dg, db) = if relu {
                    be.batch_norm_relu_backward(x, &y, dy, &gamma, &saved)
                } else {
                    be.batch_norm_backward(x, dy, &gamma, &saved, true)
                }
                .unwrap();
                for t in [&y, &dx, &dg, &db, &rm, &rv] {
                    out.push(t.to_vec().unwrap());
                }
                if relu {
                    // The mask from the ReLU's output instead of the saved coefficients.
                    let plain = crate::backend::BatchNormSaved {
                        relu_mask: None,
                        ..saved
                    };
                    let (dx, dg, db) = be
                        .batch_norm_relu_backward(x, &y, dy, &gamma, &plain)
                        .unwrap();
                    for t in [&dx, &dg, &db] {
                        out.push(t.to_vec().unwrap());
                    }
                }
            }
            out
        })
    }

    /// With at least one channel per thread both passes of each direction run in one task per
    /// channel; with fewer, the statistics come first and then every plane in parallel. The
    /// two schedules do the same operations on the same operands: bitwise equal results.
    #[test]
    fn per_channel_and_per_plane_schedules_agree_bitwise() {
        let mut rng = SeededRng::new(3);
        let (n, c, h, w) = (3, 5, 9, 13);
        let x = random_tensor(&[n, c, h, w], &mut rng, 0.0);
        let dy = random_tensor(&[n, c, h, w], &mut rng, 0.0);
        let per_channel = passes(2, &x, &dy, c);
        let per_plane = passes(8, &x, &dy, c);
        assert_eq!(per_channel.len(), 15);
        for (i, (a, b)) in per_channel.iter().zip(&per_plane).enumerate() {
            assert!(
                a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "output {i} differs between the schedules"
            );
        }
    }
}
