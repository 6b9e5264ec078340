//! Pixel-wise losses fused with their gradients, and the Gaussian pixel-weight map, on the GPU
//! (kernels in `cuda/loss.cu`).
//!
//! Labels are validated on the host with the CPU's own checks (downloaded first when they live on
//! the device), so both backends refuse bad labels with the same typed errors; the validated
//! labels then go to the kernels as they are (`f32` class indices or the ignored label). Loss sums
//! are deterministic two-pass reductions in `f64`.

use magma_tensor::Tensor;

use super::CudaBackend;
use super::elementwise::{dst, ll, reduce_blocks, scratch_words, src, to_words, zeroed_words};
use super::kernels::{Stream, check};
use crate::attrs::{GaussianCenter, GaussianWeights};
use crate::backend::LossOps;
use crate::cpu::CpuBackend;
use crate::error::{OpError, Result, shape_err};

unsafe extern "C" {
    fn mg_cross_entropy(
        logits: *const f32,
        labels: *const f32,
        class_w: *const f32,
        pixel_w: *const f32,
        grad: *mut f32,
        loss: *mut f32,
        partials: *mut f64,
        outer: i64,
        c: i64,
        inner: i64,
        has_ignore: i32,
        ignore_index: i64,
        inv_total: f32,
        total: f64,
        s: Stream,
    ) -> i32;
    fn mg_pixel_weight_check(
        labels: *const f32,
        w: *const f32,
        n: i64,
        has_ignore: i32,
        ignore_index: i64,
        sums: *mut f64,
        bad: *mut u64,
        out_total: *mut f64,
        out_bad: *mut u64,
        s: Stream,
    ) -> i32;
    fn mg_dice_segments(pixels: i64) -> i64;
    fn mg_soft_dice(
        logits: *const f32,
        labels: *const f32,
        lse: *mut f32,
        partials: *mut f64,
        stats: *mut f64,
        grad: *mut f32,
        loss: *mut f32,
        outer: i64,
        c: i64,
        inner: i64,
        has_ignore: i32,
        ignore_index: i64,
        eps: f64,
        s: Stream,
    ) -> i32;
    fn mg_gaussian_pixel_weights(
        labels: *const f32,
        classes: *const i64,
        count: i64,
        has_ignore: i32,
        ignore_index: i64,
        sums: *mut u64,
        out: *mut f32,
        n: i64,
        h: i64,
        w: i64,
        alpha: f32,
        inv: f32,
        s: Stream,
    ) -> i32;
}

/// The ignored label as the kernels take it: `(flag, value)`.
fn ignore_args(ignore_index: Option<i64>) -> (i32, i64) {
    (i32::from(ignore_index.is_some()), ignore_index.unwrap_or(0))
}

/// The problem of one weighted cross-entropy launch.
struct CeProblem<'a> {
    logits: &'a Tensor,
    labels: &'a Tensor,
    class_w: Option<&'a Tensor>,
    pixel_w: Option<&'a Tensor>,
    dims: (usize, usize, usize),
    ignore_index: Option<i64>,
    total: f64,
}

impl CudaBackend {
    /// Loss `Σ w·CE / total` and its gradient; every tensor is already on this device.
    fn weighted_ce(&self, op: &'static str, p: CeProblem<'_>) -> Result<(Tensor, Tensor)> {
        let (outer, c, inner) = p.dims;
        let mut grad = self.output(p.logits.shape())?;
        let mut loss = self.output(&[])?;
        let mut partials = scratch_words(self, reduce_blocks(outer * inner))?;
        let (has_ignore, ignore) = ignore_args(p.ignore_index);
        let class_w = p.class_w.map(src).transpose()?.unwrap_or(std::ptr::null());
        let pixel_w = p.pixel_w.map(src).transpose()?.unwrap_or(std::ptr::null());
        // SAFETY: `logits` and `grad` hold outer·c·inner elements, `labels` (and `pixel_w` when
        // given) outer·inner validated labels (weights), `class_w` when given c weights, `loss`
        // one value and `partials` mg_reduce_blocks(outer·inner) doubles.
        check(op, unsafe {
            mg_cross_entropy(
                src(p.logits)?,
                src(p.labels)?,
                class_w,
                pixel_w,
                dst(&mut grad)?,
                dst(&mut loss)?,
                dst(&mut partials)? as *mut f64,
                ll(outer),
                ll(c),
                ll(inner),
                has_ignore,
                ignore,
                (1.0 / p.total) as f32,
                p.total,
                self.stream(),
            )
        })?;
        Ok((loss, grad))
    }
}

