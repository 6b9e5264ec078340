//! Bilinear resampling (`align_corners = false`, PyTorch's source-index rule) on the CPU.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::{written_in_full, zeroed};
use crate::backend::ResizeOps;
use crate::error::{OpError, Result, shape_err};

/// For each output index along one axis: the two source indices and the weight of the second.
fn axis_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

fn check_sizes(op: &'static str, in_hw: [usize; 2], out_hw: [usize; 2]) -> Result<()> {
    if in_hw.contains(&0) || out_hw.contains(&0) {
        return Err(OpError::Attr {
            op,
            reason: format!("cannot resample {in_hw:?} to {out_hw:?}: sizes must be positive"),
        });
    }
    Ok(())
}

impl ResizeOps for CpuBackend {
    fn upsample_bilinear(&self, x: &Tensor, out_hw: [usize; 2]) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4("upsample_bilinear")?;
        check_sizes("upsample_bilinear", [h, w], out_hw)?;
        let [ho, wo] = out_hw;
        let (th, tw) = (axis_taps(h, ho), axis_taps(w, wo));
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let mut y = written_in_full(n * c * ho * wo);
        if !y.is_empty() {
            y.par_chunks_mut(ho * wo).enumerate().for_each(|(p, out)| {
                let plane = &xd[p * h * w..(p + 1) * h * w];
                for (oh, &(h0, h1, lh)) in th.iter().enumerate() {
                    for (ow, &(w0, w1, lw)) in tw.iter().enumerate() {
                        let top = plane[h0 * w + w0] * (1.0 - lw) + plane[h0 * w + w1] * lw;
                        let bottom = plane[h1 * w + w0] * (1.0 - lw) + plane[h1 * w + w1] * lw;
                        out[oh * wo + ow] = top * (1.0 - lh) + bottom * lh;
                    }
                }
            });
        }
        Ok(Tensor::from_vec(y, &[n, c, ho, wo])?)
    }

    fn upsample_bilinear_backward(&self, dy: &Tensor, x_shape: [usize; 4]) -> Result<Tensor> {
        let (n, c, ho, wo) = dy.dims4("upsample_bilinear_backward")?;
        let [xn, xc, h, w] = x_shape;
        if (xn, xc) != (n, c) {
            return shape_err(
                "upsample_bilinear_backward",
                "output gradient",
                dy.shape(),
                format!("[{xn}, {xc}, H, W]"),
            );
        }
        check_sizes("upsample_bilinear_backward", [h, w], [ho, wo])?;
        let (th, tw) = (axis_taps(h, ho), axis_taps(w, wo));
        let dy = dy.contiguous()?;
        let dyd = dy.host_data()?;
        let mut dx = zeroed(n * c * h * w);
        if !dx.is_empty() {
            dx.par_chunks_mut(h * w).enumerate().for_each(|(p, plane)| {
                let grad = &dyd[p * ho * wo..(p + 1) * ho * wo];
                for (oh, &(h0, h1, lh)) in th.iter().enumerate() {
                    for (ow, &(w0, w1, lw)) in tw.iter().enumerate() {
                        let g = grad[oh * wo + ow];
                        plane[h0 * w + w0] += g * (1.0 - lh) * (1.0 - lw);
                        plane[h0 * w + w1] += g * (1.0 - lh) * lw;
                        plane[h1 * w + w0] += g * lh * (1.0 - lw);
                        plane[h1 * w + w1] += g * lh * lw;
                    }
                }
            });
        }
        Ok(Tensor::from_vec(dx, &x_shape)?)
    }
}
