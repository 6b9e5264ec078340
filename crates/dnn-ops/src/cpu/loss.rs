//! Pixel-wise losses fused with their gradients on the CPU: cross-entropy (class weights,
//! ignore index), cross-entropy with per-pixel weights, soft multi-class Dice, and the
//! 2-D-Gaussian pixel-weight map.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::zeroed;
use super::softmax::{channel_dims, log_sum_exp};
use crate::attrs::{GaussianCenter, GaussianWeights};
use crate::backend::LossOps;
use crate::error::{OpError, Result, shape_err};

/// Validated labels of a `[N, C, ...]` problem: `None` marks an ignored pixel.
struct Labels {
    classes: Vec<Option<usize>>,
    outer: usize,
    c: usize,
    inner: usize,
}

/// `(outer, C, inner)` of `logits` `[N, C, ...]` once `labels` is checked to be `[N, ...]`.
fn label_dims(op: &'static str, logits: &Tensor, labels: &Tensor) -> Result<(usize, usize, usize)> {
    let (outer, c, inner) = channel_dims(logits.shape(), op)?;
    let mut want = vec![logits.shape()[0]];
    want.extend_from_slice(&logits.shape()[2..]);
    if labels.shape() != want.as_slice() {
        return shape_err(
            op,
            "labels",
            labels.shape(),
            format!("{want:?} for logits {:?}", logits.shape()),
        );
    }
    Ok((outer, c, inner))
}

/// The class of label `v` at `index` (`None`: ignored), or the error naming it.
fn label_class(
    op: &'static str,
    index: usize,
    v: f32,
    c: usize,
    ignore_index: Option<i64>,
) -> Result<Option<usize>> {
    let bad = || OpError::BadLabel {
        op,
        index,
        value: v,
        classes: c,
    };
    if v.fract() != 0.0 || !v.is_finite() {
        return Err(bad());
    }
    if ignore_index == Some(v as i64) {
        return Ok(None);
    }
    if v < 0.0 || v as usize >= c {
        return Err(bad());
    }
    Ok(Some(v as usize))
}

/// The error of labels that are all `ignore_index`.
fn all_ignored<T>(op: &'static str, ignore_index: Option<i64>) -> Result<T> {
    Err(OpError::AllIgnored {
        op,
        ignore_index: ignore_index.unwrap_or(-100),
    })
}

fn validate_labels(
    op: &'static str,
    logits: &Tensor,
    labels: &Tensor,
    ignore_index: Option<i64>,
) -> Result<Labels> {
    let (outer, c, inner) = label_dims(op, logits, labels)?;
    // A class index that is not ignored, tested with an integer conversion (`fract` is a libm
    // call on baseline x86-64); anything else takes `label_class`'s full check and error.
    let cf = c as f32;
    let plain_class =
        |v: f32| v >= 0.0 && v < cf && (v as i32) as f32 == v && ignore_index != Some(v as i64);
    let labels = labels.contiguous()?;
    let values = labels.host_data()?;
    // On the pool (a one-thread pass here held up 8 threads); the values that are not plain
    // classes then take the full check in order, so the first bad label is the one reported.
    let mut classes = Vec::with_capacity(values.len());
    classes.par_extend(
        values
            .par_iter()
            .with_min_len(4096)
            .map(|&v| plain_class(v).then_some(v as usize)),
    );
    if let Some(first) = values.par_iter().position_first(|&v| !plain_class(v)) {
        for (i, &v) in values.iter().enumerate().skip(first) {
            if !plain_class(v) {
                classes[i] = label_class(op, i, v, c, ignore_index)?;
            }
        }
    }
    if !classes.par_iter().any(Option::is_some) {
        return all_ignored(op, ignore_index);
    }
    Ok(Labels {
        classes,
        outer,
        c,
        inner,
    })
}

impl CpuBackend {
    /// The label validation of every loss, shared with the CUDA backend (which validates on the
    /// host so that both give the same typed errors): checks that `labels` is `[N, ...]` for
    /// `logits` `[N, C, ...]` and that every label is a class in `0..C` or `ignore_index`, not
    /// all ignored. Returns `(outer, C, inner, class of each pixel or None when ignored)`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn validated_labels(
        op: &'static str,
        logits: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<(usize, usize, usize, Vec<Option<usize>>)> {
        let lab = validate_labels(op, logits, labels, ignore_index)?;
        Ok((lab.outer, lab.c, lab.inner, lab.classes))
    }

