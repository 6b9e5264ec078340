//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! An IDX file is a big-endian header — a magic number whose third byte is the element type
//! (`0x08`, unsigned byte) and whose fourth is the number of dimensions, then one `u32` per
//! dimension — followed by exactly the product of the dimensions in bytes.

use std::path::Path;

use crate::error::{DataError, Result, format_err, io_err};
use crate::input::{Input, read_up_to};

/// Magic number of an IDX file of unsigned-byte images: `count x rows x cols`.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX file of unsigned-byte labels: `count`.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The content of an IDX image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub cols: usize,
    /// `count * rows * cols` pixels, image after image, row-major.
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (magic `0x00000803`), raw or gzip-compressed.
///
/// Rejects a wrong magic number, zero rows or columns, a header whose size overflows, a file
/// shorter than its header says ([`DataError::Truncated`]) and trailing bytes
/// ([`DataError::Format`]). The size implied by the header is checked against the file (or, for
/// gzip, against the bytes actually decompressed) before any buffer of that size exists.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    let (dims, pixels) = read_idx(path, IDX_IMAGES_MAGIC)?;
    let [count, rows, cols] = [dims[0], dims[1], dims[2]];
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX label file (magic `0x00000801`), raw or gzip-compressed, with the same checks
/// as [`read_idx_images`]. Label values are returned as stored; range checks belong to the
/// dataset loader, which knows the number of classes.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let (_, labels) = read_idx(path.as_ref(), IDX_LABELS_MAGIC)?;
    Ok(labels)
}

/// Reads an unsigned-byte IDX file with magic `magic`, returning its dimensions and payload.
fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    let mut input = Input::open(path)?;

    let mut header = vec![0u8; header_len];
    let got = read_up_to(&mut input, &mut header).map_err(io_err(path))?;
    if got < 4 {
        return Err(truncated(path, header_len as u64, got as u64));
    }
    let found = be_u32(&header[..4]);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
        });
    }
    if got < header_len {
        return Err(truncated(path, header_len as u64, got as u64));
    }

    let dims: Vec<u64> = header[4..]
        .chunks_exact(4)
        .map(|b| u64::from(be_u32(b)))
        .collect();
    // Every dimension after the count (rows, cols) must be non-zero; a zero count is an empty set.
    if let Some(i) = dims.iter().skip(1).position(|&d| d == 0) {
        return Err(format_err(
            path,
            format!("dimension {} of {dims:?} is zero", i + 1),
        ));
    }
    let overflow = || format_err(path, format!("dimensions {dims:?} overflow a 64-bit size"));
    let payload = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let expected_total = payload
        .checked_add(header_len as u64)
        .ok_or_else(overflow)?;
    let too_large = || {
        format_err(
            path,
            format!("dimensions {dims:?} describe {payload} bytes, too many for this platform"),
        )
    };
    let payload_len = usize::try_from(payload).map_err(|_| too_large())?;
    let dims_usize = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_large()))
        .collect::<Result<Vec<usize>>>()?;

    let data = match &mut input {
        Input::Raw { len, .. } => {
            // The file size is known: compare before allocating anything.
            let actual = *len;
            if actual < expected_total {
                return Err(truncated(path, expected_total, actual));
            }
            if actual > expected_total {
                return Err(trailing(
                    path,
                    expected_total,
                    actual - expected_total,
                    false,
                ));
            }
            let mut data = vec![0u8; payload_len];
            let n = read_up_to(&mut input, &mut data).map_err(io_err(path))?;
            if n < payload_len {
                // The file shrank between stat and read.
                return Err(truncated(path, expected_total, (header_len + n) as u64));
            }
            data
        }
        Input::Gzip(_) => {
            // The decompressed size is unknown: read at most one byte more than the header
            // promises, into a buffer that grows only with the bytes actually decompressed.
            let data = input
                .read_bounded(payload.saturating_add(1))
                .map_err(io_err(path))?;
            let read = data.len() as u64;
            if read < payload {
                return Err(truncated(path, expected_total, header_len as u64 + read));
            }
            if read > payload {
                let extra = 1 + input.count_rest().map_err(io_err(path))?;
                return Err(trailing(path, expected_total, extra, true));
            }
            data
        }
    };
    Ok((dims_usize, data))
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn truncated(path: &Path, expected_bytes: u64, actual_bytes: u64) -> DataError {
    DataError::Truncated {
        path: path.to_path_buf(),
        expected_bytes,
        actual_bytes,
    }
}

fn trailing(path: &Path, expected: u64, extra: u64, gzip: bool) -> DataError {
    let what = if gzip { " (decompressed)" } else { "" };
    format_err(
        path,
        format!(
            "{extra} trailing bytes after the {expected} bytes{what} that the header describes"
        ),
    )
}
