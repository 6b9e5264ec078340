//! Evaluation results of a segmentation model, accumulated over a whole dataset.

use dnn_data::{SegmentationLoader, SegmentationSource};
use dnn_layers::loss::Loss;
use dnn_layers::metrics::ConfusionMatrix;
use dnn_layers::{Mode, Module};
use dnn_ops::{Backend, Graph};
use serde::{Deserialize, Serialize};

use crate::error::{Result, UnetError};
use crate::model::UNet;

/// The mask value of pixels that count for nothing (padding added by preprocessing).
pub const IGNORE_LABEL: i64 = 255;

/// Metrics of one pass over an evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub images: usize,
    pub loss: f64,
    pub pixel_acc: f64,
    /// IoU per class (`null` in JSON for a class absent from truth and prediction).
    pub iou: Vec<Option<f64>>,
    pub miou: f64,
    /// Foreground (every class but "background") against background.
    pub fg_iou: f64,
}

/// Classes that count as foreground for `fg_iou`: every class not named "background" (for
/// Oxford-IIIT Pet: pet ∪ border), or every class but 0 when none is named so.
pub fn foreground_classes(class_names: &[String]) -> Vec<usize> {
    match class_names.iter().position(|n| n == "background") {
        Some(bg) => (0..class_names.len()).filter(|&k| k != bg).collect(),
        None => (1..class_names.len()).collect(),
    }
}

fn finite_or_none(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl EvalReport {
    pub fn from_confusion(
        cm: &ConfusionMatrix,
        images: usize,
        loss: f64,
        foreground: &[usize],
    ) -> Self {
        Self {
            images,
            loss,
            pixel_acc: cm.pixel_accuracy(),
            iou: cm.iou().into_iter().map(finite_or_none).collect(),
            miou: cm.mean_iou(),
            fg_iou: cm.foreground_iou(foreground),
        }
    }

    /// The one-line JSON object `eval-unet` prints last:
    /// `{"images":N,"pixel_acc":…,"iou":[…],"miou":…,"fg_iou":…,"loss":…}`.
    pub fn json_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            images: usize,
            pixel_acc: f64,
            iou: &'a [Option<f64>],
            miou: f64,
            fg_iou: f64,
            loss: f64,
        }
        let line = Line {
            images: self.images,
            pixel_acc: self.pixel_acc,
            iou: &self.iou,
            miou: self.miou,
            fg_iou: self.fg_iou,
            loss: self.loss,
        };
        serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Evaluates `model` on every batch of `loader` (evaluation mode; no augmentation).
pub fn evaluate(
    model: &mut UNet,
    backend: &dyn Backend,
    loader: &SegmentationLoader,
    loss: &dyn Loss,
) -> Result<EvalReport> {
    let classes = model.config().classes;
    let names = loader.source().class_names().to_vec();
    if names.len() != classes {
        return Err(UnetError::Data(format!(
            "the dataset has {} classes ({names:?}), the model {classes}",
            names.len()
        )));
    }
    let mut cm = ConfusionMatrix::new(classes);
    let (mut loss_sum, mut images) = (0.0f64, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let g = Graph::inference(backend);
        let x = g.input(batch.images.clone());
        let out = model.forward(&g, x, Mode::Eval)?;
        loss_sum +=
            g.value(loss.compute(&g, out, &batch.masks)?).item()? as f64 * batch.len() as f64;
        let counts = backend.confusion_matrix(&g.value(out), &batch.masks, Some(IGNORE_LABEL))?;
        cm.add_counts(&counts)?;
        images += batch.len();
    }
    if images == 0 {
        return Err(UnetError::Data(format!(
            "no image to evaluate in {}",
            loader.source().describe()
        )));
    }
    Ok(EvalReport::from_confusion(
        &cm,
        images,
        loss_sum / images as f64,
        &foreground_classes(&names),
    ))
}

/// Short description of a source for logs.
pub fn describe(source: &dyn SegmentationSource) -> String {
    format!("{} ({} images)", source.describe(), source.len())
}
