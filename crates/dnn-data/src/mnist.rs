//! MNIST and Fashion-MNIST: IDX image and label files in one directory.

use std::path::{Path, PathBuf};

use crate::classification::{LabeledImages, Split};
use crate::error::{DataError, Result};
use crate::idx::{read_idx_images, read_idx_labels};
use crate::input::locate;

/// Class names of MNIST: the digits.
pub const MNIST_CLASS_NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Class names of Fashion-MNIST, by class index.
pub const FASHION_MNIST_CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Loads a split of MNIST from `dir`, which holds `train-images-idx3-ubyte`,
/// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each raw or
/// with a `.gz` suffix (the raw name is preferred when both exist; compression is detected from
/// the content). Images are `[N, 1, rows, cols]` (`28 x 28` for MNIST) scaled to `[0, 1]`.
///
/// Errors when a file is missing ([`DataError::Io`], `NotFound`, naming the raw path), malformed
/// (see [`read_idx_images`]), when the image and label counts differ
/// ([`DataError::CountMismatch`]), or when a label is not below 10 ([`DataError::BadLabel`]).
pub fn load_mnist(dir: &Path, split: Split) -> Result<LabeledImages> {
    load_idx_dataset(dir, split, &MNIST_CLASS_NAMES)
}

/// Loads a split of Fashion-MNIST from `dir`: the same files and checks as [`load_mnist`], with
/// the Fashion-MNIST class names.
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<LabeledImages> {
    load_idx_dataset(dir, split, &FASHION_MNIST_CLASS_NAMES)
}

/// The image and label file paths of `split` in `dir`.
fn split_files(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf)> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = locate(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = locate(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    Ok((images, labels))
}

fn load_idx_dataset(dir: &Path, split: Split, names: &[&str]) -> Result<LabeledImages> {
    let (images_path, labels_path) = split_files(dir, split)?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path,
            labels_path,
            images: images.count,
            labels: labels.len(),
        });
    }
    let classes = names.len();
    if let Some((index, &value)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= classes)
    {
        return Err(DataError::BadLabel {
            path: labels_path,
            index,
            value: u32::from(value),
            classes,
        });
    }
    LabeledImages::from_bytes(
        &images.pixels,
        [1, images.rows, images.cols],
        labels.into_iter().map(u32::from).collect(),
        names.iter().map(|s| s.to_string()).collect(),
    )
}
