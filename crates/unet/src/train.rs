//! Training a U-Net: data, loop, per-epoch evaluation, checkpoints, metrics and figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dnn_data::{Augment, LoaderConfig, SegmentationLoader, SegmentationSource};
use dnn_layers::loss::{
    CeDiceLoss, CrossEntropyLoss, DiceLoss, GaussianWeightedCrossEntropy, Loss,
};
use dnn_layers::optim::{Adam, Optimizer};
use dnn_layers::{Mode, Module};
use dnn_ops::{Backend, Graph};
use magma_tensor::SeededRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointMeta, LoadedCheckpoint};
use crate::config::UNetConfig;
use crate::error::{Result, UnetError};
use crate::metrics::{EvalReport, IGNORE_LABEL, evaluate};
use crate::model::UNet;
use crate::report;

/// The pixel-wise loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy.
    Ce,
    /// Cross-entropy weighted by a 2-D Gaussian centred on the pet (α = 1, s = 0.25).
    GaussianCe,
    /// Soft multi-class Dice.
    Dice,
    /// Cross-entropy + Dice.
    CeDice,
}

impl LossKind {
    /// The loss object (padding pixels, label 255, are ignored).
    pub fn build(self) -> Box<dyn Loss> {
        let ignore = Some(IGNORE_LABEL);
        match self {
            LossKind::Ce => Box::new(CrossEntropyLoss {
                class_weights: None,
                ignore_index: ignore,
            }),
            LossKind::GaussianCe => Box::new(GaussianWeightedCrossEntropy {
                ignore_index: ignore,
                ..Default::default()
            }),
            LossKind::Dice => Box::new(DiceLoss {
                ignore_index: ignore,
                ..Default::default()
            }),
            LossKind::CeDice => Box::new(CeDiceLoss::new(ignore)),
        }
    }
}

/// Data augmentation of the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentKind {
    None,
    /// Horizontal flips.
    Hflip,
    /// Flips, random resized crops, small rotations and scaling, colour jitter.
    Standard,
}

impl AugmentKind {
    fn build(self) -> Option<Augment> {
        match self {
            AugmentKind::None => None,
            AugmentKind::Hflip => Some(Augment::hflip_only()),
            AugmentKind::Standard => Some(Augment::standard()),
        }
    }
}

/// What to train on and how (stored in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub split: String,
    /// Validation data; `None` = the `val_split` of `data`.
    pub val_data: Option<PathBuf>,
    pub val_split: String,
    /// Images and masks are resized to `size × size`.
    pub size: usize,
    pub loss: LossKind,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    pub augment: AugmentKind,
    /// Loader threads decoding ahead of training.
    pub workers: usize,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(UnetError::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if self.size < 8 {
            return bad(format!("--size must be at least 8, got {}", self.size));
        }
        if !self.lr.is_finite() || self.lr <= 0.0 {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        Ok(())
    }
}

/// Metrics of one epoch, as written to `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub pixel_acc: f64,
    pub iou: Vec<Option<f64>>,
    pub miou: f64,
    pub fg_iou: f64,
    pub seconds: f64,
    pub lr: f32,
}

/// Where a run writes and whether it shows progress bars.
#[derive(Debug, Clone)]
pub struct TrainRun {
    pub out: PathBuf,
    pub progress: bool,
}

/// The outcome of [`train`].
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub history: Vec<EpochMetrics>,
    pub best_miou: f64,
    pub out: PathBuf,
}

impl TrainSummary {
    /// `final: epoch=E pixel_acc=… miou=… fg_iou=…`, the last line of `train-unet`.
    pub fn final_line(&self) -> String {
        match self.history.last() {
            Some(m) => format!(
                "final: epoch={} pixel_acc={:.4} miou={:.4} fg_iou={:.4}",
                m.epoch, m.pixel_acc, m.miou, m.fg_iou
            ),
            None => "final: no epoch trained".to_string(),
        }
    }
}

/// Opens the training and validation sources of a configuration.
pub fn open_sources(
    config: &TrainConfig,
) -> Result<(Arc<dyn SegmentationSource>, Arc<dyn SegmentationSource>)> {
    let train: Arc<dyn SegmentationSource> =
        dnn_data::open_segmentation(&config.data, &config.split)?.into();
    let val_path = config.val_data.as_deref().unwrap_or(&config.data);
    let val: Arc<dyn SegmentationSource> =
        dnn_data::open_segmentation(val_path, &config.val_split)?.into();
    if train.is_empty() {
        return Err(UnetError::Data(format!(
            "the training split is empty: {}",
            train.describe()
        )));
    }
    if val.is_empty() {
        return Err(UnetError::Data(format!(
            "the validation split is empty: {}",
            val.describe()
        )));
    }
    if train.class_names() != val.class_names() {
        return Err(UnetError::Data(format!(
            "training classes {:?} differ from validation classes {:?}",
            train.class_names(),
            val.class_names()
        )));
    }
    Ok((train, val))
}

