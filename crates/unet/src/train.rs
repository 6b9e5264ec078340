//! Training a U-Net: data, loop, per-epoch evaluation, checkpoints, metrics and figures.
//!
//! [`train`] runs in one process; [`train_distributed`] runs the same loop data-parallel, one
//! rank per process, over a [`Communicator`] (MPI, NCCL):
//!
//! - **Data**: each rank reads its [`dnn_data::Shard`] of the training set: every epoch's shuffled
//!   order is cut into global batches of `batch × ranks` images and rank `r` takes the `r`-th
//!   `batch` of each, so the ranks' batches of a step are disjoint and together are the batch
//!   one process with `batch × ranks` would see. The incomplete last global batch is dropped
//!   (different images each epoch), so every rank makes the same number of steps.
//! - **Start**: rank 0's weights and batch-norm statistics are broadcast to every rank, so ranks
//!   start identical whatever their seeds (and after `--resume`, which every rank reads).
//! - **Step**: after the backward pass the gradients are summed across ranks (bucketed by the
//!   communicator) and divided by the number of ranks, then every rank applies the same Adam
//!   update; the reported loss is the mean over all ranks' batches. Loss and gradient checks
//!   see the reduced values, so all ranks stop together on a NaN.
//! - **Batch norm**: per-rank batch statistics in the forward pass (as PyTorch DDP without
//!   SyncBatchNorm); the running statistics are averaged across ranks at the end of every epoch,
//!   before evaluation and checkpointing, so every rank (and the checkpoint) holds the same.
//! - **Evaluation and files**: rank 0 evaluates on the whole validation set and shares the
//!   metrics; only rank 0 logs, writes `metrics.json`, the checkpoints and the figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use dnn_data::{Augment, LoaderConfig, SegmentationLoader, SegmentationSource};
use dnn_layers::distributed::{Communicator, Local};
use dnn_layers::loss::{
    CeDiceLoss, CrossEntropyLoss, DiceLoss, GaussianWeightedCrossEntropy, Loss,
};
use dnn_layers::optim::{Adam, Optimizer};
use dnn_layers::{LayerError, Mode, Module, try_for_each_parameter_mut};
use dnn_ops::{Backend, Gradients, Graph, Tensor};
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
    /// How many batches in a row with a non-finite loss or gradient may be skipped (with a
    /// warning, the optimizer and batch-norm statistics untouched) before the run stops; 0 (the
    /// default, and what checkpoints of earlier versions read as): stop at the first.
    #[serde(default)]
    pub skip_nonfinite: usize,
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

