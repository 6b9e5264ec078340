//! Elementwise arithmetic, per-channel broadcasting, deterministic reductions, fills and dropout
//! on the GPU (kernels in `cuda/elementwise.cu`), and the small helpers the other kernel-backed
//! op files share (shape checks as the CPU words them, scratch buffers of 8-byte words).
//!
//! On NHWC activations (the bf16 and NHWC fp32 modes; kernels of `nhwc.rs`) `add` of two of
//! them, `add_channel_bias` and `sum_per_channel` (the bias gradient) read them as they are: the
//! first two give NHWC results of the same type, the sum an fp32 one.

use magma_tensor::Tensor;

use super::CudaBackend;
use super::kernels::{Stream, check};
use crate::backend::ElementwiseOps;
use crate::error::{OpError, Result, shape_err};

unsafe extern "C" {
    fn mg_binary(a: *const f32, b: *const f32, y: *mut f32, n: i64, op: i32, s: Stream) -> i32;
    fn mg_affine(x: *const f32, y: *mut f32, n: i64, alpha: f32, beta: f32, s: Stream) -> i32;
    fn mg_add_channel_bias(
        x: *const f32,
        bias: *const f32,
        y: *mut f32,
        n: i64,
        c: i64,
        inner: i64,
        s: Stream,
    ) -> i32;
    fn mg_channel_sum_segments(outer: i64, inner: i64) -> i64;
    fn mg_sum_per_channel(
        x: *const f32,
        out: *mut f32,
        partials: *mut f64,
        outer: i64,
        c: i64,
        inner: i64,
        s: Stream,
    ) -> i32;
    fn mg_reduce_blocks(n: i64) -> i64;
    fn mg_sum_all(x: *const f32, out: *mut f32, partials: *mut f64, n: i64, s: Stream) -> i32;
    fn mg_fill(y: *mut f32, n: i64, value: f32, s: Stream) -> i32;
    fn mg_fill_from(value: *const f32, y: *mut f32, n: i64, s: Stream) -> i32;
    fn mg_dropout(
        x: *const f32,
        y: *mut f32,
        mask: *mut f32,
        n: i64,
        p: f32,
        keep: f32,
        seed: u64,
        s: Stream,
    ) -> i32;
}

/// A size as the launchers take it (`long long`); tensor sizes always fit.
pub(super) fn ll(v: usize) -> i64 {
    i64::try_from(v).expect("tensor sizes fit in i64")
}

/// The read-only device address of a contiguous device tensor.
pub(super) fn src(t: &Tensor) -> Result<*const f32> {
    Ok(t.device_ptr()? as *const f32)
}

/// The device address of a fresh output tensor (the caller's kernel writes it).
pub(super) fn dst(t: &mut Tensor) -> Result<*mut f32> {
    Ok(t.device_ptr_mut()? as *mut f32)
}

/// Scratch room for `words` 8-byte values (`f64` or `u64`) on the device, as an `f32` tensor of
/// twice the length (device allocations are at least 256-byte aligned).
pub(super) fn scratch_words(be: &CudaBackend, words: usize) -> Result<Tensor> {
    be.output(&[2 * words.max(1)])
}

/// Scratch room for `words` 8-byte values, zero-filled.
pub(super) fn zeroed_words(be: &CudaBackend, words: usize) -> Result<Tensor> {
    be.zeros(&[2 * words.max(1)])
}

/// The 8-byte words of a downloaded scratch tensor (little-endian pairs of `f32` bit patterns).
pub(super) fn to_words(values: &[f32]) -> Vec<u64> {
    values
        .chunks_exact(2)
        .map(|p| u64::from(p[0].to_bits()) | (u64::from(p[1].to_bits()) << 32))
        .collect()
}

pub(super) use crate::checks::{channel_dims, same_shape};

/// Partials of a two-pass reduction over `n` elements.
pub(super) fn reduce_blocks(n: usize) -> usize {
    // SAFETY: a pure host function of its argument.
    let blocks = unsafe { mg_reduce_blocks(ll(n)) };
    usize::try_from(blocks).expect("positive block count")
}

impl CudaBackend {
    fn binary(&self, op: &'static str, code: i32, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        same_shape(op, a, b)?;
        if code == 0
            && let Some(dtype) = self.nhwc_dtype(a)
            && self.nhwc_dtype(b) == Some(dtype)
        {
            return self.nhwc_add(op, a, b, dtype);
        }
        let (a, b) = (self.input(a)?, self.input(b)?);
        let mut y = self.output(a.shape())?;
        let n = a.numel();
        if n > 0 {
            // SAFETY: `a`, `b` and `y` are contiguous device tensors of `n` elements each.
            check(op, unsafe {
                mg_binary(src(&a)?, src(&b)?, dst(&mut y)?, ll(n), code, self.stream())
            })?;
        }
        Ok(y)
    }
}

