//! The confusion matrix on the CPU.

use magma_tensor::Tensor;

use super::CpuBackend;
use super::softmax::channel_dims;
use crate::backend::MetricOps;
use crate::error::{OpError, Result, shape_err};

/// Checks that `labels` is `[N, ...]` for `logits` `[N, C, ...]`; returns `(outer, c, inner)`.
pub(crate) fn check_metric_shapes(
    op: &'static str,
    logits: &Tensor,
    labels: &Tensor,
) -> Result<(usize, usize, usize)> {
    let dims = channel_dims(logits.shape(), op)?;
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
    Ok(dims)
}

impl MetricOps for CpuBackend {
    fn confusion_matrix(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<Vec<u64>> {
        let op = "confusion_matrix";
        let (_, c, inner) = check_metric_shapes(op, logits, labels)?;
        let x = logits.contiguous()?;
        let x = x.host_data()?;
        let mut counts = vec![0u64; c * c];
        for (i, &label) in labels.to_vec()?.iter().enumerate() {
            if label.is_finite() && ignore_index == Some(label as i64) && label.fract() == 0.0 {
                continue;
            }
            if !label.is_finite() || label < 0.0 || label.fract() != 0.0 || label as usize >= c {
                return Err(OpError::BadLabel {
                    op,
                    index: i,
                    value: label,
                    classes: c,
                });
            }
            let (n, p) = (i / inner, i % inner);
            let base = n * c * inner + p;
            let mut best = 0;
            for ch in 1..c {
                if x[base + ch * inner] > x[base + best * inner] {
                    best = ch;
                }
            }
            counts[label as usize * c + best] += 1;
        }
        Ok(counts)
    }
}
