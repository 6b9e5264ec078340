//! The Oxford-IIIT Pet dataset in its release layout:
//!
//! ```text
//! ROOT/images/NAME.jpg                 photographs (a few are really GIF or PNG: decoded by content)
//! ROOT/annotations/trimaps/NAME.png    8-bit trimaps: 1 pet, 2 background, 3 border
//! ROOT/annotations/list.txt            "NAME CLASS-ID SPECIES BREED-ID" per line, '#' comments
//! ROOT/annotations/trainval.txt        the same format, one split each
//! ROOT/annotations/test.txt
//! ```
//!
//! A pixel's class index is its trimap value − 1 (0 pet, 1 background, 2 border). The quirks of
//! the official release are handled deliberately:
//!
//! - an image in `images/` that no list file names (`Abyssinian_82.jpg`, and the GIF
//!   `Abyssinian_34.jpg`) is not used and is reported in [`PetDataset::warnings`], with the format
//!   its content really has;
//! - a listed image whose content OpenCV cannot decode (a GIF named `.jpg`) makes
//!   [`SegmentationSource::load`] fail with [`DataError::Unsupported`] naming the file;
//!   [`PetDataset::open_skipping_unsupported`] drops such samples up front, with a warning each;
//! - a PNG named `.jpg`, RGBA included (`Abyssinian_5.jpg`), is decoded by content and converted
//!   to RGB (alpha composited over black; it is fully opaque in the release).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{DataError, Result, io_err};
use crate::image_io::{self, ImageFormat, Probe};
use crate::segmentation::{Mask, SegmentationSample, SegmentationSource, pet_class_names};

/// Which list file selects the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PetSplit {
    /// `annotations/trainval.txt`.
    Trainval,
    /// `annotations/test.txt`.
    Test,
    /// `annotations/list.txt` (every annotated image).
    All,
}

impl PetSplit {
    /// The list file's name inside `annotations/`.
    pub fn list_file(self) -> &'static str {
        match self {
            PetSplit::Trainval => "trainval.txt",
            PetSplit::Test => "test.txt",
            PetSplit::All => "list.txt",
        }
    }

    /// `"trainval"`, `"test"` or `"all"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PetSplit::Trainval => "trainval",
            PetSplit::Test => "test",
            PetSplit::All => "all",
        }
    }
}

impl fmt::Display for PetSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PetSplit {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "trainval" => Ok(PetSplit::Trainval),
            "test" => Ok(PetSplit::Test),
            "all" => Ok(PetSplit::All),
            other => Err(format!(
                "unknown Pet split {other:?} (expected trainval, test or all)"
            )),
        }
    }
}

/// Cat or dog (the list files' SPECIES column: 1 cat, 2 dog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Species {
    Cat,
    Dog,
}

/// One listed sample: its name, the list file's metadata and its two files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PetEntry {
    /// The file stem, e.g. `Abyssinian_1`.
    pub name: String,
    /// CLASS-ID, 1-based (1..=37 in the release).
    pub class_id: u32,
    pub species: Species,
    /// BREED-ID, 1-based within the species.
    pub breed_id: u32,
    pub image_path: PathBuf,
    pub mask_path: PathBuf,
}

impl PetEntry {
    /// The breed, from the name without its trailing `_NUMBER` (`Abyssinian`, `american_bulldog`).
    pub fn breed(&self) -> &str {
        match self.name.rsplit_once('_') {
            Some((breed, n)) if !breed.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => breed,
            _ => &self.name,
        }
    }
}

/// Something [`PetDataset`] noticed and worked around; each names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PetWarning {
    /// A file in `images/` that no list file names; it is not used.
    Unlisted { path: PathBuf, content: ImageFormat },
    /// A listed sample dropped by [`PetDataset::open_skipping_unsupported`].
    Skipped { path: PathBuf, reason: String },
}

impl fmt::Display for PetWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PetWarning::Unlisted { path, content } => write!(
                f,
                "{}: in no list file (content: {content}); not used",
                path.display()
            ),
            PetWarning::Skipped { path, reason } => {
                write!(f, "{}: skipped: {reason}", path.display())
            }
        }
    }
}

/// A split of Oxford-IIIT Pet on disk, listed and checked at open, decoded on [`load`].
///
/// [`load`]: SegmentationSource::load
#[derive(Debug, Clone)]
pub struct PetDataset {
    root: PathBuf,
    split: PetSplit,
    entries: Vec<PetEntry>,
    class_names: Vec<String>,
    warnings: Vec<PetWarning>,
}

