//! Named tensors and attributes in one HDF5 file, written atomically.
//!
//! A tensor named `down1/conv1/weight` becomes the dataset `/down1/conv1/weight` (f32, its shape),
//! so h5py reads it as `f["down1/conv1/weight"][...]`. Attributes of the root group carry
//! metadata (format, version, configuration). Files are written to a temporary name in the same
//! folder, sealed with a SHA-256 integrity header in the HDF5 user block ([`integrity`]), synced,
//! then renamed over the target (and the folder synced): a crash or a full disk never leaves a
//! half-written file under the final name, and a file damaged later is refused on reading
//! before HDF5 parses it.

pub mod integrity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dnn_ops::Tensor;
use hdf5::types::VarLenUnicode;

use crate::error::{LayerError, Result};

/// A root-group attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Float(f64),
}

/// Tensors by path and root attributes.
#[derive(Debug, Clone, Default)]
pub struct TensorArchive {
    pub tensors: BTreeMap<String, Tensor>,
    pub attrs: BTreeMap<String, AttrValue>,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> LayerError {
    LayerError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.split('/').any(|p| p == "." || p == "..")
}

/// A temporary path beside `path` (`.NAME.tmp-PID`).
pub fn temporary_sibling(path: &Path) -> PathBuf {
    integrity::temporary_sibling(path)
}

impl TensorArchive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    pub fn set_attr(&mut self, name: impl Into<String>, value: AttrValue) {
        self.attrs.insert(name.into(), value);
    }

