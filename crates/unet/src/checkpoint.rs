//! Training checkpoints: weights, optimizer state, configuration, epoch and history in one HDF5
//! file, written atomically (temporary name, integrity header with the SHA-256 of the content,
//! fsync, rename, fsync of the folder) and verified before it is parsed.
//!
//! `last.h5` is written with [`save_keeping_previous`]: the checkpoint it replaces (when intact)
//! becomes `last.prev.h5`, so [`load_latest`] can fall back to it when `last.h5` is damaged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dnn_layers::Module;
use dnn_layers::archive::{AttrValue, TensorArchive, integrity};
use dnn_layers::optim::Optimizer;
use dnn_layers::weights::{assign_tensors, module_tensors};
use dnn_ops::Tensor;

use crate::config::UNetConfig;
use crate::error::{Result, UnetError};
use crate::model::UNet;
use crate::train::{EpochMetrics, TrainConfig};

/// The `format` attribute of a checkpoint.
pub const CHECKPOINT_FORMAT: &str = "magma-dnn-unet-checkpoint";
/// The schema version of a checkpoint: 2 adds the integrity header (SHA-256 of the content).
/// Version 1 files (no checksum) load only with `MAGMA_ALLOW_UNVERIFIED=1`.
pub const CHECKPOINT_VERSION: i64 = 2;

/// Everything but the tensors of a checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointMeta {
    pub unet: UNetConfig,
    pub train: TrainConfig,
    /// Completed epochs.
    pub epoch: usize,
    pub best_miou: f64,
    pub history: Vec<EpochMetrics>,
    pub class_names: Vec<String>,
}

fn json<T: serde::Serialize>(v: &T) -> Result<AttrValue> {
    serde_json::to_string(v)
        .map(AttrValue::Str)
        .map_err(|e| UnetError::Config(e.to_string()))
}