impl PetDataset {
    /// Reads the split's list file and checks that every listed image and trimap exists.
    ///
    /// Errors, each naming the file: a missing list file, image or trimap ([`DataError::Io`]);
    /// a malformed list line, a name that is not a plain file stem (`../x`, `/abs`, `a/b`) or a
    /// name listed twice ([`DataError::ListEntry`], with the line number). Images present in
    /// `images/` but named by no list file (`list.txt`, `trainval.txt`, `test.txt`, whichever
    /// exist) become [`PetWarning::Unlisted`]s.
    pub fn open(root: &Path, split: PetSplit) -> Result<PetDataset> {
        let annotations = root.join("annotations");
        let list_path = annotations.join(split.list_file());
        let listed = read_list(&list_path)?;
        let mut entries = Vec::with_capacity(listed.len());
        for line in listed {
            let image_path = root.join("images").join(format!("{}.jpg", line.name));
            let mask_path = annotations
                .join("trimaps")
                .join(format!("{}.png", line.name));
            for path in [&image_path, &mask_path] {
                std::fs::metadata(path).map_err(io_err(path))?;
            }
            entries.push(PetEntry {
                name: line.name,
                class_id: line.class_id,
                species: line.species,
                breed_id: line.breed_id,
                image_path,
                mask_path,
            });
        }
        let warnings = unlisted_images(root)?;
        Ok(PetDataset {
            root: root.to_path_buf(),
            split,
            entries,
            class_names: pet_class_names(),
            warnings,
        })
    }

    /// [`open`](Self::open), then drops every sample whose image content this build cannot
    /// decode (recognised from its first bytes; formats other than JPEG and PNG get a trial
    /// decode), adding a [`PetWarning::Skipped`] naming each dropped file.
    pub fn open_skipping_unsupported(root: &Path, split: PetSplit) -> Result<PetDataset> {
        let mut dataset = Self::open(root, split)?;
        let mut kept = Vec::with_capacity(dataset.entries.len());
        for entry in std::mem::take(&mut dataset.entries) {
            match image_io::probe(&entry.image_path)? {
                Probe::Decodable(_) => kept.push(entry),
                Probe::Undecodable { reason, .. } => dataset.warnings.push(PetWarning::Skipped {
                    path: entry.image_path.clone(),
                    reason,
                }),
            }
        }
        dataset.entries = kept;
        Ok(dataset)
    }

    /// Decodes every sample and returns the errors (sample index and error), empty when all
    /// samples load. Slow: it decodes everything once.
    pub fn validate(&self) -> Vec<(usize, DataError)> {
        (0..self.len())
            .filter_map(|i| self.load(i).err().map(|e| (i, e)))
            .collect()
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The split that was opened.
    pub fn split(&self) -> PetSplit {
        self.split
    }

    /// The listed samples, in list-file order.
    pub fn entries(&self) -> &[PetEntry] {
        &self.entries
    }

    /// Sample `index`'s entry (panics when out of range, like slice indexing).
    pub fn entry(&self, index: usize) -> &PetEntry {
        &self.entries[index]
    }

    /// What was worked around while opening (unlisted images, skipped samples).
    pub fn warnings(&self) -> &[PetWarning] {
        &self.warnings
    }

    /// Decodes sample `index` with the image reduced at decode time (JPEG DCT scaling) when it
    /// is at least twice the target `[height, width]` on both sides; the trimap is then resized
    /// by nearest neighbour to the decoded image's size. For loaders that resize to a small
    /// target anyway.
    pub fn load_for_target(
        &self,
        index: usize,
        target_hw: [usize; 2],
    ) -> Result<SegmentationSample> {
        self.load_with(index, Some(target_hw))
    }

    fn load_with(&self, index: usize, target_hw: Option<[usize; 2]>) -> Result<SegmentationSample> {
        let entry = self.entries.get(index).ok_or_else(|| {
            crate::error::format_err(
                &self.root,
                format!(
                    "sample index {index} out of range: {} holds {} samples",
                    self.split,
                    self.len()
                ),
            )
        })?;
        let bytes = image_io::read_bytes(&entry.image_path)?;
        let image = match target_hw {
            Some(target) => image_io::decode_rgb_for_target(&bytes, &entry.image_path, target)?,
            None => image_io::decode_rgb(&bytes, &entry.image_path)?,
        };
        let trimap = image_io::read_mask(&entry.mask_path)?;
        let mask = trimap_to_classes(trimap, &entry.mask_path)?;
        let reduced =
            target_hw.is_some() && [image.height, image.width] != [mask.height, mask.width];
        let mask = if reduced
            && image_io::is_reduction([mask.width, mask.height], [image.width, image.height])
        {
            crate::preprocess::resize_mask_nearest(&mask, [image.height, image.width])
        } else {
            mask
        };
        if [image.width, image.height] != [mask.width, mask.height] {
            return Err(DataError::SizeMismatch {
                image_path: entry.image_path.clone(),
                mask_path: entry.mask_path.clone(),
                image_size: [image.width, image.height],
                mask_size: [mask.width, mask.height],
            });
        }
        Ok(SegmentationSample {
            name: entry.name.clone(),
            image,
            mask,
        })
    }
}

impl SegmentationSource for PetDataset {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn name(&self, index: usize) -> &str {
        &self.entries[index].name
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Decodes the image (by content, to RGB) and the trimap (values 1..=3 become classes 0..=2).
    /// Errors name the file: unreadable, undecodable ([`DataError::Unsupported`] for a GIF),
    /// a trimap value outside 1..=3 ([`DataError::MaskValue`]), or image and trimap of different
    /// sizes ([`DataError::SizeMismatch`]).
    fn load(&self, index: usize) -> Result<SegmentationSample> {
        self.load_with(index, None)
    }

