//! Datasets as plain folders of images.
//!
//! - Segmentation ([`SegmentationFolder`]): `ROOT/images/STEM.*` and `ROOT/masks/STEM.*` with
//!   matching stems; masks hold class indices (grey or palette PNG — palette indices are read as
//!   indices, not colours); class names from an optional `ROOT/classes.txt` (one per line, `#`
//!   comments), else `class_0`, `class_1`, … up to the largest mask value.
//! - Classification ([`ImageFolder`]), ImageNet-style: `ROOT/CLASS/…/FILE`, one sub-folder per
//!   class (sorted by name: class index = position), every image below it, loaded into
//!   [`LabeledImages`] at a fixed size.
//!
//! Files are recognised by content: a file that is not an image this build decodes (a text
//! file, a GIF with Debian's OpenCV) is skipped with a warning naming it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::classification::LabeledImages;
use crate::error::{DataError, Result, io_err};
use crate::image_io::{self, Probe};
use crate::preprocess::{Interpolation, resize_mask_nearest};
use crate::segmentation::{SegmentationSample, SegmentationSource};

/// Options of [`SegmentationFolder::open_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentationFolderOptions {
    /// A mask value that means "ignore" rather than a class (Pascal VOC uses 255); it passes
    /// through [`SegmentationSource::load`] unchanged and does not count as a class.
    pub ignore_value: Option<u8>,
}

/// One image/mask pair of a [`SegmentationFolder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPair {
    pub name: String,
    pub image_path: PathBuf,
    pub mask_path: PathBuf,
}

/// A segmentation dataset as `images/` + `masks/` folders with matching file stems.
#[derive(Debug, Clone)]
pub struct SegmentationFolder {
    root: PathBuf,
    pairs: Vec<FolderPair>,
    class_names: Vec<String>,
    ignore_value: Option<u8>,
    warnings: Vec<String>,
}

impl SegmentationFolder {
    /// [`open_with`](Self::open_with) default options (no ignore value).
    pub fn open(root: &Path) -> Result<SegmentationFolder> {
        Self::open_with(root, &SegmentationFolderOptions::default())
    }

    /// Pairs every image in `ROOT/images` with the mask of the same stem in `ROOT/masks`
    /// (sorted by stem) and reads the class names.
    ///
    /// Without `classes.txt`, every mask is decoded once here to find the largest value.
    /// Errors name the file: an image without a mask, two files with one stem in a folder, a
    /// malformed or duplicate line in `classes.txt` ([`DataError::ListEntry`]). Masks without an
    /// image and files that are not decodable images become warnings.
    pub fn open_with(
        root: &Path,
        options: &SegmentationFolderOptions,
    ) -> Result<SegmentationFolder> {
        let mut warnings = Vec::new();
        let images = stems(&root.join("images"), &mut warnings)?;
        let masks = stems(&root.join("masks"), &mut warnings)?;
        let mut pairs = Vec::with_capacity(images.len());
        for (stem, image_path) in &images {
            let Some(mask_path) = masks.get(stem) else {
                return Err(crate::error::format_err(
                    image_path,
                    format!(
                        "no mask with stem {stem:?} in {}",
                        root.join("masks").display()
                    ),
                ));
            };
            pairs.push(FolderPair {
                name: stem.clone(),
                image_path: image_path.clone(),
                mask_path: mask_path.clone(),
            });
        }
        for (stem, mask_path) in &masks {
            if !images.contains_key(stem) {
                warnings.push(format!(
                    "{}: no image with stem {stem:?}; not used",
                    mask_path.display()
                ));
            }
        }
        let classes_path = root.join("classes.txt");
        let class_names = if classes_path.exists() {
            read_class_names(&classes_path)?
        } else {
            let mut max: Option<u8> = None;
            for pair in &pairs {
                let mask = image_io::read_mask(&pair.mask_path)?;
                let top = mask
                    .data
                    .iter()
                    .copied()
                    .filter(|&v| Some(v) != options.ignore_value)
                    .max();
                max = max.max(top);
            }
            (0..max.map_or(0, |m| usize::from(m) + 1))
                .map(|k| format!("class_{k}"))
                .collect()
        };
        Ok(SegmentationFolder {
            root: root.to_path_buf(),
            pairs,
            class_names,
            ignore_value: options.ignore_value,
            warnings,
        })
    }

    /// The image/mask pairs, sorted by stem.
    pub fn pairs(&self) -> &[FolderPair] {
        &self.pairs
    }