/// A different dropout stream per rank; rank 0 keeps the single-process seeds.
fn rank_seed(seed: u64, rank: usize) -> u64 {
    seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A batch from the loader with its images already moved to the backend's device.
struct StagedBatch {
    batch: dnn_data::SegmentationBatch,
    images: Tensor,
}

/// What the staging thread hands the training loop: a batch, or `None` at the end of an epoch.
type Staged = Option<Result<StagedBatch>>;

/// Runs on its own thread for the whole run: takes every epoch's batches from the loader in
/// order, queues the upload of each one's images ([`Backend::upload`]: the copy into pinned
/// memory is made here, not on the training thread) and hands them on, at most the channel's
/// bound ahead, with a marker after each epoch. Returns when the run has all its batches or the
/// training loop has gone (its receiver dropped). A loader or upload error is handed on in
/// place of the batch, for its step.
fn stage_batches(mut stream: dnn_data::EpochStream, backend: &dyn Backend, tx: SyncSender<Staged>) {
    while let Some(batches) = stream.next_epoch() {
        for batch in batches {
            let staged = batch.map_err(UnetError::from).and_then(|batch| {
                let images = backend.upload(&batch.images)?;
                Ok(StagedBatch { batch, images })
            });
            if tx.send(Some(staged)).is_err() {
                return;
            }
        }
        if tx.send(None).is_err() {
            return;
        }
    }
}

/// The next staged batch of the epoch (`None` at its end), the seconds waited for it added to
/// `waited`.
fn next_staged(rx: &Receiver<Staged>, waited: &mut f64) -> Option<Result<StagedBatch>> {
    let waiting = Instant::now();
    let message = rx.recv();
    *waited += waiting.elapsed().as_secs_f64();
    match message {
        Ok(staged) => staged,
        Err(_) => Some(Err(UnetError::Data(
            "the thread staging the training batches stopped before the end of the epoch".into(),
        ))),
    }
}

/// A training step queued on the backend — forward pass, loss, backward pass, the gradients'
/// all-reduce — whose loss has not been read yet. Its update is queued after the previous
/// step's loss is read ([`resolve`]), guarded on the device by `guard`, so the host queues the
/// next step while the device runs this one and never waits for the device in between.
struct QueuedStep {
    staged: StagedBatch,
    /// The 0-based step of the epoch.
    step: usize,
    grads: Gradients,
    /// The loss plus every gradient's sum (finite only if all are), on the device.
    guard: Tensor,
    /// `[loss, guard]` (one rank) or `[loss sum, batch count, guard]` (several), on their way
    /// to the host (taken by [`resolve`]).
    readback: Option<dnn_ops::PendingValues>,
    /// The batch-norm running statistics before this step's forward pass (a clone shares
    /// storage until the forward pass writes new ones, so keeping them costs nothing).
    buffers_before: Vec<Tensor>,
    /// The optimizer's step count before this step's update.
    optimizer_steps_before: u64,
}

/// Queues the forward and backward pass of one step (with several ranks, the gradients are
/// summed and averaged across ranks, the seconds that took added to `reduce_seconds`) and the
/// read of its loss, but not its update ([`queue_update`]).
#[allow(clippy::too_many_arguments)]
fn queue_step(
    model: &mut UNet,
    backend: &dyn Backend,
    loss: &dyn Loss,
    staged: StagedBatch,
    seed: u64,
    epoch: usize,
    step: usize,
    comm: &mut dyn Communicator,
    reduce_seconds: &mut f64,
) -> Result<QueuedStep> {
    model.set_dropout_seed(mix_seed(seed, epoch, step));
    let buffers_before = buffers_of(model);
    let g = Graph::new(backend);
    let x = g.input(staged.images.clone());
    let logits = model.forward(&g, x, Mode::Train)?;
    let l = loss.compute(&g, logits, &staged.batch.masks)?;
    let mut grads = g.backward(l)?;
    let as_one = |t: &Tensor| t.reshape(&[1]);
    // What is read back: the loss (with several ranks as its sum and the batch count, summed
    // across ranks), then the guard.
    let mut read: Vec<Tensor> = Vec::with_capacity(3);
    if comm.size() > 1 {
        // Every rank reduces, whatever its own loss, so that all of them see the same values
        // and stop together. The loss goes in the gradients' collective as (sum, count).
        let batch = staged.batch.len() as f32;
        let (mut weighted, mut count) = (
            backend.affine(&g.value(l), batch, 0.0)?,
            backend.full(&[], batch)?,
        );
        let reducing = Instant::now();
        all_reduce_gradients(
            comm,
            backend,
            model,
            &mut grads,
            &mut [&mut weighted, &mut count],
        )?;
        *reduce_seconds += reducing.elapsed().as_secs_f64();
        read.push(as_one(&weighted)?);
        read.push(as_one(&count)?);
    } else {
        read.push(as_one(&g.value(l))?);
    }
    drop(g);
    // Finite only if the loss and every gradient are (the loss sum will do for the loss).
    let guard = match gradient_sum(backend, model, &grads)? {
        Some(sum) => backend.add(&read[0], &as_one(&sum)?)?,
        None => read[0].clone(),
    };
    read.push(guard.clone());
    let parts: Vec<&Tensor> = read.iter().collect();
    let readback = backend.read_later(&backend.concat(&parts, 0)?)?;
    Ok(QueuedStep {
        staged,
        step,
        grads,
        guard,
        readback: Some(readback),
        buffers_before,
        optimizer_steps_before: 0,
    })
}

/// Queues the update of `queued`, made on the device only if its guard is finite.
fn queue_update(
    model: &mut UNet,
    backend: &dyn Backend,
    optimizer: &mut dyn Optimizer,
    queued: &mut QueuedStep,
) -> Result<()> {
    queued.optimizer_steps_before = optimizer.state().step;
    optimizer.step_if_finite(backend, model, &queued.grads, &queued.guard)?;
    Ok(())
}

/// What the read of a queued step's loss found.
enum Resolved {
    /// Loss and gradients finite: the update was made; the batch loss (the mean over ranks).
    Finite(f32),
    /// Loss and every gradient finite but their sum not (it overflowed): the guarded update was
    /// not made and must be made now, unguarded.
    Overflowed(f32),
    /// A non-finite loss or gradient (the error names where): the update was not made.
    NonFinite(UnetError),
}

/// Reads the loss of `queued` (waiting only for its own step's work) and says whether its
/// update was made. Called after the next step's forward and backward pass are queued and
/// before that step's update: the weights are still those `queued` saw, so a non-finite loss
/// is traced to its first non-finite value by replaying this step's forward pass.
fn resolve(
    backend: &dyn Backend,
    model: &mut UNet,
    queued: &mut QueuedStep,
    seed: u64,
    epoch: usize,
    comm: &dyn Communicator,
) -> Result<Resolved> {
    let values = match queued.readback.take() {
        Some(pending) => pending.wait()?,
        None => return Err(UnetError::Data("a step's loss was read twice".into())),
    };
    let (value, guard) = match values[..] {
        [loss, guard] => (loss, guard),
        [weighted, count, guard] => ((f64::from(weighted) / f64::from(count)) as f32, guard),
        _ => {
            return Err(UnetError::Data(format!(
                "the loss read back {} values",
                values.len()
            )));
        }
    };
    if guard.is_finite() {
        return Ok(Resolved::Finite(value));
    }
    let (step, batch) = (queued.step, &queued.staged.batch);
    if !value.is_finite() {
        let whose = if comm.size() > 1 {
            format!(
                "the mean over {} ranks; {}'s batch {:?}",
                comm.size(),
                comm.describe(),
                batch.names
            )
        } else {
            format!("batch {:?}", batch.names)
        };
        // The slow path only: find where the forward pass first produced NaN or Inf.
        model.set_dropout_seed(mix_seed(seed, epoch, step));
        let origin = forward_origin(backend, model, &queued.staged.images)?;
        return Ok(Resolved::NonFinite(
            LayerError::NonFiniteLoss {
                epoch,
                step: step + 1,
                value,
                hint: format!("{origin}; {whose}; lower --lr or check these images"),
            }
            .into(),
        ));
    }
    Ok(match first_non_finite_gradient(model, &queued.grads)? {
        Some(param) => Resolved::NonFinite(
            LayerError::NonFiniteGradient {
                param,
                epoch,
                step: step + 1,
            }
            .into(),
        ),
        None => Resolved::Overflowed(value),
    })
}

/// The model's buffers (batch-norm running statistics) in visiting order; the clones share
/// storage until a forward pass writes new ones, so taking them costs nothing.
fn buffers_of(model: &UNet) -> Vec<Tensor> {
    let mut buffers = Vec::new();
    model.visit_buffers(&mut |_, t| buffers.push(t.clone()));
    buffers
}

/// Sets the model's buffers to `values`, in [`buffers_of`]'s order.
fn set_buffers(model: &mut UNet, values: Vec<Tensor>) {
    let mut values = values.into_iter();
    model.visit_buffers_mut(&mut |_, t| {
        if let Some(v) = values.next() {
            *t = v;
        }
    });
}

/// Sums every parameter's gradient across ranks (in the model's parameter order, the same on
/// every rank) and divides by the number of ranks; the tensors of `also_summed` (a loss, say)
/// are summed in the same collective call, not divided.
pub fn all_reduce_gradients(
    comm: &mut dyn Communicator,
    backend: &dyn Backend,
    model: &UNet,
    grads: &mut Gradients,
    also_summed: &mut [&mut Tensor],
) -> Result<()> {
    let mut ids = Vec::new();
    model.visit_parameters(&mut |p| ids.push(p.id()));
    let mut taken: Vec<_> = ids
        .into_iter()
        .filter_map(|id| grads.take_param(id).map(|t| (id, t)))
        .collect();
    let mut tensors: Vec<&mut Tensor> = taken.iter_mut().map(|(_, t)| t).collect();
    tensors.extend(also_summed.iter_mut().map(|t| &mut **t));
    comm.all_reduce_sum(&mut tensors)?;
    let scale = 1.0 / comm.size() as f32;
    for (id, sum) in taken {
        grads.insert_param(id, backend.affine(&sum, scale, 0.0)?);
    }
    Ok(())
}

/// Makes every rank hold rank 0's parameters and buffers (batch-norm running statistics).
fn broadcast_state(comm: &mut dyn Communicator, model: &mut UNet) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut params = Vec::new();
    model.visit_parameters(&mut |p| params.push(p.value().clone()));
    let mut buffers = buffers_of(model);
    let mut tensors: Vec<&mut Tensor> = params.iter_mut().chain(buffers.iter_mut()).collect();
    comm.broadcast(&mut tensors, 0)?;
    let mut params = params.into_iter();
    try_for_each_parameter_mut(model, |p| match params.next() {
        Some(v) => Ok(p.set(v)?),
        None => Err(LayerError::Communicator(format!(
            "broadcast lost the value of parameter {}",
            p.name()
        ))),
    })?;
    set_buffers(model, buffers);
    Ok(())
}