/// A loader over `source` for training (shuffled, augmented) or evaluation.
pub fn loader(
    source: Arc<dyn SegmentationSource>,
    config: &TrainConfig,
    training: bool,
) -> Result<SegmentationLoader> {
    let mut lc = LoaderConfig::new(config.batch, [config.size, config.size]);
    lc.seed = config.seed;
    lc.workers = config.workers;
    lc.prefetch = 2;
    lc.shuffle = training;
    lc.augment = if training {
        config.augment.build()
    } else {
        None
    };
    Ok(SegmentationLoader::new(source, lc)?)
}

fn mix_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    let mut r = SeededRng::new(seed ^ ((epoch as u64) << 32) ^ step as u64);
    r.next_u64()
}

/// One optimisation step; returns the batch loss.
fn train_step(
    model: &mut UNet,
    backend: &dyn Backend,
    loss: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    batch: &dnn_data::SegmentationBatch,
    epoch: usize,
    step: usize,
) -> Result<f32> {
    let g = Graph::new(backend);
    let x = g.input(batch.images.clone());
    let logits = model.forward(&g, x, Mode::Train)?;
    let l = loss.compute(&g, logits, &batch.masks)?;
    let value = g.value(l).item()?;
    if !value.is_finite() {
        return Err(dnn_layers::LayerError::NonFiniteLoss {
            epoch,
            step,
            value,
            hint: format!("batch {:?}; lower --lr or check these images", batch.names),
        }
        .into());
    }
    let grads = g.backward(l)?;
    if let Some(param) = first_non_finite_gradient(backend, model, &grads)? {
        return Err(dnn_layers::LayerError::NonFiniteGradient { param, epoch, step }.into());
    }
    drop(g);
    optimizer.step(backend, model, &grads)?;
    Ok(value)
}

