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

impl CpuBackend {
    /// The checks of the confusion matrix, shared with the CUDA backend: shapes as
    /// [`check_metric_shapes`], and every label a class in `0..C` unless it is `ignore_index`
    /// (the first offending label is reported). Returns `(outer, c, inner)` and the labels.
    pub(crate) fn validated_metric_labels(
        op: &'static str,
        logits: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<((usize, usize, usize), Vec<f32>)> {
        let dims = check_metric_shapes(op, logits, labels)?;
        let c = dims.1;
        let values = labels.to_vec()?;
        for (i, &label) in values.iter().enumerate() {
            if is_ignored(label, ignore_index) {
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
        }
        Ok((dims, values))
    }
}

/// Whether a metric label is the ignored one (an integer equal to `ignore_index`).
fn is_ignored(label: f32, ignore_index: Option<i64>) -> bool {
    label.is_finite() && ignore_index == Some(label as i64) && label.fract() == 0.0
}

impl MetricOps for CpuBackend {
    fn confusion_matrix(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<Vec<u64>> {
        let op = "confusion_matrix";
        let ((_, c, inner), values) =
            Self::validated_metric_labels(op, logits, labels, ignore_index)?;
        let x = logits.contiguous()?;
        let x = x.host_data()?;
        let mut counts = vec![0u64; c * c];
        for (i, &label) in values.iter().enumerate() {
            if is_ignored(label, ignore_index) {
                continue;
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