/// Averages the batch-norm running statistics across ranks (each rank's come from its own
/// batches).
fn average_buffers(
    comm: &mut dyn Communicator,
    backend: &dyn Backend,
    model: &mut UNet,
) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut buffers = buffers_of(model);
    if buffers.is_empty() {
        return Ok(());
    }
    let mut tensors: Vec<&mut Tensor> = buffers.iter_mut().collect();
    comm.all_reduce_sum(&mut tensors)?;
    let scale = 1.0 / comm.size() as f32;
    let averaged = buffers
        .iter()
        .map(|sum| backend.affine(sum, scale, 0.0))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    set_buffers(model, averaged);
    Ok(())
}

/// Whether every rank succeeded at something only rank 0 does (evaluation, writing files):
/// rank 0 passes its outcome, the others `Ok`; every rank returns the same verdict, rank 0 its
/// own error.
fn root_outcome<T>(comm: &mut dyn Communicator, outcome: Result<T>, what: &str) -> Result<T> {
    if comm.size() == 1 {
        return outcome;
    }
    let mut failed = [if outcome.is_err() { 1.0 } else { 0.0 }];
    comm.all_reduce_sum_f64(&mut failed)?;
    match outcome {
        Err(e) => Err(e),
        Ok(_) if failed[0] > 0.0 => Err(LayerError::Communicator(format!(
            "rank 0 failed {what} (its error is in its output); {} stops too",
            comm.describe()
        ))
        .into()),
        ok => ok,
    }
}

