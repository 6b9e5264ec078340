//! Elementwise arithmetic, per-channel broadcasting, reductions and dropout on the CPU.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::{par_add_assign, par_map, par_map2, written_in_full};
use super::softmax::channel_dims;
use crate::backend::ElementwiseOps;
use crate::error::{OpError, Result, shape_err};

/// The splitmix64 finaliser (Steele, Lea & Flood): a bijective 64-bit mix.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The dropout uniform of element `index` under `seed`: the top 24 bits of
/// `splitmix64(splitmix64(seed) ^ index)` scaled to `[0, 1)` (exact in `f32`). A pure function of
/// `(seed, index)`, so every backend (the CUDA kernel of `cuda/elementwise.cu` computes the same)
/// and every thread schedule draws the same mask.
pub(crate) fn dropout_uniform(seed: u64, index: u64) -> f32 {
    let h = splitmix64(splitmix64(seed) ^ index);
    (h >> 40) as f32 * (1.0 / 16_777_216.0)
}

pub(crate) use crate::checks::same_shape;

fn zip_with(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    same_shape(op, a, b)?;
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let out = par_map2(a.host_data()?, b.host_data()?, f);
    Ok(Tensor::from_vec(out, a.shape())?)
}

impl ElementwiseOps for CpuBackend {
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        zip_with("add", a, b, |x, y| x + y)
    }

    fn add_assign(&self, acc: &mut Tensor, b: &Tensor) -> Result<()> {
        same_shape("add_assign", acc, b)?;
        if !acc.is_contiguous() {
            *acc = acc.contiguous()?;
        }
        let b = b.contiguous()?;
        par_add_assign(acc.host_data_mut()?, b.host_data()?);
        Ok(())
    }

    fn sub(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        zip_with("sub", a, b, |x, y| x - y)
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        zip_with("mul", a, b, |x, y| x * y)
    }

    fn affine(&self, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        let x = x.contiguous()?;
        let v = par_map(x.host_data()?, |e| alpha * e + beta);
        Ok(Tensor::from_vec(v, x.shape())?)
    }

    fn add_channel_bias(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (_, c, inner) = channel_dims(x.shape(), "add_channel_bias")?;
        if bias.shape() != [c] {
            return shape_err("add_channel_bias", "bias", bias.shape(), format!("[{c}]"));
        }
        let mut v = x.to_vec()?;
        add_channel_bias_in_place(&mut v, &bias.to_vec()?, inner);
        Ok(Tensor::from_vec(v, x.shape())?)
    }

    fn sum_per_channel(&self, x: &Tensor) -> Result<Tensor> {
        let (outer, c, inner) = channel_dims(x.shape(), "sum_per_channel")?;
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let sums: Vec<f32> = (0..c)
            .into_par_iter()
            .map(|ch| {
                (0..outer)
                    .map(|n| {
                        let s = (n * c + ch) * inner;
                        super::reduce::sum_f64(&xd[s..s + inner])
                    })
                    .sum::<f64>() as f32
            })
            .collect();
        Ok(Tensor::from_vec(sums, &[c])?)
    }

    fn sum_all(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        // Fixed blocks summed in order: deterministic whatever the scheduling.
        let partials: Vec<f64> = x
            .host_data()?
            .par_chunks(8192)
            .map(|block| block.iter().map(|&v| v as f64).sum::<f64>())
            .collect();
        let s: f64 = partials.iter().sum();
        Ok(Tensor::scalar(s as f32))
    }

    fn full(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        Ok(Tensor::full(shape, value))
    }

    fn broadcast_scalar(&self, value: &Tensor, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::full(shape, value.item()?))
    }

    fn dropout(&self, x: &Tensor, p: f32, seed: u64) -> Result<(Tensor, Tensor)> {
        if !(0.0..1.0).contains(&p) {
            return Err(OpError::Attr {
                op: "dropout",
                reason: format!("probability {p} must be in [0, 1)"),
            });
        }
        let keep = 1.0 / (1.0 - p);
        let mut mask = written_in_full(x.numel());
        mask.par_iter_mut()
            .with_min_len(8192)
            .enumerate()
            .for_each(|(i, m)| {
                *m = if dropout_uniform(seed, i as u64) < p {
                    0.0
                } else {
                    keep
                };
            });
        let mask = Tensor::from_vec(mask, x.shape())?;
        let y = self.mul(x, &mask)?;
        Ok((y, mask))
    }
}

/// Adds `bias[ch]` to every value of channel `ch` of `values` (`[outer, bias.len(), inner]`), in
/// place, parallel over `(n, c)` planes.
pub(super) fn add_channel_bias_in_place(values: &mut [f32], bias: &[f32], inner: usize) {
    if inner == 0 || bias.is_empty() {
        return;
    }
    values
        .par_chunks_mut(inner)
        .enumerate()
        .for_each(|(p, chunk)| {
            let add = bias[p % bias.len()];
            chunk.iter_mut().for_each(|e| *e += add);
        });
}