    /// The same checks and errors as [`CpuBackend::validated_labels`] in one pass over the
    /// labels (read in place when they are a contiguous host tensor) with nothing kept per pixel:
    /// returns `(outer, C, inner, how many pixels are not ignored)`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn counted_labels(
        op: &'static str,
        logits: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<(usize, usize, usize, usize)> {
        let (outer, c, inner) = label_dims(op, logits, labels)?;
        let copied;
        let values = match labels.host_data() {
            Ok(v) => v,
            Err(_) => {
                copied = labels.to_vec()?;
                &copied
            }
        };
        // A class index in 0..c, tested with an integer conversion (`fract` is a libm call on
        // baseline x86-64: it made this check 4 ms of host time a step for 256² batches of 16).
        let cf = c as f32;
        let is_class = |v: f32| v >= 0.0 && v < cf && (v as i32) as f32 == v;
        let ignore_is_a_class = matches!(ignore_index, Some(i) if i >= 0 && (i as usize) < c);
        const CHUNK: usize = 4096;
        let mut counted = 0;
        for (chunk_index, chunk) in values.chunks(CHUNK).enumerate() {
            // The common case — every label a class, none ignored — counted in one pass;
            // anything else takes the full check, value by value.
            let classes = chunk.iter().filter(|&&v| is_class(v)).count();
            if classes == chunk.len() && !ignore_is_a_class {
                counted += classes;
                continue;
            }
            for (j, &v) in chunk.iter().enumerate() {
                if (is_class(v) && ignore_index != Some(v as i64))
                    || label_class(op, chunk_index * CHUNK + j, v, c, ignore_index)?.is_some()
                {
                    counted += 1;
                }
            }
        }
        if counted == 0 {
            return all_ignored(op, ignore_index);
        }
        Ok((outer, c, inner, counted))
    }

    /// The error of a weighted cross-entropy whose counted pixels weigh nothing.
    pub(crate) fn zero_total_weight<T>() -> Result<T> {
        Err(OpError::Attr {
            op: "cross_entropy",
            reason: "the weights of all counted pixels sum to zero".to_string(),
        })
    }

    /// The error of a pixel weight that is negative or not finite.
    pub(crate) fn bad_pixel_weight<T>(op: &'static str, index: usize, value: f32) -> Result<T> {
        Err(OpError::Attr {
            op,
            reason: format!(
                "pixel weight {value} at position {index} is not a finite non-negative number"
            ),
        })
    }
}