/// Rank 0's validation report, on every rank.
fn share_report(
    comm: &mut dyn Communicator,
    report: Option<EvalReport>,
    classes: usize,
) -> Result<EvalReport> {
    if comm.size() == 1 {
        return report.ok_or_else(|| UnetError::Data("no validation report".into()));
    }
    let mut v = vec![0.0f64; 5 + classes];
    if let Some(r) = &report {
        v[..5].copy_from_slice(&[r.images as f64, r.loss, r.pixel_acc, r.miou, r.fg_iou]);
        for (slot, iou) in v[5..].iter_mut().zip(&r.iou) {
            *slot = iou.unwrap_or(f64::NAN);
        }
    }
    comm.all_reduce_sum_f64(&mut v)?;
    if let Some(r) = report {
        return Ok(r);
    }
    Ok(EvalReport {
        images: v[0] as usize,
        loss: v[1],
        pixel_acc: v[2],
        miou: v[3],
        fg_iou: v[4],
        iou: v[5..].iter().map(|x| x.is_finite().then_some(*x)).collect(),
    })
}

/// The layer name of a parameter path (`down1/conv1/weight` → `down1/conv1`).
fn layer_of(param: &str) -> &str {
    param.rsplit_once('/').map_or(param, |(layer, _)| layer)
}