/// Names the first parameter whose gradient holds NaN or ±Inf.
///
/// One host synchronisation per step: the sums of all gradients are added on the backend's
/// device (NaN and Inf survive summation) and only the total is read; each gradient is looked at
/// only when that total is not finite.
fn first_non_finite_gradient(
    backend: &dyn Backend,
    model: &UNet,
    grads: &dnn_ops::Gradients,
) -> Result<Option<String>> {
    let mut total: Option<dnn_ops::Tensor> = None;
    let mut failure = None;
    model.visit_parameters(&mut |p| {
        let Some(grad) = grads.param(p.id()) else {
            return;
        };
        if failure.is_some() {
            return;
        }
        let summed = backend.sum_all(grad).and_then(|s| match total.take() {
            None => Ok(s),
            Some(acc) => backend.add(&acc, &s),
        });
        match summed {
            Ok(s) => total = Some(s),
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    if total.map_or(Ok(true), |t| t.item().map(f32::is_finite))? {
        return Ok(None);
    }
    let mut bad = None;
    model.visit_parameters(&mut |p| {
        if bad.is_none()
            && grads
                .param(p.id())
                .is_some_and(|t| t.has_non_finite().unwrap_or(true))
        {
            bad = Some(p.name().to_string());
        }
    });
    Ok(bad)
}

fn table_header(class_names: &[String]) -> String {
    let ious: String = class_names
        .iter()
        .map(|n| format!(" {:>10}", format!("iou_{n}")))
        .collect();
    format!(
        "{:>5} {:>10} {:>9} {:>9} {:>7} {:>7}{ious} {:>7}",
        "epoch", "train_loss", "val_loss", "pixel_acc", "mIoU", "fg_IoU", "time"
    )
}

fn table_row(m: &EpochMetrics) -> String {
    let ious: String = m
        .iou
        .iter()
        .map(|v| format!(" {:>10}", v.map_or("-".to_string(), |x| format!("{x:.4}"))))
        .collect();
    format!(
        "{:>5} {:>10.4} {:>9.4} {:>9.4} {:>7.4} {:>7.4}{ious} {:>6.1}s",
        m.epoch, m.train_loss, m.val_loss, m.pixel_acc, m.miou, m.fg_iou, m.seconds
    )
}

/// Trains `unet` as `config` says, writing `metrics.json`, `best.h5`, `last.h5`, `curves.png`
/// and `predictions.png` into `run.out`; with `resume`, continues that checkpoint exactly.
pub fn train(
    config: &TrainConfig,
    unet: &UNetConfig,
    run: &TrainRun,
    backend: &dyn Backend,
    resume: Option<(&LoadedCheckpoint, &Path)>,
    log: &mut dyn FnMut(&str),
) -> Result<TrainSummary> {
    config.validate()?;
    let (train_src, val_src) = open_sources(config)?;
    let class_names = train_src.class_names().to_vec();
    if class_names.len() != unet.classes {
        return Err(UnetError::Data(format!(
            "the data has {} classes {class_names:?}, the model {}",
            class_names.len(),
            unet.classes
        )));
    }
    log(&format!(
        "train: {}",
        crate::metrics::describe(train_src.as_ref())
    ));
    log(&format!(
        "val:   {}",
        crate::metrics::describe(val_src.as_ref())
    ));
    let train_loader = loader(train_src, config, true)?;
    let val_loader = loader(val_src.clone(), config, false)?;
    let loss = config.loss.build();
    let mut model = UNet::new(unet, &mut SeededRng::new(config.seed))?;
    let mut optimizer = Adam::new(config.lr);
    let (mut history, mut best_miou, start) = match resume {
        Some((ck, path)) => {
            ck.restore_model(&mut model, path)?;
            ck.restore_optimizer(&model, &mut optimizer)?;
            log(&format!(
                "resumed from {} after epoch {} (optimizer step {})",
                path.display(),
                ck.meta.epoch,
                ck.optimizer_step
            ));
            (ck.meta.history.clone(), ck.meta.best_miou, ck.meta.epoch)
        }
        None => (Vec::new(), f64::NEG_INFINITY, 0),
    };
    log(&format!("model: {}", model.describe()));
    log(&format!(
        "loss {}, Adam lr {:e}, batch {}, {}×{} images, augmentation {:?}, {} epochs, backend {}",
        loss.name(),
        config.lr,
        config.batch,
        config.size,
        config.size,
        config.augment,
        config.epochs,
        backend.name()
    ));
    std::fs::create_dir_all(&run.out).map_err(|e| UnetError::File {
        path: run.out.clone(),
        reason: e.to_string(),
    })?;
    if start >= config.epochs {
        log(&format!(
            "nothing to do: the checkpoint already has {start} of {} epochs",
            config.epochs
        ));
    }
    log(&table_header(&class_names));
    for epoch in start + 1..=config.epochs {
        let started = Instant::now();
        let steps = train_loader.batches_per_epoch();
        let pb = dnn_layers::progress::bar(
            steps as u64,
            format!("epoch {epoch}/{}", config.epochs),
            run.progress,
        );
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for (step, batch) in train_loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            model.set_dropout_seed(mix_seed(config.seed, epoch, step));
            let l = train_step(
                &mut model,
                backend,
                loss.as_ref(),
                &mut optimizer,
                &batch,
                epoch,
                step + 1,
            )?;
            loss_sum += l as f64 * batch.len() as f64;
            seen += batch.len();
            pb.inc(1);
            pb.set_message(format!("loss {:.4}", loss_sum / seen.max(1) as f64));
        }
        pb.finish_and_clear();
        let val: EvalReport = evaluate(&mut model, backend, &val_loader, loss.as_ref())?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            val_loss: val.loss,
            pixel_acc: val.pixel_acc,
            iou: val.iou.clone(),
            miou: val.miou,
            fg_iou: val.fg_iou,
            seconds: started.elapsed().as_secs_f64(),
            lr: optimizer.learning_rate(),
        };
        log(&table_row(&metrics));
        history.push(metrics);
        let improved = val.miou > best_miou;
        if improved {
            best_miou = val.miou;
        }
        let meta = CheckpointMeta {
            unet: unet.clone(),
            train: config.clone(),
            epoch,
            best_miou,
            history: history.clone(),
            class_names: class_names.clone(),
        };
        checkpoint::save(&run.out.join("last.h5"), &model, &optimizer, &meta)?;
        if improved {
            checkpoint::save(&run.out.join("best.h5"), &model, &optimizer, &meta)?;
        }
        report::write_metrics(&run.out.join("metrics.json"), &history, &class_names)?;
    }
    // The figures are conveniences: a failure to draw them is reported, never fatal to a run
    // whose checkpoints and metrics are already written.
    if let Err(e) = report::write_curves(&run.out.join("curves.png"), &history) {
        log(&format!("warning: curves.png not written: {e}"));
    }
    if let Err(e) = report::write_predictions(
        &run.out.join("predictions.png"),
        &mut model,
        backend,
        &val_loader,
        4,
    ) {
        log(&format!("warning: predictions.png not written: {e}"));
    }
    Ok(TrainSummary {
        history,
        best_miou,
        out: run.out.clone(),
    })
}