fn file_err(path: &Path, reason: impl Into<String>) -> UnetError {
    UnetError::File {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes model, optimizer state and metadata to `path`, atomically: on any failure (a full
/// disk) the error names the file and the cause, and an existing `path` is left as it was.
pub fn save(
    path: &Path,
    model: &UNet,
    optimizer: &dyn Optimizer,
    meta: &CheckpointMeta,
) -> Result<()> {
    integrity::remove_stale_temporaries(path);
    archive(model, optimizer, meta)?
        .write(path)
        .map_err(|e| match e {
            dnn_layers::LayerError::File { reason, .. } => {
                let full = ["No space left", "File too large", "Disk quota"]
                    .iter()
                    .any(|s| reason.contains(s));
                let hint = if full {
                    " (out of disk space or over a file-size limit: free space, then --resume)"
                } else {
                    ""
                };
                file_err(
                    path,
                    format!(
                        "writing the checkpoint failed{hint}, the previous one (if any) is \
                         untouched: {reason}"
                    ),
                )
            }
            other => other.into(),
        })
}

/// The file [`save_keeping_previous`] keeps the replaced checkpoint in: `NAME.prev.h5`.
pub fn previous_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.prev.h5"))
}

/// [`save`], first keeping the checkpoint it replaces (if intact) as [`previous_path`]. At every
/// instant `path` and the previous file are each absent or complete.
pub fn save_keeping_previous(
    path: &Path,
    model: &UNet,
    optimizer: &dyn Optimizer,
    meta: &CheckpointMeta,
) -> Result<()> {
    let previous = previous_path(path);
    integrity::remove_stale_temporaries(&previous);
    integrity::keep_previous(path, &previous)
        .map_err(|e| file_err(&previous, format!("keeping the previous checkpoint: {e}")))?;
    save(path, model, optimizer, meta)
}

fn archive(
    model: &UNet,
    optimizer: &dyn Optimizer,
    meta: &CheckpointMeta,
) -> Result<TensorArchive> {
    let mut archive = TensorArchive::new();
    for (name, t) in module_tensors(model) {
        archive.insert(format!("model/{name}"), t);
    }
    for (name, t) in optimizer.state().export() {
        archive.insert(format!("optimizer/{name}"), t);
    }
    archive.set_attr("format", AttrValue::Str(CHECKPOINT_FORMAT.to_string()));
    archive.set_attr("version", AttrValue::Int(CHECKPOINT_VERSION));
    archive.set_attr("unet_config", json(&meta.unet)?);
    archive.set_attr("train_config", json(&meta.train)?);
    archive.set_attr("epoch", AttrValue::Int(meta.epoch as i64));
    archive.set_attr(
        "optimizer_step",
        AttrValue::Int(optimizer.state().step as i64),
    );
    archive.set_attr("best_miou", AttrValue::Float(meta.best_miou));
    archive.set_attr("history", json(&meta.history)?);
    archive.set_attr("class_names", json(&meta.class_names)?);
    Ok(archive)
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    pub meta: CheckpointMeta,
    pub optimizer_step: u64,
    model_tensors: BTreeMap<String, Tensor>,
    optimizer_tensors: BTreeMap<String, Tensor>,
}

fn attr_json<T: serde::de::DeserializeOwned>(
    archive: &TensorArchive,
    key: &str,
    path: &Path,
) -> Result<T> {
    let text = archive
        .attr_str(key)
        .ok_or_else(|| file_err(path, format!("checkpoint attribute {key} is missing")))?;
    serde_json::from_str(text)
        .map_err(|e| file_err(path, format!("checkpoint attribute {key}: {e}")))
}

/// Reads and validates a checkpoint: the integrity header first (a truncated or corrupted file
/// is refused before HDF5 parses it, the error naming the file and what is wrong), then format,
/// version and every attribute.
pub fn load(path: &Path) -> Result<LoadedCheckpoint> {
    let (archive, checked) = TensorArchive::read_verified(path).map_err(|e| match e {
        dnn_layers::LayerError::File { reason, .. } => {
            file_err(path, format!("unusable checkpoint: {reason}"))
        }
        other => other.into(),
    })?;
    if archive.attr_str("format") != Some(CHECKPOINT_FORMAT) {
        return Err(file_err(
            path,
            format!(
                "not a magma-dnn U-Net checkpoint (format {:?})",
                archive.attrs.get("format")
            ),
        ));
    }
    let version_ok = match checked {
        integrity::Checked::Verified => archive.attr_int("version") == Some(CHECKPOINT_VERSION),
        // A version-1 file (before checksums), allowed by MAGMA_ALLOW_UNVERIFIED=1.
        integrity::Checked::Unsealed => archive.attr_int("version") == Some(1),
    };
    if !version_ok {
        return Err(file_err(
            path,
            format!(
                "checkpoint version {:?}, this build reads {CHECKPOINT_VERSION} (and 1 without a \
                 checksum when MAGMA_ALLOW_UNVERIFIED=1)",
                archive.attrs.get("version")
            ),
        ));
    }
    let int = |key: &str| {
        archive
            .attr_int(key)
            .ok_or_else(|| file_err(path, format!("checkpoint attribute {key} is missing")))
    };
    let best_miou = match archive.attrs.get("best_miou") {
        Some(AttrValue::Float(v)) => *v,
        _ => return Err(file_err(path, "checkpoint attribute best_miou is missing")),
    };
    let meta = CheckpointMeta {
        unet: attr_json(&archive, "unet_config", path)?,
        train: attr_json(&archive, "train_config", path)?,
        epoch: int("epoch")? as usize,
        best_miou,
        history: attr_json(&archive, "history", path)?,
        class_names: attr_json(&archive, "class_names", path)?,
    };
    let epoch = int("epoch")?;
    let optimizer_step = int("optimizer_step")?;
    if epoch < 0 || optimizer_step < 0 {
        return Err(file_err(
            path,
            format!("inconsistent checkpoint: epoch {epoch}, optimizer step {optimizer_step}"),
        ));
    }
    let optimizer_step = optimizer_step as u64;
    let (mut model_tensors, mut optimizer_tensors) = (BTreeMap::new(), BTreeMap::new());
    for (name, t) in archive.tensors {
        if let Some(rest) = name.strip_prefix("model/") {
            model_tensors.insert(rest.to_string(), t);
        } else if let Some(rest) = name.strip_prefix("optimizer/") {
            optimizer_tensors.insert(rest.to_string(), t);
        }
    }
    Ok(LoadedCheckpoint {
        meta,
        optimizer_step,
        model_tensors,
        optimizer_tensors,
    })
}

/// What [`load_latest`] found.
#[derive(Debug)]
pub struct LatestCheckpoint {
    pub checkpoint: LoadedCheckpoint,
    /// The file it came from (`last.h5`, or `last.prev.h5` after a fallback).
    pub path: PathBuf,
    /// Why each newer candidate was passed over (empty when `last.h5` was used).
    pub skipped: Vec<String>,
}

/// Loads the newest usable checkpoint of a run folder: `last.h5`, else (when it is missing,
/// truncated or corrupted) `last.prev.h5`, saying in `skipped` why `last.h5` was not used.
/// Errors, naming every file tried and why, when neither loads. `dir` may also be a checkpoint
/// file, which is then the first candidate and its `.prev.h5` the second.
pub fn load_latest(dir: &Path) -> Result<LatestCheckpoint> {
    let first = if dir.is_dir() {
        dir.join("last.h5")
    } else {
        dir.to_path_buf()
    };
    let candidates = [first.clone(), previous_path(&first)];
    let mut skipped = Vec::new();
    for path in candidates {
        if !path.exists() {
            skipped.push(format!("{}: no such file", path.display()));
            continue;
        }
        match load(&path) {
            Ok(checkpoint) => {
                return Ok(LatestCheckpoint {
                    checkpoint,
                    path,
                    skipped,
                });
            }
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Err(file_err(
        &first,
        format!(
            "no usable checkpoint to resume from: {}",
            skipped.join("; ")
        ),
    ))
}

impl LoadedCheckpoint {
    /// Copies the weights into `model` (names and shapes must match exactly).
    pub fn restore_model(&self, model: &mut UNet, path: &Path) -> Result<()> {
        assign_tensors(model, &self.model_tensors, path)?;
        Ok(())
    }

    /// Restores the optimizer's per-parameter state and step count.
    pub fn restore_optimizer(&self, model: &UNet, optimizer: &mut dyn Optimizer) -> Result<()> {
        let mut params = Vec::new();
        model.visit_parameters(&mut |p| {
            params.push((p.name().to_string(), p.value().shape().to_vec()))
        });
        let tensors = &self.optimizer_tensors;
        optimizer
            .state_mut()
            .import(self.optimizer_step, &params, |k| tensors.get(k).cloned())?;
        Ok(())
    }

    /// A model built from the stored configuration with the stored weights.
    pub fn build_model(&self, path: &Path) -> Result<UNet> {
        let mut model = UNet::new(&self.meta.unet, &mut magma_tensor::SeededRng::new(0))?;
        self.restore_model(&mut model, path)?;
        Ok(model)
    }
}