/// Where the forward pass of `model` on `images` first produces NaN or ±Inf, in words naming the
/// layer (read back value by value: called only after the loss was found non-finite). The
/// step's own tape gave its values back during the reverse pass, so the forward pass is
/// replayed — same weights (not updated yet), same batch — and the batch norms' running
/// statistics, which a training-mode pass updates, are put back afterwards.
fn forward_origin(
    backend: &dyn Backend,
    model: &mut UNet,
    images: &dnn_ops::Tensor,
) -> Result<String> {
    let statistics = buffers_of(model);
    let g = Graph::new(backend);
    let x = g.input(images.clone());
    let replayed = model.forward(&g, x, Mode::Train);
    set_buffers(model, statistics);
    replayed?;
    let Some(found) = g.first_non_finite()? else {
        return Ok("every value of this process's forward pass is finite".to_string());
    };
    let mut names = std::collections::HashMap::new();
    model.visit_parameters(&mut |p| {
        names.insert(p.id(), p.name().to_string());
    });
    let params: Vec<&str> = found
        .params
        .iter()
        .filter_map(|id| names.get(id).map(String::as_str))
        .collect();
    let position = format!(
        "value {} of {} on the tape, shape {:?}",
        found.index + 1,
        found.nodes,
        found.shape
    );
    Ok(match (found.op, params.first()) {
        ("input", _) => format!("first non-finite value: the input images ({position})"),
        ("param", Some(p)) => format!(
            "first non-finite value: the weights of layer {} (parameter {p}; {position})",
            layer_of(p)
        ),
        (op, Some(p)) => format!(
            "first non-finite value: {op} output in layer {} ({position})",
            layer_of(p)
        ),
        (op, None) => format!("first non-finite value: {op} output before any layer ({position})"),
    })
}

/// The sum of every gradient, queued on the backend's device (NaN and Inf survive summation, so
/// a finite total means finite gradients); `None` when no parameter has one.
fn gradient_sum(
    backend: &dyn Backend,
    model: &UNet,
    grads: &dnn_ops::Gradients,
) -> Result<Option<dnn_ops::Tensor>> {
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
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(total),
    }
}

/// Names the parameter whose gradient first became NaN or ±Inf (the last one in the model's
/// forward order that holds any: the backward pass reaches it first), the layer and how many
/// gradients are non-finite. Looks at each gradient: only called once [`gradient_sum`] was not
/// finite.
fn first_non_finite_gradient(model: &UNet, grads: &dnn_ops::Gradients) -> Result<Option<String>> {
    let (mut bad, mut count, mut with_grad) = (None, 0usize, 0usize);
    let mut failure = None;
    model.visit_parameters(&mut |p| {
        if failure.is_some() {
            return;
        }
        if let Some(t) = grads.param(p.id()) {
            with_grad += 1;
            // A failed read is an error, not a verdict: with several ranks every rank must
            // decide alike, and they do so on the same (all-reduced) values.
            match t.has_non_finite() {
                Ok(true) => {
                    count += 1;
                    bad = Some(p.name().to_string());
                }
                Ok(false) => {}
                Err(e) => failure = Some(e),
            }
        }
    });
    if let Some(e) = failure {
        return Err(LayerError::from(e).into());
    }
    Ok(bad.map(|name| {
        format!(
            "{name} of layer {} (the first the backward pass reached; {count} of {with_grad} \
             parameter gradients non-finite)",
            layer_of(&name)
        )
    }))
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
    let loss = config.loss.build();
    run_training(
        config, unet, run, backend, resume, loss, &mut Local, false, log,
    )
}