    /// Files skipped while opening, each naming the file.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Like [`SegmentationSource::load`], with the image reduced at decode time (JPEG DCT
    /// scaling) when it is at least twice `target_hw` on both sides; the mask is then resized by
    /// nearest neighbour to the decoded image's size.
    pub fn load_for_target(
        &self,
        index: usize,
        target_hw: [usize; 2],
    ) -> Result<SegmentationSample> {
        self.load_with(index, Some(target_hw))
    }

    fn load_with(&self, index: usize, target_hw: Option<[usize; 2]>) -> Result<SegmentationSample> {
        let pair = self.pairs.get(index).ok_or_else(|| {
            crate::error::format_err(
                &self.root,
                format!(
                    "sample index {index} out of range: the folder holds {} samples",
                    self.pairs.len()
                ),
            )
        })?;
        let bytes = image_io::read_bytes(&pair.image_path)?;
        let image = match target_hw {
            Some(t) => image_io::decode_rgb_for_target(&bytes, &pair.image_path, t)?,
            None => image_io::decode_rgb(&bytes, &pair.image_path)?,
        };
        let mask = image_io::read_mask(&pair.mask_path)?;
        let classes = self.class_names.len();
        if let Some(at) = mask
            .data
            .iter()
            .position(|&v| usize::from(v) >= classes && Some(v) != self.ignore_value)
        {
            let ignore = self
                .ignore_value
                .map(|v| format!(" or the ignore value {v}"))
                .unwrap_or_default();
            return Err(DataError::MaskValue {
                path: pair.mask_path.clone(),
                value: mask.data[at],
                x: at % mask.width.max(1),
                y: at / mask.width.max(1),
                expected: format!("a class index below {classes}{ignore}"),
            });
        }
        let full = [mask.width, mask.height];
        let mask = match target_hw {
            Some(_)
                if [image.width, image.height] != full
                    && image_io::is_reduction(full, [image.width, image.height]) =>
            {
                resize_mask_nearest(&mask, [image.height, image.width])
            }
            _ => mask,
        };
        if [image.width, image.height] != [mask.width, mask.height] {
            return Err(DataError::SizeMismatch {
                image_path: pair.image_path.clone(),
                mask_path: pair.mask_path.clone(),
                image_size: [image.width, image.height],
                mask_size: full,
            });
        }
        Ok(SegmentationSample {
            name: pair.name.clone(),
            image,
            mask,
        })
    }
}

impl SegmentationSource for SegmentationFolder {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn name(&self, index: usize) -> &str {
        &self.pairs[index].name
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Decodes the image (by content, to RGB) and its mask (class indices; palette PNGs keep
    /// their indices). Errors name the file: a mask value not below the number of classes (and
    /// not the ignore value), image and mask of different sizes, an undecodable file.
    fn load(&self, index: usize) -> Result<SegmentationSample> {
        self.load_with(index, None)
    }

    fn load_for_target(&self, index: usize, target_hw: [usize; 2]) -> Result<SegmentationSample> {
        SegmentationFolder::load_for_target(self, index, target_hw)
    }

    fn describe(&self) -> String {
        format!(
            "segmentation folder, {} images, {} classes at {}",
            self.pairs.len(),
            self.class_names.len(),
            self.root.display()
        )
    }
}

/// Reads `classes.txt`: one class name per line (trimmed), blank lines and `#` comments skipped.
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if !seen.insert(name.to_string()) {
            return Err(DataError::ListEntry {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("class {name:?} is named twice"),
            });
        }
        names.push(name.to_string());
    }
    if names.len() > 256 {
        return Err(crate::error::format_err(
            path,
            format!(
                "{} classes do not fit 8-bit masks (at most 256)",
                names.len()
            ),
        ));
    }
    Ok(names)
}

/// The decodable image files directly in `dir` by stem (hidden files ignored; files that are
/// not images become warnings). Two files with one stem are an error.
fn stems(dir: &Path, warnings: &mut Vec<String>) -> Result<BTreeMap<String, PathBuf>> {
    let mut out: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in list_files(dir, false)? {
        let Some(stem) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            warnings.push(format!(
                "{}: file name is not UTF-8; not used",
                path.display()
            ));
            continue;
        };
        if let Probe::Undecodable { reason, .. } = image_io::probe(&path)? {
            warnings.push(format!("{}: not used: {reason}", path.display()));
            continue;
        }
        if let Some(previous) = out.insert(stem.clone(), path.clone()) {
            return Err(crate::error::format_err(
                &path,
                format!("stem {stem:?} is also used by {}", previous.display()),
            ));
        }
    }
    Ok(out)
}

