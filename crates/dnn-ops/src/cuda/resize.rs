//! Bilinear resampling (`align_corners = false`) on the GPU (kernels in `cuda/resize.cu`). The
//! backward is a gather over the output pixels whose taps touch each input pixel: deterministic,
//! no atomics.

use magma_tensor::Tensor;

use super::CudaBackend;
use super::elementwise::{dst, ll, src};
use super::kernels::{Stream, check};
use crate::backend::ResizeOps;
use crate::error::{OpError, Result, shape_err};

unsafe extern "C" {
    fn mg_upsample_bilinear(
        x: *const f32,
        y: *mut f32,
        planes: i64,
        h: i64,
        w: i64,
        ho: i64,
        wo: i64,
        scale_h: f32,
        scale_w: f32,
        s: Stream,
    ) -> i32;
    fn mg_upsample_bilinear_backward(
        dy: *const f32,
        dx: *mut f32,
        planes: i64,
        h: i64,
        w: i64,
        ho: i64,
        wo: i64,
        scale_h: f32,
        scale_w: f32,
        s: Stream,
    ) -> i32;
}

/// The CPU's check and wording.
fn check_sizes(op: &'static str, in_hw: [usize; 2], out_hw: [usize; 2]) -> Result<()> {
    if in_hw.contains(&0) || out_hw.contains(&0) {
        return Err(OpError::Attr {
            op,
            reason: format!("cannot resample {in_hw:?} to {out_hw:?}: sizes must be positive"),
        });
    }
    Ok(())
}

/// `input / output` in `f32`, as the CPU's tap rule computes it.
fn scale(input: usize, output: usize) -> f32 {
    input as f32 / output as f32
}

impl ResizeOps for CudaBackend {
    fn upsample_bilinear(&self, x: &Tensor, out_hw: [usize; 2]) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4("upsample_bilinear")?;
        check_sizes("upsample_bilinear", [h, w], out_hw)?;
        let [ho, wo] = out_hw;
        let x = self.input(x)?;
        let mut y = self.output(&[n, c, ho, wo])?;
        if y.numel() > 0 {
            // SAFETY: `x` holds n·c·h·w elements and `y` n·c·ho·wo; taps are clamped to h, w.
            check("upsample_bilinear", unsafe {
                mg_upsample_bilinear(
                    src(&x)?,
                    dst(&mut y)?,
                    ll(n * c),
                    ll(h),
                    ll(w),
                    ll(ho),
                    ll(wo),
                    scale(h, ho),
                    scale(w, wo),
                    self.stream(),
                )
            })?;
        }
        Ok(y)
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
        let dy = self.input(dy)?;
        let mut dx = self.output(&x_shape)?;
        if dx.numel() > 0 {
            // SAFETY: `dy` holds n·c·ho·wo elements and `dx` n·c·h·w; candidate output indices
            // are clamped to ho, wo.
            check("upsample_bilinear_backward", unsafe {
                mg_upsample_bilinear_backward(
                    src(&dy)?,
                    dst(&mut dx)?,
                    ll(n * c),
                    ll(h),
                    ll(w),
                    ll(ho),
                    ll(wo),
                    scale(h, ho),
                    scale(w, wo),
                    self.stream(),
                )
            })?;
        }
        Ok(dx)
    }
}