    pub fn attr_str(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn attr_int(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(AttrValue::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// Writes the archive to `path` atomically: a temporary file sealed with its integrity
    /// header and synced, renamed over `path`, the folder synced. On failure (a full disk) the
    /// temporary file is removed and an existing `path` is untouched.
    pub fn write(&self, path: &Path) -> Result<()> {
        for name in self.tensors.keys().chain(self.attrs.keys()) {
            if !valid_name(name) {
                return Err(file_err(path, format!("invalid entry name {name:?}")));
            }
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| file_err(parent, e))?;
        }
        let tmp = temporary_sibling(path);
        let result = self
            .write_to(&tmp)
            .and_then(|()| integrity::commit(&tmp, path).map_err(|e| file_err(path, e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_to(&self, tmp: &Path) -> Result<()> {
        let h5 = |e: hdf5::Error| file_err(tmp, e);
        // No HDF5 file locks: child processes inherit the descriptor (HDF5 does not set
        // close-on-exec) and would keep the lock; files appear under their final name only when
        // complete, so readers never see a file being written.
        let file = hdf5::File::with_options()
            .with_fapl(|p| p.file_locking(false))
            .with_fcpl(|p| p.userblock(integrity::HEADER_LEN))
            .create(tmp)
            .map_err(h5)?;
        for (name, tensor) in &self.tensors {
            let (groups, leaf) = match name.rsplit_once('/') {
                Some((g, l)) => (Some(g), l),
                None => (None, name.as_str()),
            };
            let mut group = file.as_group().map_err(h5)?;
            if let Some(groups) = groups {
                for part in groups.split('/') {
                    group = match group.group(part) {
                        Ok(g) => g,
                        Err(_) => group.create_group(part).map_err(h5)?,
                    };
                }
            }
            let data = tensor.to_vec()?;
            let ds = group
                .new_dataset::<f32>()
                .shape(tensor.shape())
                .create(leaf)
                .map_err(h5)?;
            ds.write_raw(&data).map_err(h5)?;
        }
        for (name, value) in &self.attrs {
            match value {
                AttrValue::Str(s) => {
                    let v: VarLenUnicode = s
                        .parse()
                        .map_err(|e| file_err(tmp, format!("attribute {name}: {e:?}")))?;
                    file.new_attr::<VarLenUnicode>()
                        .create(name.as_str())
                        .map_err(h5)?
                        .write_scalar(&v)
                        .map_err(h5)?;
                }
                AttrValue::Int(v) => file
                    .new_attr::<i64>()
                    .create(name.as_str())
                    .map_err(h5)?
                    .write_scalar(v)
                    .map_err(h5)?,
                AttrValue::Float(v) => file
                    .new_attr::<f64>()
                    .create(name.as_str())
                    .map_err(h5)?
                    .write_scalar(v)
                    .map_err(h5)?,
            }
        }
        file.flush().map_err(h5)?;
        file.close().map_err(h5)?;
        Ok(())
    }

    /// Reads every f32 dataset (at any depth) and every root attribute of `path`.
    ///
    /// A file with an integrity header is verified first (a damaged one is refused, naming the
    /// problem); a plain HDF5 file (weights written by h5py) is read as it is.
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_with(path, integrity::Policy::IfPresent)
    }

    /// [`TensorArchive::read`] that also refuses a file without an integrity header (unless
    /// `MAGMA_ALLOW_UNVERIFIED=1`). Returns whether the file was verified.
    pub fn read_verified(path: &Path) -> Result<(Self, integrity::Checked)> {
        let checked = integrity::verify(path).map_err(|e| integrity_err(path, e))?;
        Ok((Self::read_unchecked(path)?, checked))
    }

    fn read_with(path: &Path, policy: integrity::Policy) -> Result<Self> {
        integrity::check(path, policy).map_err(|e| integrity_err(path, e))?;
        Self::read_unchecked(path)
    }

    fn read_unchecked(path: &Path) -> Result<Self> {
        let h5 = |e: hdf5::Error| file_err(path, e);
        let file = hdf5::File::with_options()
            .with_fapl(|p| p.file_locking(false))
            .open(path)
            .map_err(|e| file_err(path, format!("not a readable HDF5 file: {e}")))?;
        let mut archive = TensorArchive::new();
        let root = file.as_group().map_err(h5)?;
        read_group(&root, "", &mut archive, path)?;
        for name in file.attr_names().map_err(h5)? {
            let attr = file.attr(&name).map_err(h5)?;
            let dtype = attr.dtype().map_err(h5)?;
            let value = if let Ok(v) = attr.read_scalar::<VarLenUnicode>() {
                // libhdf5 returns the file's bytes unchecked: invalid UTF-8 is a damaged file.
                AttrValue::Str(String::from_utf8(v.as_bytes().to_vec()).map_err(|e| {
                    file_err(path, format!("attribute `{name}` is not valid UTF-8: {e}"))
                })?)
            } else if dtype.is::<i64>() {
                AttrValue::Int(attr.read_scalar::<i64>().map_err(h5)?)
            } else if dtype.is::<f64>() {
                AttrValue::Float(attr.read_scalar::<f64>().map_err(h5)?)
            } else {
                continue;
            };
            archive.attrs.insert(name, value);
        }
        Ok(archive)
    }
}

/// An integrity failure as a [`LayerError::File`] (the message already names the file).
fn integrity_err(path: &Path, e: integrity::IntegrityError) -> LayerError {
    let reason = match e {
        integrity::IntegrityError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            "no such file".to_string()
        }
        other => {
            let text = other.to_string();
            let prefix = format!("{}: ", path.display());
            text.strip_prefix(&prefix).unwrap_or(&text).to_string()
        }
    };
    file_err(path, reason)
}

/// The most bytes of data a file of this size can decode to: deflate expands at most ~1032:1,
/// plus slack for fill values of small datasets.
pub fn plausible_bytes(path: &Path) -> u64 {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    len.saturating_mul(1032).saturating_add(1 << 20)
}

fn read_group(
    group: &hdf5::Group,
    prefix: &str,
    archive: &mut TensorArchive,
    path: &Path,
) -> Result<()> {
    let h5 = |e: hdf5::Error| file_err(path, e);
    for ds in group.datasets().map_err(h5)? {
        let name = ds.name();
        let leaf = name.rsplit('/').next().unwrap_or(&name);
        let full = if prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{prefix}/{leaf}")
        };
        let shape = ds.shape();
        // A shape the file cannot hold is refused before its buffer exists (found by fuzzing:
        // a crafted 36 KB file whose dataset claimed terabytes).
        let bytes = shape
            .iter()
            .try_fold(4u64, |acc, &d| acc.checked_mul(d as u64))
            .unwrap_or(u64::MAX);
        let limit = plausible_bytes(path);
        if bytes > limit {
            return Err(file_err(
                path,
                format!(
                    "dataset {full} claims shape {shape:?} ({bytes} bytes), more than the file \
                     can hold (at most {limit}): corrupt"
                ),
            ));
        }
        let data: Vec<f32> = ds
            .read_raw::<f32>()
            .map_err(|e| file_err(path, format!("dataset {full}: {e}")))?;
        let tensor = Tensor::from_vec(data, &shape)
            .map_err(|e| file_err(path, format!("dataset {full}: {e}")))?;
        archive.tensors.insert(full, tensor);
    }
    for sub in group.groups().map_err(h5)? {
        let name = sub.name();
        let leaf = name.rsplit('/').next().unwrap_or(&name).to_string();
        let full = if prefix.is_empty() {
            leaf
        } else {
            format!("{prefix}/{leaf}")
        };
        read_group(&sub, &full, archive, path)?;
    }
    Ok(())
}
