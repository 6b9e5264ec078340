//! Segmentation (and classification) datasets in one HDF5 file, and a streaming reader.
//!
//! The schema (`docs/data.md` has it with an h5py snippet):
//!
//! | name | kind | content |
//! |---|---|---|
//! | `images` | dataset u8 `[N, H, W, 3]` | RGB pixels, one chunk `[1, H, W, 3]` per sample, deflate 4 |
//! | `masks` | dataset u8 `[N, H, W]` | class indices, one chunk per sample, deflate 4 (segmentation) |
//! | `labels` | dataset u32 `[N]` | class indices (classification, instead of `masks`; images may have 1 channel) |
//! | `names` | dataset variable-length UTF-8 `[N]` | sample names (file stems) |
//! | `split` | dataset u8 `[N]` | index into the `split_names` attribute |
//! | `schema` | attribute string | `magma-dnn-segmentation` or `magma-dnn-classification` |
//! | `schema_version` | attribute i64 | 2 |
//! | `class_names` | attribute string array `[C]` | class names by index |
//! | `split_names` | attribute string array `[S]` | split names by index |
//! | `source` | attribute string | where the samples came from |
//! | `size` | attribute i64 `[2]` | `[H, W]` of every sample |
//! | `resized` | attribute string | how samples were resized, or `none` |
//! | `created` | attribute string | RFC 3339 UTC creation time |
//!
//! Files start with a 512-byte integrity header in the HDF5 user block (the SHA-256 and length
//! of the rest, `dnn_layers::archive::integrity`), and are written to a hidden temporary name
//! beside the target, sealed, synced and renamed over it only when complete; any failure removes
//! the temporary file and leaves the target untouched. [`Hdf5Segmentation`] verifies the
//! checksum (a truncated or corrupted file is refused before HDF5 parses it) and validates the
//! schema when it opens a file, then reads one sample slice per [`SegmentationSource::load`], so
//! a file larger than memory streams.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dnn_layers::archive::integrity;
use hdf5::types::VarLenUnicode;
use ndarray::{ArrayView3, ArrayView4, s};

use crate::classification::LabeledImages;
use crate::error::{DataError, Result};
use crate::preprocess::{Interpolation, resize_mask_nearest, resize_rgb};
use crate::segmentation::{Mask, RgbImage, SegmentationSample, SegmentationSource};

/// The `schema` attribute of a segmentation file.
pub const SEGMENTATION_SCHEMA: &str = "magma-dnn-segmentation";
/// The `schema` attribute of a classification file.
pub const CLASSIFICATION_SCHEMA: &str = "magma-dnn-classification";
/// The `schema_version` this build writes and reads. Version 2 adds the integrity header;
/// version 1 files (no checksum) are read only with `MAGMA_ALLOW_UNVERIFIED=1`.
pub const HDF5_SCHEMA_VERSION: i64 = 2;
/// The deflate level of `images` and `masks`.
pub const DEFLATE_LEVEL: u8 = 4;

/// A progress callback: `(samples written, samples in all)`.
pub type Hdf5Progress = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// How [`write_segmentation_hdf5`] and [`write_classification_hdf5`] write a file.
#[derive(Clone)]
pub struct Hdf5WriteOptions {
    /// Resize every sample to `S × S` (images with OpenCV `INTER_AREA`, masks nearest
    /// neighbour); `None` keeps the sizes, which must then all be equal.
    pub size: Option<usize>,
    /// Names of the splits (at most 256); empty means `["all"]`.
    pub split_names: Vec<String>,
    /// Split index of each sample (`splits.len() == N`), or empty for "every sample in split 0".
    pub splits: Vec<u8>,
    /// The `source` attribute (a dataset description or path).
    pub source_description: String,
    /// Threads decoding samples while the file is written (at least 1).
    pub workers: usize,
    /// Called after every written sample.
    pub progress: Option<Hdf5Progress>,
}

