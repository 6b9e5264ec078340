//! Typed errors of the dataset readers; every file-related variant names the file.

use std::path::PathBuf;

use magma_tensor::TensorError;

/// Everything a dataset reader can refuse.
///
/// Sizes in [`DataError::Truncated`] count bytes of the decompressed content when the file is
/// gzip-compressed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read (a missing file is reported here, `NotFound`).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not start with the magic number of the expected format.
    #[error("{}: bad magic number 0x{found:08x}, expected 0x{expected:08x}", path.display())]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// The file is shorter than its header (or record size) says it must be.
    #[error("{}: truncated: expected {expected_bytes} bytes, found {actual_bytes}", path.display())]
    Truncated {
        path: PathBuf,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    /// An image file and its label file disagree on the number of samples.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },
    /// A label is not a class index of the dataset.
    #[error(
        "{}: label {value} of sample {index} is not a class index in 0..{classes}",
        path.display()
    )]
    BadLabel {
        path: PathBuf,
        index: usize,
        value: u32,
        classes: usize,
    },
    /// Any other violation of the file format (bad dimensions, trailing bytes, bad names file).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// The file holds an image in a format this build cannot decode (for example a GIF, which
    /// Debian's OpenCV 4.6 does not read). Callers may skip such a sample with a warning.
    #[error("{}: unsupported image content ({format}): {reason}", path.display())]
    Unsupported {
        path: PathBuf,
        format: String,
        reason: String,
    },
    /// The file claims a supported format but its content could not be decoded or encoded.
    #[error("{}: cannot decode: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },
    /// A mask pixel holds a value that is not allowed (a trimap value outside 1..=3, or a class
    /// index not below the number of classes).
    #[error("{}: mask value {value} at (x {x}, y {y}) is not allowed: expected {expected}", path.display())]
    MaskValue {
        path: PathBuf,
        value: u8,
        x: usize,
        y: usize,
        expected: String,
    },
    /// An image and its mask have different sizes (`[width, height]`).
    #[error(
        "{}: image is {}x{} but its mask {} is {}x{}",
        image_path.display(),
        image_size[0],
        image_size[1],
        mask_path.display(),
        mask_size[0],
        mask_size[1]
    )]
    SizeMismatch {
        image_path: PathBuf,
        mask_path: PathBuf,
        image_size: [usize; 2],
        mask_size: [usize; 2],
    },
    /// A line of a list file (Oxford-IIIT Pet `list.txt`, `classes.txt`, …) is malformed or
    /// names a file outside the dataset root.
    #[error("{}:{line}: {reason}", path.display())]
    ListEntry {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Preprocessing or augmentation was given an inconsistent sample or configuration.
    #[error("preprocessing sample {name}: {reason}")]
    Preprocess { name: String, reason: String },
    /// A download from `url` failed (network error, bad HTTP status, cut-off transfer).
    #[error("{url}: {reason}")]
    Download { url: String, reason: String },
    /// A loader or writer was configured inconsistently for a data source (`what` names it).
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// Building or reading a tensor failed (for example a sample index out of range).
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DataError>;

/// Wraps an I/O error with the path it happened on.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A [`DataError::Format`] for `path`.
pub(crate) fn format_err(path: &std::path::Path, reason: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
