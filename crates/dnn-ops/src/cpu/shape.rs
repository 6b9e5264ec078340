//! Concatenation, splitting, padding and cropping on the CPU.

use magma_tensor::Tensor;

use super::CpuBackend;
use crate::backend::ShapeOps;
use crate::error::{OpError, Result, shape_err};

/// `(outer, size of dim, inner)` of a shape split at `dim`.
fn around(shape: &[usize], dim: usize, op: &'static str) -> Result<(usize, usize, usize)> {
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

impl ShapeOps for CpuBackend {
    fn concat(&self, parts: &[&Tensor], dim: usize) -> Result<Tensor> {
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
        let total = out_shape[dim];
        let mut out = vec![0.0f32; outer * total * inner];
        let mut at = 0;
        for p in parts {
            let pc = p.contiguous()?;
            let pd = pc.host_data()?;
            let len = p.shape()[dim] * inner;
            for o in 0..outer {
                let dst = (o * total + at) * inner;
                out[dst..dst + len].copy_from_slice(&pd[o * len..(o + 1) * len]);
            }
            at += p.shape()[dim];
        }
        Ok(Tensor::from_vec(out, &out_shape)?)
    }

    fn split(&self, x: &Tensor, dim: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let (_, size, _) = around(x.shape(), dim, "split")?;
        if sizes.iter().sum::<usize>() != size {
            return Err(OpError::Attr {
                op: "split",
                reason: format!(
                    "sizes {sizes:?} do not add up to dimension {dim} of {:?}",
                    x.shape()
                ),
            });
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let part = x.narrow(dim, start, len)?.contiguous()?;
                start += len;
                Ok(part)
            })
            .collect()
    }

    fn pad2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4("pad2d")?;
        let [top, bottom, left, right] = pads;
        let (ho, wo) = (h + top + bottom, w + left + right);
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let mut out = vec![0.0f32; n * c * ho * wo];
        for p in 0..n * c {
            for r in 0..h {
                let dst = p * ho * wo + (r + top) * wo + left;
                out[dst..dst + w].copy_from_slice(&xd[(p * h + r) * w..(p * h + r + 1) * w]);
            }
        }
        Ok(Tensor::from_vec(out, &[n, c, ho, wo])?)
    }

    fn crop2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4("crop2d")?;
        let [top, bottom, left, right] = pads;
        if top + bottom >= h || left + right >= w {
            return Err(OpError::Attr {
                op: "crop2d",
                reason: format!("cropping {pads:?} leaves nothing of {:?}", x.shape()),
            });
        }
        Ok(x.narrow(2, top, h - top - bottom)?
            .narrow(3, left, w - left - right)?
            .contiguous()?)
    }
}