/// Regular, non-hidden files in `dir` (recursively when asked), sorted by path.
fn list_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let entry = entry.map_err(io_err(&d))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = std::fs::metadata(&path).map_err(io_err(&path))?;
            if kind.is_dir() {
                if recursive {
                    pending.push(path);
                }
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A classification dataset as one sub-folder per class (ImageNet style).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    samples: Vec<(PathBuf, u32)>,
    class_names: Vec<String>,
    warnings: Vec<String>,
}

impl ImageFolder {
    /// Lists `ROOT/CLASS/**/FILE`: classes are the sub-folders of `root` sorted by name (hidden
    /// ones ignored), samples every decodable image below them sorted by path. Files that are
    /// not decodable images become warnings; files directly in `root` are ignored with a
    /// warning. Errors when `root` holds no class folder.
    pub fn open(root: &Path) -> Result<ImageFolder> {
        let mut warnings = Vec::new();
        let mut class_dirs = Vec::new();
        for entry in std::fs::read_dir(root).map_err(io_err(root))? {
            let entry = entry.map_err(io_err(root))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if std::fs::metadata(&path).map_err(io_err(&path))?.is_dir() {
                class_dirs.push(path);
            } else {
                warnings.push(format!(
                    "{}: a file outside any class folder; not used",
                    path.display()
                ));
            }
        }
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(crate::error::format_err(root, "no class sub-folder"));
        }
        let mut class_names = Vec::with_capacity(class_dirs.len());
        let mut samples = Vec::new();
        for (class, dir) in class_dirs.iter().enumerate() {
            class_names.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            for path in list_files(dir, true)? {
                match image_io::probe(&path)? {
                    Probe::Decodable(_) => samples.push((path, class as u32)),
                    Probe::Undecodable { reason, .. } => {
                        warnings.push(format!("{}: not used: {reason}", path.display()));
                    }
                }
            }
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            samples,
            class_names,
            warnings,
        })
    }

    /// `(path, class index)` of every sample.
    pub fn samples(&self) -> &[(PathBuf, u32)] {
        &self.samples
    }

    /// Class names (sub-folder names), indexed by class index.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Files skipped while listing, each naming the file.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every sample decoded, stretched to `size` (`[height, width]`, area averaging when
    /// shrinking, bilinear when enlarging) and scaled to `[0, 1]`: `[N, 3, H, W]`. Decodes on
    /// all cores; the first error (in sample order) names its file.
    pub fn load(&self, size: [usize; 2]) -> Result<LabeledImages> {
        let indices: Vec<usize> = (0..self.samples.len()).collect();
        self.load_indices(&indices, size)
    }

    /// Like [`load`](Self::load) for the samples at `indices` only, in that order.
    pub fn load_indices(&self, indices: &[usize], size: [usize; 2]) -> Result<LabeledImages> {
        let [h, w] = size;
        if h == 0 || w == 0 {
            return Err(crate::error::format_err(
                &self.root,
                format!("target size {size:?} has a zero side"),
            ));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.samples.len()) {
            return Err(crate::error::format_err(
                &self.root,
                format!(
                    "sample index {bad} out of range: the folder holds {}",
                    self.samples.len()
                ),
            ));
        }
        let per = 3 * h * w;
        let mut pixels = vec![0u8; indices.len() * per];
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(indices.len().max(1));
        let chunk = indices.len().div_ceil(threads).max(1);
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pixels
                .chunks_mut(chunk * per)
                .zip(indices.chunks(chunk))
                .map(|(out, idx)| {
                    scope.spawn(move || -> Result<()> {
                        for (dst, &i) in out.chunks_exact_mut(per).zip(idx) {
                            self.decode_chw(&self.samples[i].0, size, dst)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(crate::error::format_err(
                            &self.root,
                            "a decoding thread panicked",
                        ))
                    })
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let labels = indices.iter().map(|&i| self.samples[i].1).collect();
        LabeledImages::from_bytes(&pixels, [3, h, w], labels, self.class_names.clone())
    }

    /// Decodes one image at `size` into `dst` as CHW bytes.
    fn decode_chw(&self, path: &Path, size: [usize; 2], dst: &mut [u8]) -> Result<()> {
        let bytes = image_io::read_bytes(path)?;
        let image = image_io::decode_rgb_resized(&bytes, path, size, Interpolation::Area)?;
        let plane = size[0] * size[1];
        for (i, px) in image.data.chunks_exact(3).enumerate() {
            dst[i] = px[0];
            dst[plane + i] = px[1];
            dst[2 * plane + i] = px[2];
        }
        Ok(())
    }
}
