//! Saving and loading a module's parameters and buffers as HDF5 (one dataset per path).

use std::collections::BTreeMap;
use std::path::Path;

use dnn_ops::Tensor;

use crate::archive::{AttrValue, TensorArchive};
use crate::error::{LayerError, Result};
use crate::module::Module;

/// The `format` attribute of a weights file.
pub const WEIGHTS_FORMAT: &str = "magma-dnn-weights";
/// The schema version of a weights file.
pub const WEIGHTS_VERSION: i64 = 1;

/// Every parameter and buffer of `module`, by name.
pub fn module_tensors(module: &dyn Module) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    module.visit_parameters(&mut |p| {
        out.insert(p.name().to_string(), p.value().clone());
    });
    module.visit_buffers(&mut |n, t| {
        out.insert(n.to_string(), t.clone());
    });
    out
}

/// Writes `module`'s parameters and buffers to `path` (atomically).
pub fn save_weights(module: &dyn Module, path: &Path) -> Result<()> {
    let mut archive = TensorArchive::new();
    archive.tensors = module_tensors(module);
    archive.set_attr("format", AttrValue::Str(WEIGHTS_FORMAT.to_string()));
    archive.set_attr("version", AttrValue::Int(WEIGHTS_VERSION));
    archive.write(path)
}

/// Lists how `stored` differs from the module's tensors (names and shapes); empty when it fits.
pub fn differences(module: &dyn Module, stored: &BTreeMap<String, Tensor>) -> Vec<String> {
    let mine = module_tensors(module);
    let mut diff = Vec::new();
    for (name, t) in &mine {
        match stored.get(name) {
            None => diff.push(format!("  missing in file: {name} {:?}", t.shape())),
            Some(s) if s.shape() != t.shape() => diff.push(format!(
                "  shape differs: {name} is {:?} in the model, {:?} in the file",
                t.shape(),
                s.shape()
            )),
            Some(_) => {}
        }
    }
    for (name, s) in stored {
        if !mine.contains_key(name) {
            diff.push(format!("  not in the model: {name} {:?}", s.shape()));
        }
    }
    diff
}

/// Copies `stored` tensors into the module; every name and shape must match (see [`differences`]).
pub fn assign_tensors(
    module: &mut dyn Module,
    stored: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let diff = differences(module, stored);
    if !diff.is_empty() {
        return Err(LayerError::Mismatch {
            path: path.to_path_buf(),
            differences: diff.join("\n"),
        });
    }
    module.visit_parameters_mut(&mut |p| {
        if let Some(t) = stored.get(p.name()) {
            *p.value_mut() = t.clone();
        }
    });
    module.visit_buffers_mut(&mut |n, b| {
        if let Some(t) = stored.get(n) {
            *b = t.clone();
        }
    });
    Ok(())
}

/// Loads parameters and buffers saved by [`save_weights`] into `module`, checking names and
/// shapes and saying what differs.
pub fn load_weights(module: &mut dyn Module, path: &Path) -> Result<()> {
    let archive = TensorArchive::read(path)?;
    if archive.attr_str("format") != Some(WEIGHTS_FORMAT) {
        return Err(LayerError::File {
            path: path.to_path_buf(),
            reason: format!(
                "not a magma-dnn weights file (format attribute {:?})",
                archive.attrs.get("format")
            ),
        });
    }
    match archive.attr_int("version") {
        Some(WEIGHTS_VERSION) => {}
        other => {
            return Err(LayerError::File {
                path: path.to_path_buf(),
                reason: format!(
                    "weights schema version {other:?}, this build reads {WEIGHTS_VERSION}"
                ),
            });
        }
    }
    assign_tensors(module, &archive.tensors, path)
}