/// [`train`] with a loss of the caller's own instead of `config.loss` (a pixel-wise loss not in
/// [`LossKind`], say). The checkpoints still record `config.loss`: resuming one through
/// `train-unet --resume` rebuilds that loss, not this one.
pub fn train_with_loss(
    config: &TrainConfig,
    unet: &UNetConfig,
    run: &TrainRun,
    backend: &dyn Backend,
    resume: Option<(&LoadedCheckpoint, &Path)>,
    loss: Box<dyn Loss>,
    log: &mut dyn FnMut(&str),
) -> Result<TrainSummary> {
    run_training(
        config, unet, run, backend, resume, loss, &mut Local, false, log,
    )
}

/// [`train`], data-parallel: this process is rank `comm.rank()` of `comm.size()`, every rank
/// calls this with the same arguments (see the module documentation for what each rank does).
/// `config.batch` is the batch of one rank; the global batch is `batch × ranks`. Only rank 0
/// logs (the throughput line of each epoch with the per-rank figures) and writes files; every
/// rank returns the same summary. With one rank this is [`train`] with those figures.
pub fn train_distributed(
    config: &TrainConfig,
    unet: &UNetConfig,
    run: &TrainRun,
    backend: &dyn Backend,
    resume: Option<(&LoadedCheckpoint, &Path)>,
    comm: &mut dyn Communicator,
    log: &mut dyn FnMut(&str),
) -> Result<TrainSummary> {
    let root = comm.rank() == 0;
    let mut root_log = |line: &str| {
        if root {
            log(line)
        }
    };
    run_training(
        config,
        unet,
        run,
        backend,
        resume,
        config.loss.build(),
        comm,
        true,
        &mut root_log,
    )
}

