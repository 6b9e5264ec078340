//! Softmax and log-softmax over dimension 1 (the channels of each pixel), numerically stable.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::written_in_full;
use super::elementwise::same_shape;
use crate::backend::SoftmaxOps;
use crate::error::Result;

pub(crate) use crate::checks::channel_dims;

/// Applies `f(values of one pixel across channels, output)` to every pixel; the channel values
/// are gathered from stride `inner`.
fn per_pixel(
    x: &[f32],
    dims: (usize, usize, usize),
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let (_, c, inner) = dims;
    let mut y = written_in_full(x.len());
    if y.is_empty() {
        return y;
    }
    y.par_chunks_mut(c * inner)
        .zip(x.par_chunks(c * inner))
        .for_each(|(yo, xo)| {
            let mut inbuf = vec![0.0f32; c];
            let mut outbuf = vec![0.0f32; c];
            for i in 0..inner {
                for ch in 0..c {
                    inbuf[ch] = xo[ch * inner + i];
                }
                f(&inbuf, &mut outbuf);
                for ch in 0..c {
                    yo[ch * inner + i] = outbuf[ch];
                }
            }
        });
    y
}

/// Two inputs per pixel (`y` and `dy`), one output.
fn per_pixel2(
    a: &[f32],
    b: &[f32],
    dims: (usize, usize, usize),
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let (_, c, inner) = dims;
    let mut out = written_in_full(a.len());
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(c * inner)
        .zip(a.par_chunks(c * inner).zip(b.par_chunks(c * inner)))
        .for_each(|(o, (ao, bo))| {
            let (mut ab, mut bb, mut ob) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
            for i in 0..inner {
                for ch in 0..c {
                    ab[ch] = ao[ch * inner + i];
                    bb[ch] = bo[ch * inner + i];
                }
                f(&ab, &bb, &mut ob);
                for ch in 0..c {
                    o[ch * inner + i] = ob[ch];
                }
            }
        });
    out
}

/// Stable log-sum-exp of one pixel's channel values.
pub(crate) fn log_sum_exp(v: &[f32]) -> f32 {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + v.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

impl CpuBackend {
    /// The check of a softmax forward, shared with the CUDA backend: `x` has rank ≥ 2. Returns
    /// `(outer, channels, inner)`.
    pub(crate) fn check_softmax(x: &Tensor, op: &'static str) -> Result<(usize, usize, usize)> {
        channel_dims(x.shape(), op)
    }

    /// The check of a softmax backward, shared with the CUDA backend: `y` and `dy` have one
    /// shape of rank ≥ 2. Returns `(outer, channels, inner)`.
    pub(crate) fn check_softmax_backward(
        y: &Tensor,
        dy: &Tensor,
        op: &'static str,
    ) -> Result<(usize, usize, usize)> {
        same_shape(op, y, dy)?;
        channel_dims(y.shape(), op)
    }
}

impl SoftmaxOps for CpuBackend {
    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        let dims = Self::check_softmax(x, "softmax")?;
        let x = x.contiguous()?;
        let y = per_pixel(x.host_data()?, dims, |v, out| {
            let lse = log_sum_exp(v);
            out.iter_mut()
                .zip(v)
                .for_each(|(o, &e)| *o = (e - lse).exp());
        });
        Ok(Tensor::from_vec(y, x.shape())?)
    }

    fn softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dims = Self::check_softmax_backward(y, dy, "softmax_backward")?;
        let (y, dy) = (y.contiguous()?, dy.contiguous()?);
        let dx = per_pixel2(y.host_data()?, dy.host_data()?, dims, |yv, dv, out| {
            let dot: f32 = yv.iter().zip(dv).map(|(a, b)| a * b).sum();
            out.iter_mut()
                .zip(yv.iter().zip(dv))
                .for_each(|(o, (&a, &b))| *o = a * (b - dot));
        });
        Ok(Tensor::from_vec(dx, y.shape())?)
    }

    fn log_softmax(&self, x: &Tensor) -> Result<Tensor> {
        let dims = Self::check_softmax(x, "log_softmax")?;
        let x = x.contiguous()?;
        let y = per_pixel(x.host_data()?, dims, |v, out| {
            let lse = log_sum_exp(v);
            out.iter_mut().zip(v).for_each(|(o, &e)| *o = e - lse);
        });
        Ok(Tensor::from_vec(y, x.shape())?)
    }

    fn log_softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dims = Self::check_softmax_backward(y, dy, "log_softmax_backward")?;
        let (y, dy) = (y.contiguous()?, dy.contiguous()?);
        let dx = per_pixel2(y.host_data()?, dy.host_data()?, dims, |yv, dv, out| {
            let sum: f32 = dv.iter().sum();
            out.iter_mut()
                .zip(yv.iter().zip(dv))
                .for_each(|(o, (&a, &b))| *o = b - a.exp() * sum);
        });
        Ok(Tensor::from_vec(dx, y.shape())?)
    }
}
