//! Concatenation, splitting, padding and cropping on the CPU.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::{written_in_full, zeroed};
use crate::backend::ShapeOps;
use crate::checks::{concat_shape, crop_dims, split_extents};
use crate::error::Result;

impl ShapeOps for CpuBackend {
    fn concat(&self, parts: &[&Tensor], dim: usize) -> Result<Tensor> {
        let (out_shape, outer, inner) = concat_shape(parts, dim)?;
        let total = out_shape[dim];
        let parts: Vec<Tensor> = parts
            .iter()
            .map(|p| p.contiguous())
            .collect::<std::result::Result<_, _>>()?;
        let data: Vec<&[f32]> = parts
            .iter()
            .map(|p| p.host_data())
            .collect::<std::result::Result<_, _>>()?;
        // One task per outer index (a sample, for channels), each copying its runs.
        let mut out = written_in_full(outer * total * inner);
        if total * inner > 0 {
            out.par_chunks_mut(total * inner)
                .enumerate()
                .for_each(|(o, dst)| {
                    let mut at = 0;
                    for (p, d) in parts.iter().zip(&data) {
                        let len = p.shape()[dim] * inner;
                        dst[at..at + len].copy_from_slice(&d[o * len..(o + 1) * len]);
                        at += len;
                    }
                });
        }
        Ok(Tensor::from_vec(out, &out_shape)?)
    }

    fn split(&self, x: &Tensor, dim: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let (outer, total, inner) = split_extents(x, dim, sizes)?;
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                // `outer` contiguous runs of len·inner values each, one task per run.
                let mut part = written_in_full(outer * len * inner);
                if len * inner > 0 {
                    part.par_chunks_mut(len * inner)
                        .enumerate()
                        .for_each(|(o, dst)| {
                            let from = (o * total + start) * inner;
                            dst.copy_from_slice(&xd[from..from + len * inner]);
                        });
                }
                start += len;
                let mut shape = x.shape().to_vec();
                shape[dim] = len;
                Ok(Tensor::from_vec(part, &shape)?)
            })
            .collect()
    }

    fn pad2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4("pad2d")?;
        let [top, bottom, left, right] = pads;
        let (ho, wo) = (h + top + bottom, w + left + right);
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let mut out = zeroed(n * c * ho * wo);
        for p in 0..n * c {
            for r in 0..h {
                let dst = p * ho * wo + (r + top) * wo + left;
                out[dst..dst + w].copy_from_slice(&xd[(p * h + r) * w..(p * h + r + 1) * w]);
            }
        }
        Ok(Tensor::from_vec(out, &[n, c, ho, wo])?)
    }

    fn crop2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
        let (_, _, h, w) = crop_dims(x, pads)?;
        let [top, bottom, left, right] = pads;
        Ok(x.narrow(2, top, h - top - bottom)?
            .narrow(3, left, w - left - right)?
            .contiguous()?)
    }
}
