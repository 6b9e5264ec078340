//! Training checkpoints: weights, optimizer state, configuration, epoch and history in one HDF5
//! file, written atomically (temporary name, fsync, rename).

use std::collections::BTreeMap;
use std::path::Path;

use dnn_layers::Module;
use dnn_layers::archive::{AttrValue, TensorArchive};
use dnn_layers::optim::Optimizer;
use dnn_layers::weights::{assign_tensors, module_tensors};
use dnn_ops::Tensor;

use crate::config::UNetConfig;
use crate::error::{Result, UnetError};
use crate::model::UNet;
use crate::train::{EpochMetrics, TrainConfig};

/// The `format` attribute of a checkpoint.
pub const CHECKPOINT_FORMAT: &str = "magma-dnn-unet-checkpoint";
/// The schema version of a checkpoint.
pub const CHECKPOINT_VERSION: i64 = 1;

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

/// Writes model, optimizer state and metadata to `path`.
pub fn save(
    path: &Path,
    model: &UNet,
    optimizer: &dyn Optimizer,
    meta: &CheckpointMeta,
) -> Result<()> {
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
    archive.write(path)?;
    Ok(())
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

/// Reads and validates a checkpoint (format, version, every attribute).
pub fn load(path: &Path) -> Result<LoadedCheckpoint> {
    let archive = TensorArchive::read(path)?;
    if archive.attr_str("format") != Some(CHECKPOINT_FORMAT) {
        return Err(file_err(
            path,
            format!(
                "not a magma-dnn U-Net checkpoint (format {:?})",
                archive.attrs.get("format")
            ),
        ));
    }
    if archive.attr_int("version") != Some(CHECKPOINT_VERSION) {
        return Err(file_err(
            path,
            format!(
                "checkpoint version {:?}, this build reads {CHECKPOINT_VERSION}",
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
    let optimizer_step = int("optimizer_step")? as u64;
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
