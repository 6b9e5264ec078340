//! Concatenation, splitting, padding and cropping on the GPU (kernels in `cuda/shape.cu`):
//! concat and split along any dimension are strided row copies, pad2d and crop2d gathers.

use magma_tensor::Tensor;

use super::CudaBackend;
use super::elementwise::{dst, ll, src};
use super::kernels::{Stream, check};
use crate::backend::ShapeOps;
use crate::checks::{concat_shape, crop_dims, split_extents};
use crate::error::Result;

unsafe extern "C" {
    fn mg_copy_rows(
        src: *const f32,
        dst: *mut f32,
        rows: i64,
        row_len: i64,
        src_stride: i64,
        src_off: i64,
        dst_stride: i64,
        dst_off: i64,
        s: Stream,
    ) -> i32;
    fn mg_pad2d(
        x: *const f32,
        y: *mut f32,
        planes: i64,
        h: i64,
        w: i64,
        top: i64,
        bottom: i64,
        left: i64,
        right: i64,
        s: Stream,
    ) -> i32;
    fn mg_crop2d(
        x: *const f32,
        y: *mut f32,
        planes: i64,
        h: i64,
        w: i64,
        top: i64,
        bottom: i64,
        left: i64,
        right: i64,
        s: Stream,
    ) -> i32;
}

/// Where one strided row copy reads and writes: `rows` rows of `row_len` values,
/// `[stride, offset]` on each side.
struct RowCopy {
    rows: usize,
    row_len: usize,
    from: [usize; 2],
    to: [usize; 2],
}

impl CudaBackend {
    /// `dst[r·to.stride + to.offset + j] = src[r·from.stride + from.offset + j]`.
    fn copy_rows(
        &self,
        op: &'static str,
        from: &Tensor,
        to: &mut Tensor,
        c: RowCopy,
    ) -> Result<()> {
        if c.rows * c.row_len == 0 {
            return Ok(());
        }
        // SAFETY: the callers size the copy inside both contiguous device tensors: the last row
        // read ends at (rows−1)·from.stride + from.offset + row_len ≤ from.numel(), likewise for
        // the writes into `to`.
        check(op, unsafe {
            mg_copy_rows(
                src(from)?,
                dst(to)?,
                ll(c.rows),
                ll(c.row_len),
                ll(c.from[0]),
                ll(c.from[1]),
                ll(c.to[0]),
                ll(c.to[1]),
                self.stream(),
            )
        })
    }
}

impl ShapeOps for CudaBackend {
    fn concat(&self, parts: &[&Tensor], dim: usize) -> Result<Tensor> {
        let (out_shape, outer, inner) = concat_shape(parts, dim)?;
        let total = out_shape[dim];
        let mut out = self.output(&out_shape)?;
        let mut at = 0;
        for p in parts {
            let part = self.input(p)?;
            let len = p.shape()[dim] * inner;
            self.copy_rows(
                "concat",
                &part,
                &mut out,
                RowCopy {
                    rows: outer,
                    row_len: len,
                    from: [len, 0],
                    to: [total * inner, at * inner],
                },
            )?;
            at += p.shape()[dim];
        }
        Ok(out)
    }

    fn split(&self, x: &Tensor, dim: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let (outer, size, inner) = split_extents(x, dim, sizes)?;
        let x = self.input(x)?;
        let mut start = 0;
        let mut parts = Vec::with_capacity(sizes.len());
        for &len in sizes {
            let mut shape = x.shape().to_vec();
            shape[dim] = len;
            let mut part = self.output(&shape)?;
            self.copy_rows(
                "split",
                &x,
                &mut part,
                RowCopy {
                    rows: outer,
                    row_len: len * inner,
                    from: [size * inner, start * inner],
                    to: [len * inner, 0],
                },
            )?;
            parts.push(part);
            start += len;
        }
        Ok(parts)
    }

    fn pad2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4("pad2d")?;
        let [top, bottom, left, right] = pads;
        let (ho, wo) = (h + top + bottom, w + left + right);
        let x = self.input(x)?;
        let mut y = self.output(&[n, c, ho, wo])?;
        if y.numel() > 0 {
            // SAFETY: `x` holds n·c·h·w elements and `y` n·c·ho·wo; the kernel reads only inside
            // the source rectangle.
            check("pad2d", unsafe {
                mg_pad2d(
                    src(&x)?,
                    dst(&mut y)?,
                    ll(n * c),
                    ll(h),
                    ll(w),
                    ll(top),
                    ll(bottom),
                    ll(left),
                    ll(right),
                    self.stream(),
                )
            })?;
        }
        Ok(y)
    }

    fn crop2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
        let (n, c, h, w) = crop_dims(x, pads)?;
        let [top, bottom, left, right] = pads;
        let (ho, wo) = (h - top - bottom, w - left - right);
        let x = self.input(x)?;
        let mut y = self.output(&[n, c, ho, wo])?;
        if y.numel() > 0 {
            // SAFETY: `x` holds n·c·h·w elements and `y` n·c·ho·wo; every read row r + top < h
            // and column c + left < w.
            check("crop2d", unsafe {
                mg_crop2d(
                    src(&x)?,
                    dst(&mut y)?,
                    ll(n * c),
                    ll(h),
                    ll(w),
                    ll(top),
                    ll(bottom),
                    ll(left),
                    ll(right),
                    self.stream(),
                )
            })?;
        }
        Ok(y)
    }
}
