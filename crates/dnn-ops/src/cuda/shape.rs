//! Concatenation, splitting, padding and cropping on the GPU (kernels in `cuda/shape.cu`):
//! concat and split along any dimension are strided row copies, pad2d and crop2d gathers.
//!
//! NHWC activations (bf16 or fp32: the bf16 and NHWC fp32 modes) are concatenated and split
//! along channels as they are: each pixel is a row of channels, copied in 32-bit words (two bf16
//! per word, so bf16 needs even channel counts).

use magma_tensor::{DType, Tensor};

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

/// 32-bit words per `c` channels of an NHWC activation of `dtype`, when a row of them is a
/// whole number of words (bf16: an even `c`).
fn channel_words(c: usize, dtype: DType) -> Option<usize> {
    match dtype {
        DType::BF16 => c.is_multiple_of(2).then_some(c / 2),
        _ => Some(c),
    }
}

impl CudaBackend {
    /// The element type when `parts` concatenate along channels as NHWC activations: every one
    /// an NHWC activation of the same type, with whole words per pixel.
    fn nhwc_channel_parts(&self, parts: &[&Tensor], dim: usize) -> Option<DType> {
        let dtype = self.nhwc_dtype(parts.first()?)?;
        (dim == 1
            && parts.iter().all(|p| {
                self.nhwc_dtype(p) == Some(dtype) && channel_words(p.shape()[1], dtype).is_some()
            }))
        .then_some(dtype)
    }

    /// Concatenation along channels of NHWC parts of `dtype` (checked by the caller) into an
    /// NHWC result: each pixel is a row of channels, copied as 32-bit words.
    fn concat_nhwc(&self, parts: &[&Tensor], out_shape: &[usize], dtype: DType) -> Result<Tensor> {
        const OP: &str = "concat";
        let [n, total, h, w] = [out_shape[0], out_shape[1], out_shape[2], out_shape[3]];
        let out = self.nhwc_output([n, total, h, w], dtype)?;
        let to = out.channels_last_ptr()?;
        let words = |c| channel_words(c, dtype).expect("checked by nhwc_channel_parts");
        let mut at = 0;
        for p in parts {
            let c = p.shape()[1];
            let copy = RowCopy {
                rows: n * h * w,
                row_len: words(c),
                from: [words(c), 0],
                to: [words(total), words(at)],
            };
            // SAFETY: the part holds n·h·w rows of c channels (words(c) words), the result
            // n·h·w rows of `total`; channels at..at + c ≤ total of each row are written.
            unsafe { self.copy_words(OP, p.channels_last_ptr()?, to, copy)? };
            at += c;
        }
        Ok(out)
    }

    /// Splitting an NHWC activation of `dtype` along channels into NHWC parts of `sizes` (each
    /// a whole number of words per pixel, checked by the caller).
    fn split_nhwc(&self, x: &Tensor, sizes: &[usize], dtype: DType) -> Result<Vec<Tensor>> {
        const OP: &str = "split";
        let [n, total, h, w] = x.shape4(OP)?;
        let from = x.channels_last_ptr()?;
        let words = |c| channel_words(c, dtype).expect("checked by the caller");
        let mut start = 0;
        let mut parts = Vec::with_capacity(sizes.len());
        for &c in sizes {
            let part = self.nhwc_output([n, c, h, w], dtype)?;
            let copy = RowCopy {
                rows: n * h * w,
                row_len: words(c),
                from: [words(total), words(start)],
                to: [words(c), 0],
            };
            // SAFETY: `x` holds n·h·w rows of `total` channels, the part as many rows of c;
            // channels start..start + c ≤ total of each row are read.
            unsafe { self.copy_words(OP, from, part.channels_last_ptr()?, copy)? };
            parts.push(part);
            start += c;
        }
        Ok(parts)
    }
}

impl ShapeOps for CudaBackend {
    fn concat(&self, parts: &[&Tensor], dim: usize) -> Result<Tensor> {
        let (out_shape, outer, inner) = concat_shape(parts, dim)?;
        if out_shape.len() == 4
            && let Some(dtype) = self.nhwc_channel_parts(parts, dim)
        {
            return self.concat_nhwc(parts, &out_shape, dtype);
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
        if dim == 1
            && let Some(dtype) = self.nhwc_dtype(x)
            && sizes.iter().all(|&c| channel_words(c, dtype).is_some())
            && channel_words(x.shape()[1], dtype).is_some()
        {
            return self.split_nhwc(x, sizes, dtype);
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