impl std::fmt::Debug for Hdf5WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hdf5WriteOptions")
            .field("size", &self.size)
            .field("split_names", &self.split_names)
            .field("splits", &self.splits.len())
            .field("source_description", &self.source_description)
            .field("workers", &self.workers)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Hdf5WriteOptions {
    /// Original sizes, one split `all`, the source's description, as many workers as cores.
    pub fn new(source_description: impl Into<String>) -> Self {
        Self {
            size: None,
            split_names: Vec::new(),
            splits: Vec::new(),
            source_description: source_description.into(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: None,
        }
    }

    /// Every sample resized to `size × size`.
    pub fn with_size(mut self, size: usize) -> Self {
        self.size = Some(size);
        self
    }

    /// Split names and the split of each sample.
    pub fn with_splits(mut self, split_names: Vec<String>, splits: Vec<u8>) -> Self {
        self.split_names = split_names;
        self.splits = splits;
        self
    }

    /// A progress callback.
    pub fn with_progress(mut self, progress: Hdf5Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    fn split_names_or_default(&self) -> Vec<String> {
        if self.split_names.is_empty() {
            vec!["all".to_string()]
        } else {
            self.split_names.clone()
        }
    }
}

/// What a writer produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Hdf5Summary {
    /// The file written.
    pub path: PathBuf,
    /// Number of samples.
    pub samples: usize,
    /// `[H, W]` of every sample.
    pub size: [usize; 2],
    /// Number of classes.
    pub classes: usize,
    /// Samples per split, in `split_names` order.
    pub split_counts: Vec<(String, usize)>,
    /// Size of the file on disk.
    pub file_bytes: u64,
    /// Wall-clock seconds spent.
    pub seconds: f64,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> DataError + '_ {
    move |e| DataError::Format {
        path: path.to_path_buf(),
        reason: format!("HDF5: {e}"),
    }
}

fn fmt_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Creates (truncating) an HDF5 file without HDF5's advisory file lock.
///
/// HDF5 takes a `flock` on every file it opens, and that lock belongs to the open file
/// description, which a child process started meanwhile (any `Command::spawn` in the same
/// program: HDF5 does not open files close-on-exec) inherits; the lock then outlives our own
/// close and a later open of the same file fails with "unable to lock file". Our files are
/// written under a temporary name and renamed only when complete, so no reader ever sees one
/// being written and the lock protects nothing here.
fn create_unlocked(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .with_fcpl(|p| p.userblock(integrity::HEADER_LEN))
        .create(path)
}

/// Opens an HDF5 file read-only without HDF5's advisory file lock (see [`create_unlocked`]).
fn open_unlocked(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open(path)
}

/// An integrity failure as a [`DataError`] naming the file.
fn integrity_err(path: &Path, e: integrity::IntegrityError) -> DataError {
    match e {
        integrity::IntegrityError::Io { path, source } => DataError::Io { path, source },
        integrity::IntegrityError::Truncated {
            path,
            expected,
            found,
        } => DataError::Truncated {
            path,
            expected_bytes: expected,
            actual_bytes: found,
        },
        other => {
            let text = other.to_string();
            let prefix = format!("{}: ", path.display());
            fmt_err(path, text.strip_prefix(&prefix).unwrap_or(&text))
        }
    }
}

/// Writes through a temporary sibling of `out` (the closure must close the file before it
/// returns), then seals it with the integrity header, syncs it, renames it over `out` and syncs
/// the folder; removes it on error.
fn write_atomically<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if out.file_name().is_none() {
        return Err(fmt_err(out, "not a file path"));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(crate::error::io_err(parent))?;
    }
    integrity::remove_stale_temporaries(out);
    let tmp = integrity::temporary_sibling(out);
    let result = write(&tmp).and_then(|value| {
        integrity::commit(&tmp, out).map_err(|e| integrity_err(out, e))?;
        Ok(value)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The current time as RFC 3339 UTC (`2026-11-25T13:45:00Z`).
pub fn rfc3339_utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339_utc(secs)
}

/// Seconds since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn vlen(path: &Path, what: &str, s: &str) -> Result<VarLenUnicode> {
    s.parse::<VarLenUnicode>()
        .map_err(|e| fmt_err(path, format!("{what} {s:?} cannot be stored: {e}")))
}

fn write_str_attr(file: &hdf5::File, path: &Path, name: &str, value: &str) -> Result<()> {
    let v = vlen(path, name, value)?;
    file.new_attr::<VarLenUnicode>()
        .create(name)
        .and_then(|a| a.write_scalar(&v))
        .map_err(h5err(path))
}

fn write_str_array_attr(
    file: &hdf5::File,
    path: &Path,
    name: &str,
    values: &[String],
) -> Result<()> {
    let v = values
        .iter()
        .map(|s| vlen(path, name, s))
        .collect::<Result<Vec<_>>>()?;
    file.new_attr_builder()
        .with_data(&v[..])
        .create(name)
        .map(|_| ())
        .map_err(h5err(path))
}

/// The attributes and bookkeeping datasets (`names`, `split`) shared by both schemas.
struct Common<'a> {
    schema: &'a str,
    class_names: &'a [String],
    split_names: &'a [String],
    splits: &'a [u8],
    names: &'a [String],
    source: &'a str,
    size: [usize; 2],
    resized: &'a str,
}

fn write_common(file: &hdf5::File, path: &Path, c: &Common<'_>) -> Result<()> {
    let h5 = h5err(path);
    let names = c
        .names
        .iter()
        .map(|n| vlen(path, "sample name", n))
        .collect::<Result<Vec<_>>>()?;
    file.new_dataset_builder()
        .with_data(&names[..])
        .create("names")
        .map_err(&h5)?;
    file.new_dataset_builder()
        .with_data(c.splits)
        .create("split")
        .map_err(&h5)?;
    write_str_attr(file, path, "schema", c.schema)?;
    file.new_attr::<i64>()
        .create("schema_version")
        .and_then(|a| a.write_scalar(&HDF5_SCHEMA_VERSION))
        .map_err(&h5)?;
    write_str_array_attr(file, path, "class_names", c.class_names)?;
    write_str_array_attr(file, path, "split_names", c.split_names)?;
    write_str_attr(file, path, "source", c.source)?;
    let size = [c.size[0] as i64, c.size[1] as i64];
    file.new_attr_builder()
        .with_data(&size[..])
        .create("size")
        .map_err(&h5)?;
    write_str_attr(file, path, "resized", c.resized)?;
    write_str_attr(file, path, "created", &rfc3339_utc_now())?;
    Ok(())
}

