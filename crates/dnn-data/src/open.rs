//! Opening a segmentation dataset by path, whatever its layout: an HDF5 file, an Oxford-IIIT Pet
//! release folder, or an `images/` + `masks/` folder.

use std::path::Path;

use crate::error::{DataError, Result};
#[cfg(feature = "opencv")]
use crate::folders::SegmentationFolder;
#[cfg(feature = "opencv")]
use crate::hdf5_dataset::ConcatSource;
use crate::hdf5_dataset::Hdf5Segmentation;
#[cfg(feature = "opencv")]
use crate::pet::{PetDataset, PetSplit};
use crate::segmentation::SegmentationSource;

/// What a build without the `opencv` feature says about image-file datasets.
#[cfg(not(feature = "opencv"))]
pub(crate) const NO_OPENCV: &str = "this build has no OpenCV: convert the dataset with \
    `cargo xtask convert-hdf5` on a machine with OpenCV and pass the .h5 file";

/// The on-disk layouts [`open_segmentation`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetLayout {
    /// A `.h5` / `.hdf5` file of schema `magma-dnn-segmentation`.
    Hdf5,
    /// An Oxford-IIIT Pet release folder (`annotations/trimaps/`, `images/`).
    Pet,
    /// A folder with `images/` and `masks/` (matching file stems).
    Folders,
}

impl std::fmt::Display for DatasetLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatasetLayout::Hdf5 => "HDF5 file",
            DatasetLayout::Pet => "Oxford-IIIT Pet folder",
            DatasetLayout::Folders => "images/ + masks/ folder",
        })
    }
}

const ACCEPTED: &str = "accepted: a .h5/.hdf5 file (schema magma-dnn-segmentation), an \
    Oxford-IIIT Pet folder (images/ and annotations/trimaps/), or a folder with images/ and \
    masks/";

/// Which layout `path` has, or an error saying which layouts are accepted.
pub fn detect_layout(path: &Path) -> Result<DatasetLayout> {
    let unsupported = |what: &str| DataError::Format {
        path: path.to_path_buf(),
        reason: format!("{what}; {ACCEPTED}"),
    };
    if path.is_file() {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        return match ext.as_str() {
            "h5" | "hdf5" => Ok(DatasetLayout::Hdf5),
            _ => Err(unsupported(
                "not a dataset file (expected the extension .h5 or .hdf5)",
            )),
        };
    }
    if !path.is_dir() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    }
    if path.join("annotations").join("trimaps").is_dir() {
        return Ok(DatasetLayout::Pet);
    }
    if path.join("images").is_dir() && path.join("masks").is_dir() {
        return Ok(DatasetLayout::Folders);
    }
    Err(unsupported("a folder of no known dataset layout"))
}

/// A dataset opened by [`open_segmentation_detailed`], with the split membership of its
/// samples (for writing HDF5 files) and what was worked around while opening.
pub struct OpenedSegmentation {
    pub source: Box<dyn SegmentationSource>,
    pub layout: DatasetLayout,
    /// Split names; `splits` indexes into them.
    pub split_names: Vec<String>,
    /// The split of each sample of `source`.
    pub splits: Vec<u8>,
    /// Warnings, each naming a file (unlisted or undecodable Pet images that were skipped).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for OpenedSegmentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSegmentation")
            .field("source", &self.source.describe())
            .field("layout", &self.layout)
            .field("split_names", &self.split_names)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Opens the segmentation dataset at `path`, split `split`:
///
/// - a `.h5` file: [`Hdf5Segmentation::open_split`] (`"all"` = every sample);
/// - a folder with `annotations/trimaps`: Oxford-IIIT Pet, `split` one of `trainval`, `test`,
///   `all`; samples whose image this build cannot decode (the release's GIF named `.jpg`) are
///   skipped with a warning;
/// - a folder with `images/` and `masks/`: [`SegmentationFolder`] (`all` only);
/// - anything else: an error saying which layouts are accepted.
///
/// Without the `opencv` feature only `.h5` files open; a Pet or image folder gives
/// [`DataError::Format`] saying to convert it with `cargo xtask convert-hdf5`.
pub fn open_segmentation(path: &Path, split: &str) -> Result<Box<dyn SegmentationSource>> {
    open_segmentation_detailed(path, split).map(|o| o.source)
}

/// [`open_segmentation`], also returning each sample's split and the warnings. A Pet folder
/// opened with `all` is its `trainval` split followed by its `test` split (so the split of
/// every sample is known); an HDF5 file keeps the splits it records.
pub fn open_segmentation_detailed(path: &Path, split: &str) -> Result<OpenedSegmentation> {
    let layout = detect_layout(path)?;
    match layout {
        DatasetLayout::Hdf5 => {
            let file = Hdf5Segmentation::open_split(path, split)?;
            // One named split keeps only its own name; "all" keeps the file's split names.
            let split_names = if file.split_names().iter().any(|s| s == split) {
                vec![split.to_string()]
            } else {
                file.split_names().to_vec()
            };
            let splits = (0..file.len())
                .map(|i| {
                    let name = file.split_of(i);
                    split_names.iter().position(|s| s == name).unwrap_or(0) as u8
                })
                .collect();
            Ok(OpenedSegmentation {
                source: Box::new(file),
                layout,
                split_names,
                splits,
                warnings: Vec::new(),
            })
        }
        #[cfg(not(feature = "opencv"))]
        DatasetLayout::Pet | DatasetLayout::Folders => {
            let _ = split;
            Err(DataError::Format {
                path: path.to_path_buf(),
                reason: format!("an {layout}, but {NO_OPENCV}"),
            })
        }
        #[cfg(feature = "opencv")]
        DatasetLayout::Pet => {
            let pet_split: PetSplit = split.parse().map_err(|reason| DataError::Format {
                path: path.to_path_buf(),
                reason,
            })?;
            let mut warnings = Vec::new();
            let mut open = |s: PetSplit| -> Result<PetDataset> {
                let d = PetDataset::open_skipping_unsupported(path, s)?;
                for w in d.warnings() {
                    let w = w.to_string();
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
                Ok(d)
            };
            if pet_split == PetSplit::All {
                let trainval = open(PetSplit::Trainval)?;
                let test = open(PetSplit::Test)?;
                let concat = ConcatSource::new(vec![
                    (
                        "trainval".to_string(),
                        Box::new(trainval) as Box<dyn SegmentationSource>,
                    ),
                    ("test".to_string(), Box::new(test)),
                ])?;
                Ok(OpenedSegmentation {
                    split_names: concat.split_names(),
                    splits: concat.splits(),
                    source: Box::new(concat),
                    layout,
                    warnings,
                })
            } else {
                let d = open(pet_split)?;
                Ok(OpenedSegmentation {
                    splits: vec![0; d.len()],
                    split_names: vec![pet_split.as_str().to_string()],
                    source: Box::new(d),
                    layout,
                    warnings,
                })
            }
        }
        #[cfg(feature = "opencv")]
        DatasetLayout::Folders => {
            if split != "all" {
                return Err(DataError::Format {
                    path: path.to_path_buf(),
                    reason: format!(
                        "split {split:?} requested, but an images/ + masks/ folder has no splits \
                         (use \"all\")"
                    ),
                });
            }
            let folder = SegmentationFolder::open(path)?;
            let warnings = folder.warnings().to_vec();
            Ok(OpenedSegmentation {
                splits: vec![0; folder.len()],
                split_names: vec!["all".to_string()],
                source: Box::new(folder),
                layout,
                warnings,
            })
        }
    }
}