/// The training loop of [`train`] and [`train_distributed`]: after each epoch's table row a line
/// with its training throughput and the time spent waiting for the loader; `throughput` adds
/// the per-rank figures and the all-reduce time.
#[allow(clippy::too_many_arguments)]
fn run_training(
    config: &TrainConfig,
    unet: &UNetConfig,
    run: &TrainRun,
    backend: &dyn Backend,
    resume: Option<(&LoadedCheckpoint, &Path)>,
    loss: Box<dyn Loss>,
    comm: &mut dyn Communicator,
    throughput: bool,
    log: &mut dyn FnMut(&str),
) -> Result<TrainSummary> {
    config.validate()?;
    let (rank, ranks) = (comm.rank(), comm.size());
    let root = rank == 0;
    let distributed = ranks > 1;
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
    let train_loader = loader(train_src, config, true)?.sharded(rank, ranks)?;
    let val_loader = loader(val_src.clone(), config, false)?;
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
    broadcast_state(comm, &mut model)?;
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
    if distributed {
        let steps = train_loader.batches_per_epoch();
        let dropped = train_loader.source().len() - steps * config.batch * ranks;
        log(&format!(
            "distributed: {} ranks ({}), batch {} per rank = {} global, {steps} steps per \
             epoch ({dropped} images of the incomplete last global batch dropped each epoch); \
             gradients summed and averaged across ranks; batch norm: per-rank batch statistics, \
             running statistics averaged every epoch; evaluation on rank 0",
            ranks,
            comm.describe(),
            config.batch,
            config.batch * ranks
        ));
    }
    let created = if root {
        std::fs::create_dir_all(&run.out).map_err(|e| UnetError::File {
            path: run.out.clone(),
            reason: e.to_string(),
        })
    } else {
        Ok(())
    };
    root_outcome(comm, created, "to create the output folder")?;
    if start >= config.epochs {
        log(&format!(
            "nothing to do: the checkpoint already has {start} of {} epochs",
            config.epochs
        ));
    }
    log(&table_header(&class_names));
    let mut skipped_in_a_row = 0usize;
    // One stream for all the epochs, so the loader prepares the next epoch's first batches
    // while this one is evaluated and checkpointed; a thread of its own queues their uploads,
    // one batch ahead of the one waiting in the channel.
    let stream = train_loader.epochs(start as u64 + 1..config.epochs as u64 + 1);
    let (tx, rx) = sync_channel::<Staged>(1);
    std::thread::scope(|scope| -> Result<()> {
        // Owned by this closure: its end drops the receiver, which stops the staging thread.
        let rx = rx;
        std::thread::Builder::new()
            .name("batch-stager".into())
            .spawn_scoped(scope, move || {
                // A panic is handed on as an error (the loop reports it), not left to the scope,
                // which would turn it into a second panic.
                let on_panic = tx.clone();
                let staged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    stage_batches(stream, backend, tx)
                }));
                if let Err(panic) = staged {
                    let _ = on_panic.send(Some(Err(UnetError::Data(format!(
                        "the thread staging the training batches panicked: {}",
                        dnn_data::panic_message(panic.as_ref())
                    )))));
                }
            })
            .map_err(|e| UnetError::Data(format!("cannot start the batch-staging thread: {e}")))?;
        for epoch in start + 1..=config.epochs {
            let started = Instant::now();
            let steps = train_loader.batches_per_epoch();
            let pb = dnn_layers::progress::bar(
                steps as u64,
                format!("epoch {epoch}/{}", config.epochs),
                run.progress && root,
            );
            let (mut loss_sum, mut seen, mut reduce_seconds) = (0.0f64, 0usize, 0.0f64);
            // Time the training loop waits for its data: for the epoch's first batch (the device
            // idle) and for each next batch, taken while the device runs the current step; and the
            // host's time queuing steps and updates and waiting for the device (reading losses).
            let (mut first_wait, mut step_wait) = (0.0f64, 0.0f64);
            let (mut queuing, mut updating, mut device_wait) = (0.0f64, 0.0f64, 0.0f64);
            let seed = rank_seed(config.seed, rank);
            let mut next = next_staged(&rx, &mut first_wait);
            let mut account = |l: f32, batch: &dnn_data::SegmentationBatch| {
                // With several ranks `l` is already the mean over the global batch.
                let images = batch.len() * ranks;
                loss_sum += l as f64 * images as f64;
                seen += images;
                pb.inc(1);
                pb.set_message(format!("loss {:.4}", loss_sum / seen.max(1) as f64));
            };
            // Each step's forward and backward pass is queued, then the next batch taken from the
            // loader and its upload queued, then the previous step's loss read (the device is busy
            // with this step meanwhile), then this step's update queued, guarded on the device.
            let (mut step, mut pending) = (0usize, None::<QueuedStep>);
            loop {
                let lap = Instant::now();
                let mut queued = match next.take() {
                    Some(staged) => Some(queue_step(
                        &mut model,
                        backend,
                        loss.as_ref(),
                        staged?,
                        seed,
                        epoch,
                        step,
                        comm,
                        &mut reduce_seconds,
                    )?),
                    None => None,
                };
                queuing += lap.elapsed().as_secs_f64();
                if queued.is_some() {
                    step += 1;
                    next = next_staged(&rx, &mut step_wait);
                }
                if let Some(mut previous) = pending.take() {
                    // The batch-norm statistics to go back to before the step queued meanwhile is
                    // queued again, when the previous step's outcome changed what it started from.
                    let lap = Instant::now();
                    let resolved = resolve(backend, &mut model, &mut previous, seed, epoch, comm)?;
                    device_wait += lap.elapsed().as_secs_f64();
                    let requeue_from = match resolved {
                        Resolved::Finite(l) => {
                            skipped_in_a_row = 0;
                            account(l, &previous.staged.batch);
                            None
                        }
                        Resolved::Overflowed(l) => {
                            skipped_in_a_row = 0;
                            optimizer.state_mut().step = previous.optimizer_steps_before;
                            optimizer.step(backend, &mut model, &previous.grads)?;
                            account(l, &previous.staged.batch);
                            queued.as_ref().map(|q| q.buffers_before.clone())
                        }
                        Resolved::NonFinite(e) if skipped_in_a_row < config.skip_nonfinite => {
                            // The update was not made; the count and the statistics go back, so the
                            // skipped batch leaves no trace.
                            skipped_in_a_row += 1;
                            optimizer.state_mut().step = previous.optimizer_steps_before;
                            log(&format!(
                                "warning: skipped the batch ({skipped_in_a_row} in a row, at most {} \
                             with --skip-nonfinite): {e}",
                                config.skip_nonfinite
                            ));
                            pb.inc(1);
                            Some(previous.buffers_before.clone())
                        }
                        Resolved::NonFinite(e) => {
                            if config.skip_nonfinite > 0 {
                                log(&format!(
                                    "stopping: {} batches in a row had non-finite values \
                                 (--skip-nonfinite {})",
                                    skipped_in_a_row + 1,
                                    config.skip_nonfinite
                                ));
                            }
                            return Err(e);
                        }
                    };
                    // The previous step's gradients are no longer needed.
                    drop(previous);
                    if let Some(buffers) = requeue_from {
                        set_buffers(&mut model, buffers);
                        if let Some(stale) = queued.take() {
                            // Its gradients go before the step is queued again, so that no
                            // more than two steps' gradients are ever alive at once.
                            let QueuedStep {
                                staged,
                                step,
                                grads,
                                readback,
                                ..
                            } = stale;
                            drop(grads);
                            queued = Some(queue_step(
                                &mut model,
                                backend,
                                loss.as_ref(),
                                staged,
                                seed,
                                epoch,
                                step,
                                comm,
                                &mut reduce_seconds,
                            )?);
                            // Its read is dropped unread once the new one is queued.
                            drop(readback);
                        }
                    }
                }
                let Some(mut current) = queued else {
                    break;
                };
                let lap = Instant::now();
                queue_update(&mut model, backend, &mut optimizer, &mut current)?;
                updating += lap.elapsed().as_secs_f64();
                pending = Some(current);
            }
            pb.finish_and_clear();
            let train_seconds = started.elapsed().as_secs_f64();
            average_buffers(comm, backend, &mut model)?;
            let val = if root {
                evaluate(&mut model, backend, &val_loader, loss.as_ref()).map(Some)
            } else {
                Ok(None)
            };
            let val = root_outcome(comm, val, "to evaluate")?;
            let val: EvalReport = share_report(comm, val, class_names.len())?;
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
            let ranks_part = if throughput {
                format!(
                    " on {ranks} ranks ({:.2} per rank); gradient all-reduce {reduce_seconds:.2} s \
                 on rank 0 (with waiting for the slowest rank)",
                    seen as f64 / train_seconds / ranks as f64
                )
            } else {
                String::new()
            };
            let per_step = |s: f64| 1e3 * s / step.max(1) as f64;
            log(&format!(
                "      training: {seen} images in {train_seconds:.1} s = {:.2} images/s; waited for \
             data {first_wait:.3} s for the first batch, {step_wait:.3} s for the others while \
             the device ran a step; host per step: {:.1} ms queuing the step, {:.1} ms its \
             update, {:.1} ms waiting for the device{ranks_part}",
                seen as f64 / train_seconds,
                per_step(queuing),
                per_step(updating),
                per_step(device_wait),
            ));
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
            let written = if root {
                (|| -> Result<()> {
                    checkpoint::save_keeping_previous(
                        &run.out.join("last.h5"),
                        &model,
                        &optimizer,
                        &meta,
                    )?;
                    if improved {
                        checkpoint::save(&run.out.join("best.h5"), &model, &optimizer, &meta)?;
                    }
                    report::write_metrics(&run.out.join("metrics.json"), &history, &class_names)
                })()
            } else {
                Ok(())
            };
            root_outcome(comm, written, "to write the checkpoint and metrics")?;
        }
        Ok(())
    })?;
    if !root {
        return Ok(TrainSummary {
            history,
            best_miou,
            out: run.out.clone(),
        });
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