impl ElementwiseOps for CudaBackend {
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.binary("add", 0, a, b)
    }

    fn sub(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.binary("sub", 1, a, b)
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.binary("mul", 2, a, b)
    }

    fn affine(&self, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        let x = self.input(x)?;
        let mut y = self.output(x.shape())?;
        let n = x.numel();
        if n > 0 {
            // SAFETY: `x` and `y` are contiguous device tensors of `n` elements.
            check("affine", unsafe {
                mg_affine(src(&x)?, dst(&mut y)?, ll(n), alpha, beta, self.stream())
            })?;
        }
        Ok(y)
    }

    fn add_channel_bias(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (_, c, inner) = channel_dims(x.shape(), "add_channel_bias")?;
        if bias.shape() != [c] {
            return shape_err("add_channel_bias", "bias", bias.shape(), format!("[{c}]"));
        }
        if let Some(dtype) = self.nhwc_dtype(x)
            && x.numel() > 0
        {
            let y = self.nhwc_output(x.shape4("add_channel_bias")?, dtype)?;
            self.add_channel_bias_nhwc("add_channel_bias", x, bias, &y)?;
            return Ok(y);
        }
        let (x, bias) = (self.input(x)?, self.input(bias)?);
        let mut y = self.output(x.shape())?;
        let n = x.numel();
        if n > 0 {
            // SAFETY: `x` and `y` hold `n` elements, `bias` `c`; every channel index is below `c`.
            check("add_channel_bias", unsafe {
                mg_add_channel_bias(
                    src(&x)?,
                    src(&bias)?,
                    dst(&mut y)?,
                    ll(n),
                    ll(c),
                    ll(inner),
                    self.stream(),
                )
            })?;
        }
        Ok(y)
    }

    fn sum_per_channel(&self, x: &Tensor) -> Result<Tensor> {
        let (outer, c, inner) = channel_dims(x.shape(), "sum_per_channel")?;
        if c > 0 && self.is_nhwc(x) {
            return self.nhwc_sum_per_channel("sum_per_channel", x);
        }
        let mut out = self.output(&[c])?;
        if c == 0 {
            return Ok(out);
        }
        let x = self.input(x)?;
        // SAFETY: a pure host function of its arguments.
        let segs = unsafe { mg_channel_sum_segments(ll(outer), ll(inner)) };
        let mut partials = scratch_words(self, c * usize::try_from(segs).expect("positive"))?;
        // SAFETY: `x` holds outer·c·inner elements, `out` c, `partials` c·segs doubles.
        check("sum_per_channel", unsafe {
            mg_sum_per_channel(
                src(&x)?,
                dst(&mut out)?,
                dst(&mut partials)? as *mut f64,
                ll(outer),
                ll(c),
                ll(inner),
                self.stream(),
            )
        })?;
        Ok(out)
    }

    fn sum_all(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.input(x)?;
        let n = x.numel();
        let mut out = self.output(&[])?;
        let mut partials = scratch_words(self, reduce_blocks(n))?;
        // SAFETY: `x` holds `n` elements, `out` one, `partials` mg_reduce_blocks(n) doubles.
        check("sum_all", unsafe {
            mg_sum_all(
                src(&x)?,
                dst(&mut out)?,
                dst(&mut partials)? as *mut f64,
                ll(n),
                self.stream(),
            )
        })?;
        Ok(out)
    }

    fn full(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        let mut y = self.output(shape)?;
        let n = y.numel();
        if n > 0 {
            // SAFETY: `y` is a contiguous device tensor of `n` elements.
            check("full", unsafe {
                mg_fill(dst(&mut y)?, ll(n), value, self.stream())
            })?;
        }
        Ok(y)
    }

    fn broadcast_scalar(&self, value: &Tensor, shape: &[usize]) -> Result<Tensor> {
        if value.numel() != 1 {
            // The CPU's error: `item` of a tensor that is not a single value.
            value.item()?;
        }
        let value = self.input(value)?;
        let mut y = self.output(shape)?;
        let n = y.numel();
        if n > 0 {
            // SAFETY: `value` holds one element, `y` `n`.
            check("broadcast_scalar", unsafe {
                mg_fill_from(src(&value)?, dst(&mut y)?, ll(n), self.stream())
            })?;
        }
        Ok(y)
    }

    fn dropout(&self, x: &Tensor, p: f32, seed: u64) -> Result<(Tensor, Tensor)> {
        if !(0.0..1.0).contains(&p) {
            return Err(OpError::Attr {
                op: "dropout",
                reason: format!("probability {p} must be in [0, 1)"),
            });
        }
        let keep = 1.0 / (1.0 - p);
        let x = self.input(x)?;
        let n = x.numel();
        let mut y = self.output(x.shape())?;
        let mut mask = self.output(x.shape())?;
        if n > 0 {
            // SAFETY: `x`, `y` and `mask` are contiguous device tensors of `n` elements.
            check("dropout", unsafe {
                mg_dropout(
                    src(&x)?,
                    dst(&mut y)?,
                    dst(&mut mask)?,
                    ll(n),
                    p,
                    keep,
                    seed,
                    self.stream(),
                )
            })?;
        }
        Ok((y, mask))
    }
}
