//! Pixel-wise cross-entropy, fused with its gradient, on the CPU.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::softmax::{channel_dims, log_sum_exp};
use crate::backend::LossOps;
use crate::error::{OpError, Result, shape_err};

impl LossOps for CpuBackend {
    fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        class_weights: Option<&Tensor>,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "cross_entropy";
        let (outer, c, inner) = channel_dims(logits.shape(), OP)?;
        let mut want = vec![logits.shape()[0]];
        want.extend_from_slice(&logits.shape()[2..]);
        if labels.shape() != want.as_slice() {
            return shape_err(
                OP,
                "labels",
                labels.shape(),
                format!("{want:?} for logits {:?}", logits.shape()),
            );
        }
        let weights = match class_weights {
            Some(w) if w.shape() != [c] => {
                return shape_err(OP, "class weights", w.shape(), format!("[{c}]"));
            }
            Some(w) => w.to_vec()?,
            None => vec![1.0; c],
        };
        let labels = labels.to_vec()?;
        // Validate every label once; `None` marks an ignored pixel.
        let classes: Vec<Option<usize>> = labels
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.fract() != 0.0 || !v.is_finite() {
                    return Err(OpError::BadLabel {
                        op: OP,
                        index: i,
                        value: v,
                        classes: c,
                    });
                }
                if ignore_index == Some(v as i64) {
                    return Ok(None);
                }
                if v < 0.0 || v as usize >= c {
                    return Err(OpError::BadLabel {
                        op: OP,
                        index: i,
                        value: v,
                        classes: c,
                    });
                }
                Ok(Some(v as usize))
            })
            .collect::<Result<_>>()?;
        let total_weight: f64 = classes.iter().flatten().map(|&k| weights[k] as f64).sum();
        if classes.iter().all(Option::is_none) {
            return Err(OpError::AllIgnored {
                op: OP,
                ignore_index: ignore_index.unwrap_or(-100),
            });
        }
        let logits = logits.contiguous()?;
        let ld = logits.host_data()?;
        let mut grad = vec![0.0f32; ld.len()];
        let inv_total = (1.0 / total_weight) as f32;
        let loss: f64 = grad
            .par_chunks_mut(c * inner.max(1))
            .enumerate()
            .map(|(n, g)| {
                let mut pixel = vec![0.0f32; c];
                let mut acc = 0.0f64;
                for i in 0..inner {
                    let Some(k) = classes[n * inner + i] else {
                        continue;
                    };
                    for (ch, p) in pixel.iter_mut().enumerate() {
                        *p = ld[(n * c + ch) * inner + i];
                    }
                    let lse = log_sum_exp(&pixel);
                    let w = weights[k];
                    acc += w as f64 * (lse - pixel[k]) as f64;
                    for (ch, &z) in pixel.iter().enumerate() {
                        let onehot = if ch == k { 1.0 } else { 0.0 };
                        g[ch * inner + i] = w * inv_total * ((z - lse).exp() - onehot);
                    }
                }
                acc
            })
            .sum();
        debug_assert_eq!(outer * c * inner, ld.len());
        Ok((
            Tensor::scalar((loss / total_weight) as f32),
            Tensor::from_vec(grad, logits.shape())?,
        ))
    }
}
