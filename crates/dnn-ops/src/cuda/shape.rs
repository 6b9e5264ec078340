//! Concatenation, splitting, padding and cropping on the GPU (kernels in `cuda/shape.cu`):
//! concat and split along any dimension are strided row copies, pad2d and crop2d gathers.
//!
//! bf16 NHWC activations (the mixed-precision path) are concatenated and split along channels
//! as they are, when every channel count is even: each pixel is a row of channels, and two bf16
//! make one 32-bit word of the same row copy.

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
        let (from, to) = (src(from)? as usize as u64, dst(to)? as usize as u64);
        // SAFETY: the callers size the copy inside both contiguous fp32 device tensors.
        unsafe { self.copy_words(op, from, to, c) }
    }

    /// The row copy of [`CudaBackend::copy_rows`] between raw device addresses, in 32-bit words.
    ///
    /// # Safety
    /// The copy must lie inside both allocations: the last row read ends at
    /// (rows−1)·from.stride + from.offset + row_len words past `from`, likewise for `to`.
    unsafe fn copy_words(&self, op: &'static str, from: u64, to: u64, c: RowCopy) -> Result<()> {
        if c.rows * c.row_len == 0 {
            return Ok(());
        }
        // SAFETY: the caller's contract above.
        check(op, unsafe {
            mg_copy_rows(
                from as usize as *const f32,
                to as usize as *mut f32,
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

impl CudaBackend {
    /// Whether `parts` concatenate along channels as bf16 NHWC (every one a bf16 NHWC activation
    /// with an even channel count).
    fn bf16_channel_parts(&self, parts: &[&Tensor], dim: usize) -> bool {
        dim == 1
            && !parts.is_empty()
            && parts
                .iter()
                .all(|p| self.is_bf16_nhwc(p) && p.shape()[1] % 2 == 0)
    }

    /// Concatenation along channels of bf16 NHWC parts (checked by the caller) into a bf16 NHWC
    /// result.
    fn concat_bf16(&self, parts: &[&Tensor], out_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "concat";
        let [n, total, h, w] = [out_shape[0], out_shape[1], out_shape[2], out_shape[3]];
        let out = self.bf16_nhwc_output([n, total, h, w])?;
        let to = out.bf16_channels_last_ptr()?;
        let mut at = 0;
        for p in parts {
            let c = p.shape()[1];
            let copy = RowCopy {
                rows: n * h * w,
                row_len: c / 2,
                from: [c / 2, 0],
                to: [total / 2, at / 2],
            };
            // SAFETY: the part holds n·h·w rows of c bf16 (c/2 words), the result n·h·w rows of
            // `total` bf16; channels at..at + c ≤ total of each row are written.
            unsafe { self.copy_words(OP, p.bf16_channels_last_ptr()?, to, copy)? };
            at += c;
        }
        Ok(out)
    }

    /// Splitting a bf16 NHWC tensor along channels into bf16 NHWC parts of even `sizes`.
    fn split_bf16(&self, x: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
        const OP: &str = "split";
        let [n, total, h, w] = x.shape4(OP)?;
        let from = x.bf16_channels_last_ptr()?;
        let mut start = 0;
        let mut parts = Vec::with_capacity(sizes.len());
        for &c in sizes {
            let part = self.bf16_nhwc_output([n, c, h, w])?;
            let copy = RowCopy {
                rows: n * h * w,
                row_len: c / 2,
                from: [total / 2, start / 2],
                to: [c / 2, 0],
            };
            // SAFETY: `x` holds n·h·w rows of `total` bf16, the part as many rows of c; channels
            // start..start + c ≤ total of each row are read.
            unsafe { self.copy_words(OP, from, part.bf16_channels_last_ptr()?, copy)? };
            parts.push(part);
            start += c;
        }
        Ok(parts)
    }
}

impl ShapeOps for CudaBackend {
    fn concat(&self, parts: &[&Tensor], dim: usize) -> Result<Tensor> {
        let (out_shape, outer, inner) = concat_shape(parts, dim)?;
        if out_shape.len() == 4 && self.bf16_channel_parts(parts, dim) {
            return self.concat_bf16(parts, &out_shape);
        }
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
        if dim == 1 && self.is_bf16_nhwc(x) && sizes.iter().all(|c| c % 2 == 0) {
            return self.split_bf16(x, sizes);
        }
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