/// Validates `options.splits` for `n` samples and returns `(split_names, splits)`.
fn resolve_splits(
    out: &Path,
    options: &Hdf5WriteOptions,
    n: usize,
) -> Result<(Vec<String>, Vec<u8>)> {
    let names = options.split_names_or_default();
    if names.len() > 256 {
        return Err(fmt_err(
            out,
            format!("{} split names; at most 256 fit a u8", names.len()),
        ));
    }
    let splits = if options.splits.is_empty() {
        vec![0u8; n]
    } else {
        options.splits.clone()
    };
    if splits.len() != n {
        return Err(fmt_err(
            out,
            format!("{} split indices given for {n} samples", splits.len()),
        ));
    }
    if let Some((i, &s)) = splits
        .iter()
        .enumerate()
        .find(|(_, s)| usize::from(**s) >= names.len())
    {
        return Err(fmt_err(
            out,
            format!(
                "sample {i} has split index {s} but there are {} split names",
                names.len()
            ),
        ));
    }
    Ok((names, splits))
}

fn split_counts(names: &[String], splits: &[u8]) -> Vec<(String, usize)> {
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                name.clone(),
                splits.iter().filter(|&&s| usize::from(s) == k).count(),
            )
        })
        .collect()
}

/// Resizes a sample to `s × s` with the preprocessing module's resizers: the image by area
/// averaging (OpenCV `INTER_AREA`; bilinear where it grows), the mask nearest neighbour.
fn resize_square(sample: &SegmentationSample, s: usize) -> Result<SegmentationSample> {
    let (w, h) = (sample.image.width, sample.image.height);
    if w == s && h == s && sample.mask.width == s && sample.mask.height == s {
        return Ok(sample.clone());
    }
    let image = resize_rgb(&sample.image, [s, s], Interpolation::Area).map_err(|e| {
        DataError::Preprocess {
            name: sample.name.clone(),
            reason: e.to_string(),
        }
    })?;
    Ok(SegmentationSample {
        name: sample.name.clone(),
        image,
        mask: resize_mask_nearest(&sample.mask, [s, s]),
    })
}

