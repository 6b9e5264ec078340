//! Classification metrics computed from outputs and integer targets.

use dnn_ops::Tensor;

use crate::error::Result;

/// `(correct, counted)` of the argmax over dimension 1 of `output` (`[N, C, ...]`) against integer
/// `target` (`[N, ...]`); `None` when the target is not a label tensor of that shape (regression).
/// Elements equal to `ignore_index` are not counted.
pub fn count_correct(
    output: &Tensor,
    target: &Tensor,
    ignore_index: Option<i64>,
) -> Result<Option<(usize, usize)>> {
    let shape = output.shape();
    if shape.len() < 2 {
        return Ok(None);
    }
    let mut label_shape = vec![shape[0]];
    label_shape.extend_from_slice(&shape[2..]);
    if target.shape() != label_shape.as_slice() {
        return Ok(None);
    }
    let (c, inner) = (shape[1], shape[2..].iter().product::<usize>());
    let o = output.to_vec()?;
    let t = target.to_vec()?;
    let (mut correct, mut counted) = (0, 0);
    for (i, &label) in t.iter().enumerate() {
        if ignore_index == Some(label as i64) {
            continue;
        }
        let (n, p) = (i / inner.max(1), i % inner.max(1));
        let mut best = 0;
        for ch in 1..c {
            if o[(n * c + ch) * inner + p] > o[(n * c + best) * inner + p] {
                best = ch;
            }
        }
        counted += 1;
        correct += usize::from(best as f32 == label);
    }
    Ok(Some((correct, counted)))
}

/// A confusion matrix accumulated over a whole evaluation set (rows: truth, columns: prediction).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Count of pixels with truth `t` predicted as `p`.
    pub fn get(&self, t: usize, p: usize) -> u64 {
        self.counts[t * self.classes + p]
    }

    /// Adds the argmax (over dimension 1) of `output` `[N, C, ...]` against labels `[N, ...]`;
    /// labels equal to `ignore_index` are skipped, other out-of-range labels are an error.
    pub fn add_batch(
        &mut self,
        output: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<()> {
        let shape = output.shape();
        if shape.len() < 2 || shape[1] != self.classes {
            return Err(crate::error::LayerError::Data(format!(
                "confusion matrix of {} classes cannot take output {shape:?}",
                self.classes
            )));
        }
        let mut want = vec![shape[0]];
        want.extend_from_slice(&shape[2..]);
        if labels.shape() != want.as_slice() {
            return Err(crate::error::LayerError::Data(format!(
                "labels {:?} do not match output {shape:?}",
                labels.shape()
            )));
        }
        let (c, inner) = (self.classes, shape[2..].iter().product::<usize>());
        let o = output.to_vec()?;
        for (i, &label) in labels.to_vec()?.iter().enumerate() {
            if ignore_index == Some(label as i64) {
                continue;
            }
            if label < 0.0 || label.fract() != 0.0 || label as usize >= c {
                return Err(crate::error::LayerError::Data(format!(
                    "label {label} at {i} is not a class in 0..{c}"
                )));
            }
            let (n, p) = (i / inner, i % inner);
            let mut best = 0;
            for ch in 1..c {
                if o[(n * c + ch) * inner + p] > o[(n * c + best) * inner + p] {
                    best = ch;
                }
            }
            self.counts[label as usize * c + best] += 1;
        }
        Ok(())
    }

    /// Adds row-major `[C × C]` counts (as `MetricOps::confusion_matrix` returns them).
    pub fn add_counts(&mut self, counts: &[u64]) -> Result<()> {
        if counts.len() != self.counts.len() {
            return Err(crate::error::LayerError::Data(format!(
                "confusion counts of length {} do not fit {} classes",
                counts.len(),
                self.classes
            )));
        }
        self.counts
            .iter_mut()
            .zip(counts)
            .for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Adds another matrix of the same size.
    pub fn merge(&mut self, other: &ConfusionMatrix) {
        self.counts
            .iter_mut()
            .zip(&other.counts)
            .for_each(|(a, b)| *a += b);
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Correct pixels over counted pixels.
    pub fn pixel_accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|k| self.get(k, k)).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// Intersection over union per class (`NaN` for a class absent from both truth and prediction).
    pub fn iou(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|k| {
                let tp = self.get(k, k) as f64;
                let truth: u64 = (0..self.classes).map(|p| self.get(k, p)).sum();
                let pred: u64 = (0..self.classes).map(|t| self.get(t, k)).sum();
                let union = truth as f64 + pred as f64 - tp;
                if union == 0.0 { f64::NAN } else { tp / union }
            })
            .collect()
    }

    /// Mean IoU over the classes present in truth or prediction.
    pub fn mean_iou(&self) -> f64 {
        let v: Vec<f64> = self.iou().into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    /// Dice (F1) per class.
    pub fn dice(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|k| {
                let tp = self.get(k, k) as f64;
                let truth: u64 = (0..self.classes).map(|p| self.get(k, p)).sum();
                let pred: u64 = (0..self.classes).map(|t| self.get(t, k)).sum();
                let denom = truth as f64 + pred as f64;
                if denom == 0.0 {
                    f64::NAN
                } else {
                    2.0 * tp / denom
                }
            })
            .collect()
    }

    /// Binary IoU of `foreground` classes (merged) against the rest; for Oxford-IIIT Pet the
    /// common protocol is foreground = pet ∪ border = `[0, 2]`.
    pub fn foreground_iou(&self, foreground: &[usize]) -> f64 {
        let fg = |k: usize| foreground.contains(&k);
        let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
        for t in 0..self.classes {
            for p in 0..self.classes {
                let n = self.get(t, p);
                match (fg(t), fg(p)) {
                    (true, true) => tp += n,
                    (false, true) => fp += n,
                    (true, false) => fneg += n,
                    _ => {}
                }
            }
        }
        let union = tp + fp + fneg;
        if union == 0 {
            f64::NAN
        } else {
            tp as f64 / union as f64
        }
    }
}