    fn load_for_target(&self, index: usize, target_hw: [usize; 2]) -> Result<SegmentationSample> {
        PetDataset::load_for_target(self, index, target_hw)
    }

    fn describe(&self) -> String {
        format!(
            "Oxford-IIIT Pet {}, {} images at {}",
            self.split,
            self.entries.len(),
            self.root.display()
        )
    }
}

/// Turns a trimap (1 pet, 2 background, 3 border) into class indices 0, 1, 2.
pub fn trimap_to_classes(mut trimap: Mask, path: &Path) -> Result<Mask> {
    if let Some(at) = trimap.data.iter().position(|v| !(1..=3).contains(v)) {
        let width = trimap.width.max(1);
        return Err(DataError::MaskValue {
            path: path.to_path_buf(),
            value: trimap.data[at],
            x: at % width,
            y: at / width,
            expected: "a trimap value 1 (pet), 2 (background) or 3 (border)".into(),
        });
    }
    for v in &mut trimap.data {
        *v -= 1;
    }
    Ok(trimap)
}

/// One parsed line of a Pet list file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListLine {
    name: String,
    class_id: u32,
    species: Species,
    breed_id: u32,
}

/// Parses a list file: `NAME CLASS-ID SPECIES BREED-ID` per line, `#` comments, blank lines
/// ignored.
fn read_list(path: &Path) -> Result<Vec<ListLine>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| DataError::ListEntry {
            path: path.to_path_buf(),
            line: line_no,
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, class_id, species, breed_id] = fields[..] else {
            return Err(bad(format!(
                "expected 4 fields \"NAME CLASS-ID SPECIES BREED-ID\", found {}: {line:?}",
                fields.len()
            )));
        };
        check_stem(name).map_err(|reason| bad(format!("{name:?} {reason}")))?;
        let number = |field: &str, what: &str| {
            field
                .parse::<u32>()
                .ok()
                .filter(|&v| v >= 1)
                .ok_or_else(|| bad(format!("{what} {field:?} is not a positive integer")))
        };
        let class_id = number(class_id, "CLASS-ID")?;
        let species = match number(species, "SPECIES")? {
            1 => Species::Cat,
            2 => Species::Dog,
            v => return Err(bad(format!("SPECIES {v} is neither 1 (cat) nor 2 (dog)"))),
        };
        let breed_id = number(breed_id, "BREED-ID")?;
        if !seen.insert(name.to_string()) {
            return Err(bad(format!("{name:?} is listed twice")));
        }
        out.push(ListLine {
            name: name.to_string(),
            class_id,
            species,
            breed_id,
        });
    }
    Ok(out)
}

/// Accepts a bare file stem only: one normal path component, no separators, not hidden.
pub(crate) fn check_stem(name: &str) -> std::result::Result<(), String> {
    let mut components = Path::new(name).components();
    let single = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    );
    if !single || name.contains(['/', '\\', '\0']) || name.starts_with('.') || name.contains(':') {
        return Err(
            "is not a plain file name inside the dataset (no separators, '..', or absolute paths)"
                .into(),
        );
    }
    Ok(())
}

/// Warnings for files in `images/` whose stem no existing list file names.
fn unlisted_images(root: &Path) -> Result<Vec<PetWarning>> {
    let annotations = root.join("annotations");
    let mut listed: HashSet<String> = HashSet::new();
    for split in [PetSplit::All, PetSplit::Trainval, PetSplit::Test] {
        let path = annotations.join(split.list_file());
        if path.exists() {
            listed.extend(read_list(&path)?.into_iter().map(|l| l.name));
        }
    }
    let images = root.join("images");
    let mut unlisted: HashMap<PathBuf, ImageFormat> = HashMap::new();
    for dir_entry in std::fs::read_dir(&images).map_err(io_err(&images))? {
        let dir_entry = dir_entry.map_err(io_err(&images))?;
        let path = dir_entry.path();
        let is_file = dir_entry.file_type().map_err(io_err(&path))?.is_file();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if !is_file || stem.starts_with('.') || listed.contains(stem) {
            continue;
        }
        unlisted.insert(path.clone(), image_io::sniff_format(&path)?);
    }
    let mut warnings: Vec<PetWarning> = unlisted
        .into_iter()
        .map(|(path, content)| PetWarning::Unlisted { path, content })
        .collect();
    warnings.sort_by(|a, b| format!("{a}").cmp(&format!("{b}")));
    Ok(warnings)
}
