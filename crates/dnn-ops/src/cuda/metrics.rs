//! The confusion matrix on the GPU (kernel in `cuda/metrics.cu`): labels are validated on the
//! host with the CPU's checks (same typed errors), counts are exact integer atomics, and only the
//! `C × C` counts travel back.

use magma_tensor::Tensor;

use super::CudaBackend;
use super::elementwise::{dst, ll, src, to_words, zeroed_words};
use super::kernels::{Stream, check};
use crate::backend::MetricOps;
use crate::cpu::CpuBackend;
use crate::error::Result;

unsafe extern "C" {
    fn mg_confusion_matrix(
        logits: *const f32,
        labels: *const f32,
        counts: *mut u64,
        outer: i64,
        c: i64,
        inner: i64,
        has_ignore: i32,
        ignore_index: i64,
        s: Stream,
    ) -> i32;
}

impl MetricOps for CudaBackend {
    fn confusion_matrix(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<Vec<u64>> {
        let op = "confusion_matrix";
        let ((outer, c, inner), _) =
            CpuBackend::validated_metric_labels(op, logits, labels, ignore_index)?;
        if c == 0 || outer * inner == 0 {
            return Ok(vec![0; c * c]);
        }
        let (logits, labels) = (self.input(logits)?, self.input(labels)?);
        let mut counts = zeroed_words(self, c * c)?;
        // SAFETY: `logits` holds outer·c·inner elements, `labels` outer·inner validated labels
        // (each a class below c or the ignored one), `counts` c·c zeroed u64.
        check(op, unsafe {
            mg_confusion_matrix(
                src(&logits)?,
                src(&labels)?,
                dst(&mut counts)? as *mut u64,
                ll(outer),
                ll(c),
                ll(inner),
                i32::from(ignore_index.is_some()),
                ignore_index.unwrap_or(0),
                self.stream(),
            )
        })?;
        let mut words = to_words(&counts.to_vec()?);
        words.truncate(c * c);
        Ok(words)
    }
}