/// Weighted mean cross-entropy where pixel `i` (of sample `n`, position `p`) has weight
/// `weight(n·inner + p, class)`; shared by the class-weighted and pixel-weighted losses.
fn weighted_ce(
    logits: &Tensor,
    lab: &Labels,
    weight: impl Fn(usize, usize) -> f32 + Sync,
) -> Result<(Tensor, Tensor)> {
    let (c, inner) = (lab.c, lab.inner);
    // Fixed blocks summed in order: the same total whatever the thread count.
    const WEIGHT_BLOCK: usize = 4096;
    let total_weight: f64 = lab
        .classes
        .par_chunks(WEIGHT_BLOCK)
        .enumerate()
        .map(|(b, block)| {
            block
                .iter()
                .enumerate()
                .filter_map(|(i, k)| k.map(|k| weight(b * WEIGHT_BLOCK + i, k) as f64))
                .sum::<f64>()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    if total_weight <= 0.0 {
        return CpuBackend::zero_total_weight();
    }
    let logits = logits.contiguous()?;
    let ld = logits.host_data()?;
    let mut grad = zeroed(ld.len());
    let inv_total = (1.0 / total_weight) as f32;
    // Pixels are taken in blocks so that each class's logits and gradients are read and written
    // as contiguous runs (the layout is `[N, C, inner]`).
    const BLOCK: usize = 64;
    let loss: f64 = grad
        .par_chunks_mut((c * inner).max(1))
        .enumerate()
        .map(|(n, g)| {
            let mut pixel = vec![0.0f32; c];
            let mut exps = vec![0.0f32; c * BLOCK];
            let mut max = [0.0f32; BLOCK];
            let mut sum = [0.0f32; BLOCK];
            let mut acc = 0.0f64;
            let logits_of =
                |ch: usize, i0: usize, len: usize| &ld[(n * c + ch) * inner + i0..][..len];
            for i0 in (0..inner).step_by(BLOCK) {
                let len = BLOCK.min(inner - i0);
                let (max, sum) = (&mut max[..len], &mut sum[..len]);
                max.fill(f32::NEG_INFINITY);
                for ch in 0..c {
                    for (m, &z) in max.iter_mut().zip(logits_of(ch, i0, len)) {
                        *m = m.max(z);
                    }
                }
                sum.fill(0.0);
                for ch in 0..c {
                    let e = &mut exps[ch * BLOCK..][..len];
                    for ((e, &z), (&m, s)) in e
                        .iter_mut()
                        .zip(logits_of(ch, i0, len))
                        .zip(max.iter().zip(sum.iter_mut()))
                    {
                        *e = (z - m).exp();
                        *s += *e;
                    }
                }
                for j in 0..len {
                    let i = i0 + j;
                    let Some(k) = lab.classes[n * inner + i] else {
                        for ch in 0..c {
                            g[ch * inner + i] = 0.0;
                        }
                        continue;
                    };
                    let w = weight(n * inner + i, k);
                    if !max[j].is_finite() {
                        // A logit of ±∞ (or NaN in every class): the general form. A NaN beside
                        // finite logits stays on the fast path and gives NaN there too.
                        for (ch, p) in pixel.iter_mut().enumerate() {
                            *p = ld[(n * c + ch) * inner + i];
                        }
                        let lse = log_sum_exp(&pixel);
                        acc += w as f64 * (lse - pixel[k]) as f64;
                        for (ch, &z) in pixel.iter().enumerate() {
                            let onehot = if ch == k { 1.0 } else { 0.0 };
                            g[ch * inner + i] = w * inv_total * ((z - lse).exp() - onehot);
                        }
                        continue;
                    }
                    // softmax = e / Σe with e = exp(z − max).
                    let lse = max[j] + sum[j].ln();
                    acc += w as f64 * (lse - ld[(n * c + k) * inner + i]) as f64;
                    let scale = w * inv_total / sum[j];
                    for ch in 0..c {
                        let onehot = if ch == k { w * inv_total } else { 0.0 };
                        g[ch * inner + i] = scale * exps[ch * BLOCK + j] - onehot;
                    }
                }
            }
            acc
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    debug_assert_eq!(lab.outer * c * inner, ld.len());
    Ok((
        Tensor::scalar((loss / total_weight) as f32),
        Tensor::from_vec(grad, logits.shape())?,
    ))
}

impl LossOps for CpuBackend {
    fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        class_weights: Option<&Tensor>,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "cross_entropy";
        let lab = validate_labels(OP, logits, labels, ignore_index)?;
        let weights = match class_weights {
            Some(w) if w.shape() != [lab.c] => {
                return shape_err(OP, "class weights", w.shape(), format!("[{}]", lab.c));
            }
            Some(w) => w.to_vec()?,
            None => vec![1.0; lab.c],
        };
        weighted_ce(logits, &lab, |_, k| weights[k])
    }

    fn pixel_weighted_cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        pixel_weights: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "pixel_weighted_cross_entropy";
        let lab = validate_labels(OP, logits, labels, ignore_index)?;
        if pixel_weights.shape() != labels.shape() {
            return shape_err(
                OP,
                "pixel weights",
                pixel_weights.shape(),
                format!("{:?} (the labels' shape)", labels.shape()),
            );
        }
        let w = pixel_weights.to_vec()?;
        if let Some(bad) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return CpuBackend::bad_pixel_weight(OP, bad, w[bad]);
        }
        weighted_ce(logits, &lab, |i, _| w[i])
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
        let lab = validate_labels(OP, logits, labels, ignore_index)?;
        let (c, inner) = (lab.c, lab.inner);
        let logits = logits.contiguous()?;
        let ld = logits.host_data()?;
        // Softmax probabilities of every counted pixel, and per-class sums in f64.
        let mut probs = zeroed(ld.len());
        let (mut inter, mut psum, mut tsum) = (vec![0.0f64; c], vec![0.0f64; c], vec![0.0f64; c]);
        let mut pixel = vec![0.0f32; c];
        for n in 0..lab.outer {
            for i in 0..inner {
                let Some(k) = lab.classes[n * inner + i] else {
                    continue;
                };
                for (ch, p) in pixel.iter_mut().enumerate() {
                    *p = ld[(n * c + ch) * inner + i];
                }
                let lse = log_sum_exp(&pixel);
                for ch in 0..c {
                    let p = (pixel[ch] - lse).exp();
                    probs[(n * c + ch) * inner + i] = p;
                    psum[ch] += p as f64;
                }
                inter[k] += probs[(n * c + k) * inner + i] as f64;
                tsum[k] += 1.0;
            }
        }
        let e = eps as f64;
        let denom: Vec<f64> = (0..c).map(|ch| psum[ch] + tsum[ch] + e).collect();
        let dice: Vec<f64> = (0..c).map(|ch| (2.0 * inter[ch] + e) / denom[ch]).collect();
        let loss = 1.0 - dice.iter().sum::<f64>() / c as f64;
        // dL/dp_ic = −(1/C)·(2·t_ic·denom_c − (2·I_c + ε)) / denom_c², then through the softmax.
        let mut grad = zeroed(ld.len());
        let mut gp = vec![0.0f64; c];
        for n in 0..lab.outer {
            for i in 0..inner {
                let Some(k) = lab.classes[n * inner + i] else {
                    continue;
                };
                let mut dot = 0.0f64;
                for (ch, g) in gp.iter_mut().enumerate() {
                    let t = if ch == k { 1.0 } else { 0.0 };
                    *g = -(2.0 * t * denom[ch] - (2.0 * inter[ch] + e))
                        / (denom[ch] * denom[ch] * c as f64);
                    dot += *g * probs[(n * c + ch) * inner + i] as f64;
                }
                for (ch, g) in gp.iter().enumerate() {
                    let at = (n * c + ch) * inner + i;
                    grad[at] = (probs[at] as f64 * (g - dot)) as f32;
                }
            }
        }
        Ok((
            Tensor::scalar(loss as f32),
            Tensor::from_vec(grad, logits.shape())?,
        ))
    }

    fn gaussian_pixel_weights(&self, labels: &Tensor, params: &GaussianWeights) -> Result<Tensor> {
        let (n, h, w) = params.validate("gaussian_pixel_weights", labels.shape())?;
        let l = labels.to_vec()?;
        let inv = params.inv_two_sigma_sq(h, w);
        let classes = params.sorted_foreground();
        let mut out = zeroed(l.len());
        if out.is_empty() {
            return Ok(Tensor::from_vec(out, labels.shape())?);
        }
        out.par_chunks_mut(h * w)
            .zip(l.par_chunks(h * w))
            .take(n)
            .for_each(|(o, plane)| {
                // Integer sums of the foreground coordinates: exact, in any order.
                let (mut sx, mut sy, mut count) = (0u64, 0u64, 0u64);
                if params.center == GaussianCenter::Centroid {
                    for (i, &v) in plane.iter().enumerate() {
                        if params.foreground_class(v, &classes).is_some() {
                            sx += (i % w) as u64;
                            sy += (i / w) as u64;
                            count += 1;
                        }
                    }
                }
                let (mx, my) = if count > 0 {
                    let c = count as f64;
                    ((sx as f64 / c) as f32, (sy as f64 / c) as f32)
                } else {
                    ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0)
                };
                for (i, o) in o.iter_mut().enumerate() {
                    let (dx, dy) = ((i % w) as f32 - mx, (i / w) as f32 - my);
                    *o = 1.0 + params.alpha * (-(dx * dx + dy * dy) * inv).exp();
                }
            });
        Ok(Tensor::from_vec(out, labels.shape())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass count agrees with the full validation: the same count, or the same error
    /// at the same position, in chunks that are all classes and in chunks that are not.
    #[test]
    fn counted_labels_agree_with_the_full_validation() {
        let (n, c, hw) = (2, 3, 73 * 71);
        let logits = Tensor::zeros(&[n, c, 73, 71]);
        let base: Vec<f32> = (0..n * hw).map(|i| ((i * 7) % c) as f32).collect();
        let mut cases: Vec<(Vec<f32>, Option<i64>)> =
            vec![(base.clone(), None), (base.clone(), Some(255))];
        let mut ignored = base.clone();
        ignored[5000] = 255.0;
        ignored[9] = 255.0;
        cases.push((ignored.clone(), Some(255)));
        cases.push((base.clone(), Some(1)));
        for (at, bad) in [
            (6000, 2.5),
            (4095, 3.0),
            (4096, -1.0),
            (10, f32::NAN),
            (7000, 255.0),
            (1, f32::INFINITY),
            (8191, 1e10),
        ] {
            let mut labels = base.clone();
            labels[at] = bad;
            cases.push((labels, Some(255)));
            let mut labels = ignored.clone();
            labels[at] = bad;
            cases.push((labels, None));
        }
        for (labels, ignore) in cases {
            let t = Tensor::from_vec(labels.clone(), &[n, 73, 71]).unwrap();
            let full = validate_labels("cross_entropy", &logits, &t, ignore);
            let counted = CpuBackend::counted_labels("cross_entropy", &logits, &t, ignore);
            match (full, counted) {
                (Ok(l), Ok((outer, cc, inner, count))) => {
                    assert_eq!((l.outer, l.c, l.inner), (outer, cc, inner));
                    assert_eq!(
                        l.classes.iter().flatten().count(),
                        count,
                        "ignore {ignore:?}"
                    );
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("full {:?} vs counted {:?}", a.map(|l| l.inner), b),
            }
        }
    }
}
