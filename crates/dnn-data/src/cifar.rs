//! CIFAR-10 and CIFAR-100, binary versions.
//!
//! Each file is a sequence of fixed-size records: the label byte(s), then 3072 pixel bytes — the
//! 1024 red, then 1024 green, then 1024 blue values of a 32x32 image, row-major — which is
//! already the `[3, 32, 32]` channel-first layout. Files may be gzip-compressed (detected from
//! the content, under the plain name or with a `.gz` suffix).

use std::path::{Path, PathBuf};

use crate::classification::{LabeledImages, Split};
use crate::error::{DataError, Result, format_err, io_err};
use crate::input::{locate, read_all};

/// Bytes of one CIFAR image: 3 channels of 32x32.
const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Shape `[C, H, W]` of one CIFAR image.
const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];

/// Class names of CIFAR-10 used when the directory has no `batches.meta.txt`.
pub const CIFAR10_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which of the two labels of a CIFAR-100 record to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cifar100Labels {
    /// The 100 fine classes (second byte of each record).
    Fine,
    /// The 20 coarse superclasses (first byte of each record).
    Coarse,
}

/// How to read the records of one CIFAR variant.
struct RecordLayout {
    /// Label bytes before the pixels.
    label_bytes: usize,
    /// Which of them is the label in use.
    label_at: usize,
    /// Number of classes of that label.
    classes: usize,
}

impl RecordLayout {
    fn record_bytes(&self) -> usize {
        self.label_bytes + IMAGE_BYTES
    }
}

/// Loads a split of CIFAR-10 (binary version) from `dir`, the extracted `cifar-10-batches-bin`
/// directory: `data_batch_1.bin` to `data_batch_5.bin` (in that order) for [`Split::Train`],
/// `test_batch.bin` for [`Split::Test`]. Class names come from `batches.meta.txt` (one per
/// non-empty line, exactly 10) when it exists, else [`CIFAR10_CLASS_NAMES`]. Images are
/// `[N, 3, 32, 32]` scaled to `[0, 1]`.
///
/// Errors when a file is missing ([`DataError::Io`]), when its size is not a whole number of
/// 3073-byte records ([`DataError::Truncated`], expected size rounded up to the next record) or
/// it is empty ([`DataError::Format`]), or when a label is not below 10
/// ([`DataError::BadLabel`]).
pub fn load_cifar10(dir: &Path, split: Split) -> Result<LabeledImages> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    };
    let layout = RecordLayout {
        label_bytes: 1,
        label_at: 0,
        classes: 10,
    };
    let names = read_names(dir, "batches.meta.txt", layout.classes, |k| {
        CIFAR10_CLASS_NAMES[k].to_string()
    })?;
    load_records(dir, &files, &layout, names)
}

/// Loads a split of CIFAR-100 (binary version) from `dir`, the extracted `cifar-100-binary`
/// directory: `train.bin` or `test.bin`, records of a coarse label byte, a fine label byte and
/// 3072 pixel bytes. `labels` picks the 100 fine or 20 coarse classes; their names come from
/// `fine_label_names.txt` / `coarse_label_names.txt` when present, else `class_K`.
///
/// Errors as [`load_cifar10`] does, with 3074-byte records and the chosen label's class count.
pub fn load_cifar100(dir: &Path, split: Split, labels: Cifar100Labels) -> Result<LabeledImages> {
    let file = match split {
        Split::Train => "train.bin",
        Split::Test => "test.bin",
    };
    let (layout, names_file) = match labels {
        Cifar100Labels::Coarse => (
            RecordLayout {
                label_bytes: 2,
                label_at: 0,
                classes: 20,
            },
            "coarse_label_names.txt",
        ),
        Cifar100Labels::Fine => (
            RecordLayout {
                label_bytes: 2,
                label_at: 1,
                classes: 100,
            },
            "fine_label_names.txt",
        ),
    };
    let names = read_names(dir, names_file, layout.classes, |k| format!("class_{k}"))?;
    load_records(dir, &[file.to_string()], &layout, names)
}

/// Reads every record of `files` (in order) into one set.
fn load_records(
    dir: &Path,
    files: &[String],
    layout: &RecordLayout,
    class_names: Vec<String>,
) -> Result<LabeledImages> {
    let paths = files
        .iter()
        .map(|f| locate(dir, f))
        .collect::<Result<Vec<PathBuf>>>()?;
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    for path in &paths {
        let data = read_all(path)?;
        let record = layout.record_bytes();
        if data.is_empty() {
            return Err(format_err(
                path,
                format!("empty file, expected {record}-byte records"),
            ));
        }
        if data.len() % record != 0 {
            return Err(DataError::Truncated {
                path: path.clone(),
                expected_bytes: data.len().div_ceil(record) as u64 * record as u64,
                actual_bytes: data.len() as u64,
            });
        }
        labels.reserve(data.len() / record);
        pixels.reserve(data.len() / record * IMAGE_BYTES);
        for (index, rec) in data.chunks_exact(record).enumerate() {
            let value = rec[layout.label_at];
            if usize::from(value) >= layout.classes {
                return Err(DataError::BadLabel {
                    path: path.clone(),
                    index,
                    value: u32::from(value),
                    classes: layout.classes,
                });
            }
            labels.push(u32::from(value));
            pixels.extend_from_slice(&rec[layout.label_bytes..]);
        }
    }
    LabeledImages::from_bytes(&pixels, IMAGE_SHAPE, labels, class_names)
}

/// Class names from `dir/file` (one per non-empty line, surrounding whitespace trimmed, exactly
/// `classes` of them) if that file exists, else `default(k)` for each class `k`.
fn read_names(
    dir: &Path,
    file: &str,
    classes: usize,
    default: impl Fn(usize) -> String,
) -> Result<Vec<String>> {
    let path = dir.join(file);
    if !path.is_file() {
        return Ok((0..classes).map(default).collect());
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != classes {
        return Err(format_err(
            &path,
            format!(
                "{} class names, expected {classes} (one per line)",
                names.len()
            ),
        ));
    }
    Ok(names)
}