impl LossOps for CudaBackend {
    fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        class_weights: Option<&Tensor>,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "cross_entropy";
        let (outer, c, inner, total) = match class_weights {
            Some(w) => {
                let (outer, c, inner, classes) =
                    CpuBackend::validated_labels(OP, logits, labels, ignore_index)?;
                if w.shape() != [c] {
                    return shape_err(OP, "class weights", w.shape(), format!("[{c}]"));
                }
                let w = w.to_vec()?;
                // The CPU's total, in its order.
                let total: f64 = classes.iter().flatten().map(|&k| f64::from(w[k])).sum();
                (outer, c, inner, total)
            }
            None => {
                // Without class weights the total is the count of counted pixels.
                let (outer, c, inner, counted) =
                    CpuBackend::counted_labels(OP, logits, labels, ignore_index)?;
                (outer, c, inner, counted as f64)
            }
        };
        if total <= 0.0 {
            return CpuBackend::zero_total_weight();
        }
        let class_w = class_weights.map(|w| self.input(w)).transpose()?;
        let (logits, labels) = (self.input(logits)?, self.input(labels)?);
        self.weighted_ce(
            OP,
            CeProblem {
                logits: &logits,
                labels: &labels,
                class_w: class_w.as_ref(),
                pixel_w: None,
                dims: (outer, c, inner),
                ignore_index,
                total,
            },
        )
    }

    fn pixel_weighted_cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        pixel_weights: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "pixel_weighted_cross_entropy";
        let (outer, c, inner, _) = CpuBackend::counted_labels(OP, logits, labels, ignore_index)?;
        if pixel_weights.shape() != labels.shape() {
            return shape_err(
                OP,
                "pixel weights",
                pixel_weights.shape(),
                format!("{:?} (the labels' shape)", labels.shape()),
            );
        }
        let (logits_d, labels_d) = (self.input(logits)?, self.input(labels)?);
        let weights_d = self.input(pixel_weights)?;
        // Checks the weights and sums those of the counted pixels on the device; only the total
        // and the first bad index come back.
        let n = outer * inner;
        let blocks = reduce_blocks(n);
        let mut sums = scratch_words(self, blocks)?;
        let mut bad = scratch_words(self, blocks)?;
        let mut result = scratch_words(self, 2)?;
        let out = dst(&mut result)?;
        let (has_ignore, ignore) = ignore_args(ignore_index);
        // SAFETY: `labels_d` and `weights_d` hold `n` values, `sums` and `bad` `blocks` 8-byte
        // words, `result` two (the total, then the first bad index).
        check(OP, unsafe {
            mg_pixel_weight_check(
                src(&labels_d)?,
                src(&weights_d)?,
                ll(n),
                has_ignore,
                ignore,
                dst(&mut sums)? as *mut f64,
                dst(&mut bad)? as *mut u64,
                out as *mut f64,
                out.wrapping_add(2) as *mut u64,
                self.stream(),
            )
        })?;
        let words = to_words(&result.to_vec()?);
        let (total, first_bad) = (f64::from_bits(words[0]), words[1]);
        if first_bad != u64::MAX {
            let index = usize::try_from(first_bad).expect("an index of the weights");
            return CpuBackend::bad_pixel_weight(OP, index, pixel_weights.to_vec()?[index]);
        }
        if total <= 0.0 {
            return CpuBackend::zero_total_weight();
        }
        self.weighted_ce(
            OP,
            CeProblem {
                logits: &logits_d,
                labels: &labels_d,
                class_w: None,
                pixel_w: Some(&weights_d),
                dims: (outer, c, inner),
                ignore_index,
                total,
            },
        )
    }

    fn soft_dice(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        eps: f32,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "soft_dice";
        if eps.is_nan() || eps <= 0.0 {
            return Err(OpError::Attr {
                op: OP,
                reason: format!("eps must be positive, got {eps}"),
            });
        }
        let (outer, c, inner, _) = CpuBackend::counted_labels(OP, logits, labels, ignore_index)?;
        let (logits, labels) = (self.input(logits)?, self.input(labels)?);
        let pixels = outer * inner;
        // SAFETY: a pure host function of its argument.
        let segs = unsafe { mg_dice_segments(ll(pixels)) };
        let segs = usize::try_from(segs).expect("positive segment count");
        let mut lse = self.output(&[pixels])?;
        let mut partials = scratch_words(self, 3 * c * segs)?;
        let mut stats = scratch_words(self, 3 * c)?;
        let mut grad = self.output(logits.shape())?;
        let mut loss = self.output(&[])?;
        let (has_ignore, ignore) = ignore_args(ignore_index);
        // SAFETY: `logits` and `grad` hold outer·c·inner elements, `labels` and `lse` outer·inner,
        // `partials` 3·c·mg_dice_segments(outer·inner) doubles, `stats` 3·c, `loss` one value.
        // Validation guarantees c ≥ 1 and at least one counted pixel.
        check(OP, unsafe {
            mg_soft_dice(
                src(&logits)?,
                src(&labels)?,
                dst(&mut lse)?,
                dst(&mut partials)? as *mut f64,
                dst(&mut stats)? as *mut f64,
                dst(&mut grad)?,
                dst(&mut loss)?,
                ll(outer),
                ll(c),
                ll(inner),
                has_ignore,
                ignore,
                eps as f64,
                self.stream(),
            )
        })?;
        Ok((loss, grad))
    }

    fn gaussian_pixel_weights(&self, labels: &Tensor, params: &GaussianWeights) -> Result<Tensor> {
        const OP: &str = "gaussian_pixel_weights";
        let (n, h, w) = params.validate(OP, labels.shape())?;
        let mut out = self.output(labels.shape())?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let inv = params.inv_two_sigma_sq(h, w);
        let labels = self.input(labels)?;
        let classes = params.sorted_foreground();
        let centroid = params.center == GaussianCenter::Centroid && !classes.is_empty();
        // The classes as 8-byte words (pairs of f32 bit patterns), for the device.
        let words: Vec<f32> = classes
            .iter()
            .flat_map(|&k| {
                let k = k as u64;
                [f32::from_bits(k as u32), f32::from_bits((k >> 32) as u32)]
            })
            .collect();
        let class_list = if centroid {
            Some(self.input(&Tensor::from_vec(words, &[2 * classes.len()])?)?)
        } else {
            None
        };
        let mut sums = if centroid {
            Some(zeroed_words(self, 3 * n)?)
        } else {
            None
        };
        let classes_ptr = match &class_list {
            Some(t) => src(t)? as *const i64,
            None => std::ptr::null(),
        };
        let sums_ptr = match &mut sums {
            Some(t) => dst(t)? as *mut u64,
            None => std::ptr::null_mut(),
        };
        let (has_ignore, ignore) = ignore_args(params.ignore_index);
        // SAFETY: `labels` and `out` hold n·h·w values; with a centroid, `classes_ptr` points at
        // `classes.len()` i64 and `sums_ptr` at 3·n zeroed u64, else both are null and the kernel
        // centres on the image.
        check(OP, unsafe {
            mg_gaussian_pixel_weights(
                src(&labels)?,
                classes_ptr,
                ll(classes.len()),
                has_ignore,
                ignore,
                sums_ptr,
                dst(&mut out)?,
                ll(n),
                ll(h),
                ll(w),
                params.alpha,
                inv,
                self.stream(),
            )
        })?;
        Ok(out)
    }
}