/// Loads (and resizes) samples `range` of `source` on up to `workers` threads, in order.
fn load_block(
    source: &dyn SegmentationSource,
    range: std::ops::Range<usize>,
    size: Option<usize>,
    workers: usize,
) -> Vec<Result<SegmentationSample>> {
    let load = |i: usize| -> Result<SegmentationSample> {
        let sample = match size {
            Some(s) => source.load_for_target(i, [s, s])?,
            None => source.load(i)?,
        };
        match size {
            Some(s) => resize_square(&sample, s),
            None => Ok(sample),
        }
    };
    let workers = workers.clamp(1, range.len().max(1));
    if workers == 1 {
        return range.map(load).collect();
    }
    let start = range.start;
    let mut out: Vec<Option<Result<SegmentationSample>>> = (0..range.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|t| {
                let range = range.clone();
                let load = &load;
                scope.spawn(move || {
                    range
                        .skip(t)
                        .step_by(workers)
                        .map(|i| (i, load(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(results) => {
                    for (i, r) in results {
                        out[i - start] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    out.into_iter()
        .enumerate()
        .map(|(k, r)| {
            r.unwrap_or_else(|| {
                Err(DataError::Invalid {
                    what: source.describe(),
                    reason: format!("sample {} was not loaded", start + k),
                })
            })
        })
        .collect()
}

/// Writes every sample of `source` to the HDF5 file `out` (schema `magma-dnn-segmentation`).
///
/// Samples are decoded on `options.workers` threads and written one chunk per sample. With
/// `options.size == None` every sample must have the first sample's size (the error names the
/// first that differs). Mask values must be class indices of `source.class_names()`.
pub fn write_segmentation_hdf5(
    source: &dyn SegmentationSource,
    out: &Path,
    options: &Hdf5WriteOptions,
) -> Result<Hdf5Summary> {
    let started = Instant::now();
    let n = source.len();
    if n == 0 {
        return Err(fmt_err(
            out,
            format!("nothing to write: {} has no samples", source.describe()),
        ));
    }
    if options.size == Some(0) {
        return Err(fmt_err(out, "size must be at least 1"));
    }
    let class_names = source.class_names().to_vec();
    if class_names.is_empty() || class_names.len() > 256 {
        return Err(fmt_err(
            out,
            format!("{} class names; u8 masks need 1 to 256", class_names.len()),
        ));
    }
    let (split_names, splits) = resolve_splits(out, options, n)?;
    let names: Vec<String> = (0..n).map(|i| source.name(i).to_string()).collect();
    let resized = match options.size {
        Some(s) => format!(
            "{s}x{s}: images by area averaging (OpenCV INTER_AREA; bilinear when enlarging), \
             masks nearest neighbour at pixel centres"
        ),
        None => "none".to_string(),
    };
    let workers = options.workers.max(1);
    let block = (workers * 4).max(8);

    let size = write_atomically(out, |tmp| {
        let h5 = h5err(tmp);
        let file = create_unlocked(tmp).map_err(&h5)?;
        let mut datasets: Option<(hdf5::Dataset, hdf5::Dataset, [usize; 2], String)> = None;
        let mut start = 0;
        while start < n {
            let end = (start + block).min(n);
            let samples = load_block(source, start..end, options.size, workers);
            for (k, sample) in samples.into_iter().enumerate() {
                let i = start + k;
                let sample = sample?;
                let (w, h) = (sample.image.width, sample.image.height);
                if sample.mask.width != w || sample.mask.height != h {
                    return Err(fmt_err(
                        out,
                        format!(
                            "sample {:?} (index {i}): image is {w}x{h} but its mask is {}x{}",
                            sample.name, sample.mask.width, sample.mask.height
                        ),
                    ));
                }
                if sample.image.data.len() != w * h * 3 || sample.mask.data.len() != w * h {
                    return Err(fmt_err(
                        out,
                        format!(
                            "sample {:?} (index {i}): pixel buffers do not match {w}x{h}",
                            sample.name
                        ),
                    ));
                }
                if let Some(p) = sample
                    .mask
                    .data
                    .iter()
                    .position(|&v| usize::from(v) >= class_names.len())
                {
                    return Err(fmt_err(
                        out,
                        format!(
                            "sample {:?} (index {i}): mask value {} at (x {}, y {}) is not a class index below {}",
                            sample.name,
                            sample.mask.data[p],
                            p % w,
                            p / w,
                            class_names.len()
                        ),
                    ));
                }
                if datasets.is_none() {
                    let images = file
                        .new_dataset::<u8>()
                        .chunk((1, h, w, 3))
                        .deflate(DEFLATE_LEVEL)
                        .shape((n, h, w, 3))
                        .create("images")
                        .map_err(&h5)?;
                    let masks = file
                        .new_dataset::<u8>()
                        .chunk((1, h, w))
                        .deflate(DEFLATE_LEVEL)
                        .shape((n, h, w))
                        .create("masks")
                        .map_err(&h5)?;
                    datasets = Some((images, masks, [h, w], sample.name.clone()));
                }
                let Some((images, masks, [fh, fw], first)) = &datasets else {
                    unreachable!("datasets are created above")
                };
                if [h, w] != [*fh, *fw] {
                    return Err(fmt_err(
                        out,
                        format!(
                            "sample {:?} (index {i}) is {w}x{h} but the first sample {first:?} is \
                             {fw}x{fh}; give a size to resize every sample",
                            sample.name
                        ),
                    ));
                }
                let image = ArrayView4::from_shape((1, h, w, 3), &sample.image.data)
                    .map_err(|e| fmt_err(out, format!("sample {:?}: {e}", sample.name)))?;
                images
                    .write_slice(image, s![i..i + 1, .., .., ..])
                    .map_err(&h5)?;
                let mask = ArrayView3::from_shape((1, h, w), &sample.mask.data)
                    .map_err(|e| fmt_err(out, format!("sample {:?}: {e}", sample.name)))?;
                masks.write_slice(mask, s![i..i + 1, .., ..]).map_err(&h5)?;
                if let Some(p) = &options.progress {
                    p(i + 1, n);
                }
            }
            start = end;
        }
        let Some((_, _, size, _)) = datasets else {
            return Err(fmt_err(out, "no sample written"));
        };
        write_common(
            &file,
            tmp,
            &Common {
                schema: SEGMENTATION_SCHEMA,
                class_names: &class_names,
                split_names: &split_names,
                splits: &splits,
                names: &names,
                source: &options.source_description,
                size,
                resized: &resized,
            },
        )?;
        drop(datasets);
        file.close().map_err(&h5)?;
        Ok(size)
    })?;
    let file_bytes = std::fs::metadata(out).map_or(0, |m| m.len());
    Ok(Hdf5Summary {
        path: out.to_path_buf(),
        samples: n,
        size,
        classes: class_names.len(),
        split_counts: split_counts(&split_names, &splits),
        file_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes a classification set (schema `magma-dnn-classification`): `images` u8 `[N, H, W, C]`
/// (pixel values `round(255 · x)` of `data.images`, channels last), `labels` u32 `[N]`, and the
/// shared `names` / `split` datasets and attributes. `names` are `sample_000000`… unless given.
/// `options.size` must be `None` or equal to both sides of the images.
pub fn write_classification_hdf5(
    data: &LabeledImages,
    names: Option<&[String]>,
    out: &Path,
    options: &Hdf5WriteOptions,
) -> Result<Hdf5Summary> {
    let started = Instant::now();
    let n = data.len();
    if n == 0 {
        return Err(fmt_err(out, "nothing to write: the set has no samples"));
    }
    let [c, h, w] = data.image_shape();
    if c != 1 && c != 3 {
        return Err(fmt_err(
            out,
            format!("images have {c} channels; 1 or 3 are supported"),
        ));
    }
    if let Some(s) = options.size
        && (s != h || s != w)
    {
        return Err(fmt_err(
            out,
            format!("classification images are {w}x{h} and cannot be resized to {s}x{s} here"),
        ));
    }
    if let Some(&bad) = data
        .labels
        .iter()
        .find(|&&l| l as usize >= data.class_names.len())
    {
        return Err(fmt_err(
            out,
            format!(
                "label {bad} is not below the {} classes",
                data.class_names.len()
            ),
        ));
    }
    let names: Vec<String> = match names {
        Some(given) if given.len() == n => given.to_vec(),
        Some(given) => {
            return Err(fmt_err(
                out,
                format!("{} names given for {n} samples", given.len()),
            ));
        }
        None => (0..n).map(|i| format!("sample_{i:06}")).collect(),
    };
    let (split_names, splits) = resolve_splits(out, options, n)?;
    let pixels = data.images.to_vec()?;
    write_atomically(out, |tmp| {
        let h5 = h5err(tmp);
        let file = create_unlocked(tmp).map_err(&h5)?;
        let images = file
            .new_dataset::<u8>()
            .chunk((1, h, w, c))
            .deflate(DEFLATE_LEVEL)
            .shape((n, h, w, c))
            .create("images")
            .map_err(&h5)?;
        let plane = h * w;
        let mut hwc = vec![0u8; plane * c];
        for i in 0..n {
            let chw = &pixels[i * c * plane..(i + 1) * c * plane];
            for ch in 0..c {
                for p in 0..plane {
                    hwc[p * c + ch] = (chw[ch * plane + p] * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
            let view = ArrayView4::from_shape((1, h, w, c), &hwc)
                .map_err(|e| fmt_err(out, format!("sample {i}: {e}")))?;
            images
                .write_slice(view, s![i..i + 1, .., .., ..])
                .map_err(&h5)?;
            if let Some(p) = &options.progress {
                p(i + 1, n);
            }
        }
        file.new_dataset_builder()
            .with_data(&data.labels[..])
            .create("labels")
            .map_err(&h5)?;
        write_common(
            &file,
            tmp,
            &Common {
                schema: CLASSIFICATION_SCHEMA,
                class_names: &data.class_names,
                split_names: &split_names,
                splits: &splits,
                names: &names,
                source: &options.source_description,
                size: [h, w],
                resized: "none",
            },
        )?;
        drop(images);
        file.close().map_err(&h5)
    })?;
    Ok(Hdf5Summary {
        path: out.to_path_buf(),
        samples: n,
        size: [h, w],
        classes: data.class_names.len(),
        split_counts: split_counts(&split_names, &splits),
        file_bytes: std::fs::metadata(out).map_or(0, |m| m.len()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The validated root attributes and bookkeeping datasets of a magma-dnn HDF5 file.
#[derive(Debug, Clone)]
struct Header {
    n: usize,
    class_names: Vec<String>,
    split_names: Vec<String>,
    splits: Vec<u8>,
    names: Vec<String>,
    source: String,
    created: String,
}

/// The bytes of a string read from the file as a `String`: libhdf5 hands back whatever bytes the
/// file holds (and `VarLenUnicode::as_str` does not check them), so invalid UTF-8 is an error
/// here, never a string that panics when printed (found by fuzzing).
fn utf8(path: &Path, what: &str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| fmt_err(path, format!("{what} is not valid UTF-8: {e}")))
}

fn read_str_attr(file: &hdf5::File, path: &Path, name: &str) -> Result<String> {
    let attr = file
        .attr(name)
        .map_err(|_| fmt_err(path, format!("missing attribute `{name}`")))?;
    let what = format!("attribute `{name}`");
    match attr.read_scalar::<VarLenUnicode>() {
        Ok(v) => utf8(path, &what, v.as_bytes()),
        Err(_) => match attr.read_scalar::<hdf5::types::VarLenAscii>() {
            Ok(v) => utf8(path, &what, v.as_bytes()),
            Err(e) => Err(fmt_err(path, format!("{what} is not a string: {e}"))),
        },
    }
}

fn read_str_array_attr(file: &hdf5::File, path: &Path, name: &str) -> Result<Vec<String>> {
    let attr = file
        .attr(name)
        .map_err(|_| fmt_err(path, format!("missing attribute `{name}`")))?;
    if attr.ndim() != 1 {
        return Err(fmt_err(
            path,
            format!(
                "attribute `{name}` must be a 1-D string array, has shape {:?}",
                attr.shape()
            ),
        ));
    }
    let values = attr.read_raw::<VarLenUnicode>().map_err(|e| {
        fmt_err(
            path,
            format!("attribute `{name}` is not a string array: {e}"),
        )
    })?;
    let what = format!("an entry of attribute `{name}`");
    values
        .iter()
        .map(|s| utf8(path, &what, s.as_bytes()))
        .collect()
}

fn dataset(file: &hdf5::File, path: &Path, name: &str) -> Result<hdf5::Dataset> {
    let ds = file
        .dataset(name)
        .map_err(|_| fmt_err(path, format!("missing dataset `{name}`")))?;
    // A shape the file cannot hold is refused before anything of that size is allocated.
    let elements = ds
        .shape()
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let limit = dnn_layers::archive::plausible_bytes(path);
    if elements > limit {
        return Err(fmt_err(
            path,
            format!(
                "dataset `{name}` claims shape {:?}, more than the file can hold: corrupt",
                ds.shape()
            ),
        ));
    }
    Ok(ds)
}

fn check_dtype<T: hdf5::H5Type>(
    ds: &hdf5::Dataset,
    path: &Path,
    name: &str,
    want: &str,
) -> Result<()> {
    let dtype = ds.dtype().map_err(h5err(path))?;
    if dtype.is::<T>() {
        Ok(())
    } else {
        let found = dtype
            .to_descriptor()
            .map_or_else(|_| "an unknown type".to_string(), |d| format!("{d}"));
        Err(fmt_err(
            path,
            format!("dataset `{name}` must be {want}, found {found}"),
        ))
    }
}

/// Opens `path` and validates the schema name and version and the bookkeeping datasets.
fn open_header(path: &Path, schema: &str) -> Result<(hdf5::File, Header)> {
    if !path.is_file() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let checked = integrity::verify(path).map_err(|e| integrity_err(path, e))?;
    let expected_version = match checked {
        integrity::Checked::Verified => HDF5_SCHEMA_VERSION,
        // A file written before checksums existed, allowed by MAGMA_ALLOW_UNVERIFIED=1.
        integrity::Checked::Unsealed => 1,
    };
    let file =
        open_unlocked(path).map_err(|e| fmt_err(path, format!("not a readable HDF5 file: {e}")))?;
    let found_schema = read_str_attr(&file, path, "schema")?;
    if found_schema != schema {
        return Err(fmt_err(
            path,
            format!("schema is {found_schema:?}, expected {schema:?}"),
        ));
    }
    let version = file
        .attr("schema_version")
        .map_err(|_| fmt_err(path, "missing attribute `schema_version`"))?
        .read_scalar::<i64>()
        .map_err(|e| {
            fmt_err(
                path,
                format!("attribute `schema_version` is not an integer: {e}"),
            )
        })?;
    if version != expected_version {
        return Err(fmt_err(
            path,
            format!(
                "schema_version is {version}; this build reads version {HDF5_SCHEMA_VERSION} \
                 (and 1, without a checksum, when MAGMA_ALLOW_UNVERIFIED=1)"
            ),
        ));
    }
    let class_names = read_str_array_attr(&file, path, "class_names")?;
    let split_names = read_str_array_attr(&file, path, "split_names")?;
    if split_names.is_empty() {
        return Err(fmt_err(path, "attribute `split_names` is empty"));
    }
    let names_ds = dataset(&file, path, "names")?;
    let split_ds = dataset(&file, path, "split")?;
    check_dtype::<u8>(&split_ds, path, "split", "u8")?;
    if names_ds.ndim() != 1 || split_ds.ndim() != 1 {
        return Err(fmt_err(
            path,
            format!(
                "datasets `names` and `split` must be 1-D, have shapes {:?} and {:?}",
                names_ds.shape(),
                split_ds.shape()
            ),
        ));
    }
    let n = names_ds.shape()[0];
    if split_ds.shape()[0] != n {
        return Err(fmt_err(
            path,
            format!(
                "`names` has {n} entries but `split` has {}",
                split_ds.shape()[0]
            ),
        ));
    }
    let names: Vec<String> = names_ds
        .read_raw::<VarLenUnicode>()
        .map_err(|e| {
            fmt_err(
                path,
                format!("dataset `names` is not variable-length UTF-8 strings: {e}"),
            )
        })?
        .iter()
        .map(|s| utf8(path, "an entry of dataset `names`", s.as_bytes()))
        .collect::<Result<_>>()?;
    let splits = split_ds.read_raw::<u8>().map_err(h5err(path))?;
    if let Some((i, s)) = splits
        .iter()
        .enumerate()
        .find(|(_, s)| usize::from(**s) >= split_names.len())
    {
        return Err(fmt_err(
            path,
            format!(
                "split[{i}] = {s} but there are {} split names",
                split_names.len()
            ),
        ));
    }
    let source = read_str_attr(&file, path, "source").unwrap_or_default();
    let created = read_str_attr(&file, path, "created").unwrap_or_default();
    Ok((
        file,
        Header {
            n,
            class_names,
            split_names,
            splits,
            names,
            source,
            created,
        },
    ))
}

/// Rows of `header` in split `split` (`"all"` = every row, unless a split is named `all`).
fn select_split(path: &Path, header: &Header, split: Option<&str>) -> Result<Vec<usize>> {
    match split {
        None => Ok((0..header.n).collect()),
        Some(name) => match header.split_names.iter().position(|s| s == name) {
            Some(k) => Ok((0..header.n)
                .filter(|&i| usize::from(header.splits[i]) == k)
                .collect()),
            None if name == "all" => Ok((0..header.n).collect()),
            None => Err(fmt_err(
                path,
                format!(
                    "no split named {name:?}; the file has {} (or \"all\")",
                    header
                        .split_names
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        },
    }
}

/// A segmentation HDF5 file (schema `magma-dnn-segmentation`) as a [`SegmentationSource`].
///
/// Opening validates the whole schema; [`SegmentationSource::load`] reads one `[1, H, W, 3]`
/// image slice and one `[1, H, W]` mask slice (one chunk each), so memory stays small.
#[derive(Debug)]
pub struct Hdf5Segmentation {
    path: PathBuf,
    images: hdf5::Dataset,
    masks: hdf5::Dataset,
    header: Header,
    /// File rows of this view, in order.
    rows: Vec<usize>,
    split: Option<String>,
    size: [usize; 2],
}

impl Hdf5Segmentation {
    /// Opens every sample of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_inner(path, None)
    }

    /// Opens the samples of split `split` (`"all"` = every sample, unless a split has that name).
    pub fn open_split(path: &Path, split: &str) -> Result<Self> {
        Self::open_inner(path, Some(split))
    }

    fn open_inner(path: &Path, split: Option<&str>) -> Result<Self> {
        let (file, header) = open_header(path, SEGMENTATION_SCHEMA)?;
        let images = dataset(&file, path, "images")?;
        let masks = dataset(&file, path, "masks")?;
        check_dtype::<u8>(&images, path, "images", "u8")?;
        check_dtype::<u8>(&masks, path, "masks", "u8")?;
        let (is, ms) = (images.shape(), masks.shape());
        if is.len() != 4 || is[3] != 3 {
            return Err(fmt_err(
                path,
                format!("`images` must be [N, H, W, 3], is {is:?}"),
            ));
        }
        if ms.len() != 3 || ms[..] != is[..3] {
            return Err(fmt_err(
                path,
                format!(
                    "`masks` must be [N, H, W] = {:?} to match `images` {is:?}, is {ms:?}",
                    &is[..3]
                ),
            ));
        }
        if is[0] != header.n {
            return Err(fmt_err(
                path,
                format!(
                    "`images` holds {} samples but `names` has {}",
                    is[0], header.n
                ),
            ));
        }
        if header.class_names.is_empty() {
            return Err(fmt_err(path, "attribute `class_names` is empty"));
        }
        let rows = select_split(path, &header, split)?;
        Ok(Self {
            path: path.to_path_buf(),
            images,
            masks,
            size: [is[1], is[2]],
            header,
            rows,
            split: split.map(str::to_string),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `[H, W]` of every sample.
    pub fn size(&self) -> [usize; 2] {
        self.size
    }

    /// The split names of the file.
    pub fn split_names(&self) -> &[String] {
        &self.header.split_names
    }

    /// The split name of sample `index` of this view.
    pub fn split_of(&self, index: usize) -> &str {
        &self.header.split_names[usize::from(self.header.splits[self.rows[index]])]
    }

    /// The file row of sample `index` of this view.
    pub fn file_row(&self, index: usize) -> usize {
        self.rows[index]
    }

    /// Number of samples in the whole file.
    pub fn file_len(&self) -> usize {
        self.header.n
    }

    /// The `source` attribute.
    pub fn source_attr(&self) -> &str {
        &self.header.source
    }

    /// The `created` attribute.
    pub fn created(&self) -> &str {
        &self.header.created
    }
}

impl SegmentationSource for Hdf5Segmentation {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn name(&self, index: usize) -> &str {
        &self.header.names[self.rows[index]]
    }

    fn class_names(&self) -> &[String] {
        &self.header.class_names
    }

    fn load(&self, index: usize) -> Result<SegmentationSample> {
        let Some(&row) = self.rows.get(index) else {
            return Err(fmt_err(
                &self.path,
                format!("sample index {index} out of range 0..{}", self.rows.len()),
            ));
        };
        let name = &self.header.names[row];
        let [h, w] = self.size;
        let sample_err = |e: hdf5::Error| {
            fmt_err(
                &self.path,
                format!("reading sample {name:?} (row {row}): {e}"),
            )
        };
        let image: ndarray::Array4<u8> = self
            .images
            .read_slice(s![row..row + 1, .., .., ..])
            .map_err(sample_err)?;
        let mask: ndarray::Array3<u8> = self
            .masks
            .read_slice(s![row..row + 1, .., ..])
            .map_err(sample_err)?;
        let (image, _) = image.into_raw_vec_and_offset();
        let (mask, _) = mask.into_raw_vec_and_offset();
        let classes = self.header.class_names.len();
        if let Some(p) = mask.iter().position(|&v| usize::from(v) >= classes) {
            return Err(DataError::MaskValue {
                path: self.path.clone(),
                value: mask[p],
                x: p % w,
                y: p / w,
                expected: format!("a class index below {classes} (sample {name:?}, row {row})"),
            });
        }
        Ok(SegmentationSample {
            name: name.clone(),
            image: RgbImage {
                width: w,
                height: h,
                data: image,
            },
            mask: Mask {
                width: w,
                height: h,
                data: mask,
            },
        })
    }

    fn describe(&self) -> String {
        let split = self.split.as_deref().unwrap_or("all");
        format!(
            "HDF5 segmentation {split}, {} samples {}x{} at {} (source: {})",
            self.rows.len(),
            self.size[1],
            self.size[0],
            self.path.display(),
            self.header.source
        )
    }
}

/// Reads a classification HDF5 file (schema `magma-dnn-classification`) into memory:
/// the samples of split `split` (`"all"` = every sample), with their names.
pub fn read_classification_hdf5(path: &Path, split: &str) -> Result<(LabeledImages, Vec<String>)> {
    let (file, header) = open_header(path, CLASSIFICATION_SCHEMA)?;
    let images = dataset(&file, path, "images")?;
    let labels_ds = dataset(&file, path, "labels")?;
    check_dtype::<u8>(&images, path, "images", "u8")?;
    check_dtype::<u32>(&labels_ds, path, "labels", "u32")?;
    let is = images.shape();
    if is.len() != 4 || !(is[3] == 1 || is[3] == 3) {
        return Err(fmt_err(
            path,
            format!("`images` must be [N, H, W, 1|3], is {is:?}"),
        ));
    }
    if is[0] != header.n || labels_ds.shape() != [header.n] {
        return Err(fmt_err(
            path,
            format!(
                "`images` {is:?}, `labels` {:?} and `names` [{}] disagree on N",
                labels_ds.shape(),
                header.n
            ),
        ));
    }
    let rows = select_split(path, &header, Some(split))?;
    let all_labels = labels_ds.read_raw::<u32>().map_err(h5err(path))?;
    if let Some(&bad) = all_labels
        .iter()
        .find(|&&l| l as usize >= header.class_names.len())
    {
        return Err(fmt_err(
            path,
            format!(
                "label {bad} is not below the {} classes",
                header.class_names.len()
            ),
        ));
    }
    let (h, w, c) = (is[1], is[2], is[3]);
    let plane = h * w;
    let mut pixels = Vec::with_capacity(rows.len() * c * plane);
    for &row in &rows {
        let img: ndarray::Array4<u8> = images
            .read_slice(s![row..row + 1, .., .., ..])
            .map_err(|e| fmt_err(path, format!("reading row {row}: {e}")))?;
        let (hwc, _) = img.into_raw_vec_and_offset();
        for ch in 0..c {
            pixels.extend((0..plane).map(|p| hwc[p * c + ch]));
        }
    }
    let labels: Vec<u32> = rows.iter().map(|&r| all_labels[r]).collect();
    let names = rows.iter().map(|&r| header.names[r].clone()).collect();
    let data = LabeledImages::from_bytes(&pixels, [c, h, w], labels, header.class_names)?;
    Ok((data, names))
}

/// Several sources as one, each a named split (for example Pet `trainval` then `test`), so
/// [`write_segmentation_hdf5`] can record which split each sample came from.
pub struct ConcatSource {
    parts: Vec<(String, Box<dyn SegmentationSource>)>,
    /// Cumulative sample counts: part `k` covers `starts[k]..starts[k + 1]`.
    starts: Vec<usize>,
}

impl std::fmt::Debug for ConcatSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcatSource")
            .field(
                "parts",
                &self
                    .parts
                    .iter()
                    .map(|(n, s)| (n, s.describe()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ConcatSource {
    /// Concatenates `parts` (split name, source). Errors when there is no part, more than 256,
    /// or the parts disagree on class names.
    pub fn new(parts: Vec<(String, Box<dyn SegmentationSource>)>) -> Result<Self> {
        let Some((_, first)) = parts.first() else {
            return Err(DataError::Invalid {
                what: "concatenated source".into(),
                reason: "no parts given".into(),
            });
        };
        if parts.len() > 256 {
            return Err(DataError::Invalid {
                what: "concatenated source".into(),
                reason: format!("{} parts; at most 256 splits fit a u8", parts.len()),
            });
        }
        for (name, part) in &parts[1..] {
            if part.class_names() != first.class_names() {
                return Err(DataError::Invalid {
                    what: part.describe(),
                    reason: format!(
                        "split {name:?} has classes {:?} but the first part has {:?}",
                        part.class_names(),
                        first.class_names()
                    ),
                });
            }
        }
        let mut starts = vec![0];
        for (_, p) in &parts {
            starts.push(starts.last().copied().unwrap_or(0) + p.len());
        }
        Ok(Self { parts, starts })
    }

    /// The split names, in part order.
    pub fn split_names(&self) -> Vec<String> {
        self.parts.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The split index of every sample.
    pub fn splits(&self) -> Vec<u8> {
        self.parts
            .iter()
            .enumerate()
            .flat_map(|(k, (_, p))| std::iter::repeat_n(k as u8, p.len()))
            .collect()
    }

    fn locate(&self, index: usize) -> (usize, usize) {
        let k = self.starts.partition_point(|&s| s <= index) - 1;
        (
            k.min(self.parts.len() - 1),
            index - self.starts[k.min(self.parts.len() - 1)],
        )
    }
}

impl SegmentationSource for ConcatSource {
    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    fn name(&self, index: usize) -> &str {
        let (k, i) = self.locate(index);
        self.parts[k].1.name(i)
    }

    fn class_names(&self) -> &[String] {
        self.parts[0].1.class_names()
    }

    fn load(&self, index: usize) -> Result<SegmentationSample> {
        if index >= self.len() {
            return Err(DataError::Invalid {
                what: self.describe(),
                reason: format!("sample index {index} out of range 0..{}", self.len()),
            });
        }
        let (k, i) = self.locate(index);
        self.parts[k].1.load(i)
    }

    fn load_for_target(&self, index: usize, target_hw: [usize; 2]) -> Result<SegmentationSample> {
        if index >= self.len() {
            return self.load(index);
        }
        let (k, i) = self.locate(index);
        self.parts[k].1.load_for_target(i, target_hw)
    }

    fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|(n, p)| format!("[{n}] {}", p.describe()))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_764_078_245), "2025-11-25T13:44:05Z");
    }
}
