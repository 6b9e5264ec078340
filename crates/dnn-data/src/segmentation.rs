//! The segmentation data model shared by every reader (Oxford-IIIT Pet, image folders, HDF5),
//! the preprocessing and the loader.

use crate::error::Result;

/// An 8-bit RGB image, interleaved, row-major: `data.len() == width · height · 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A per-pixel class-index mask (0-based), row-major: `data.len() == width · height`.
///
/// Oxford-IIIT Pet trimaps (1 pet, 2 background, 3 border) become classes 0, 1, 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// One decoded image and its mask, at the source's own size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentationSample {
    /// A stable identifier (the file stem, e.g. `Abyssinian_1`).
    pub name: String,
    pub image: RgbImage,
    pub mask: Mask,
}

/// A finite, indexable set of segmentation samples (a folder, a Pet split, an HDF5 file).
///
/// `load` may be called from several threads at once.
pub trait SegmentationSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The name of sample `index` without decoding it.
    fn name(&self, index: usize) -> &str;
    /// Class names, indexed by mask value (Pet: `["pet", "background", "border"]`).
    fn class_names(&self) -> &[String];
    /// Decodes sample `index`. Errors name the file and the problem.
    fn load(&self, index: usize) -> Result<SegmentationSample>;
    /// Decodes sample `index` knowing it will be resized to `target_hw` (`[H, W]`): readers may
    /// decode JPEGs at a reduced size (never below the target). Defaults to [`Self::load`].
    fn load_for_target(&self, index: usize, target_hw: [usize; 2]) -> Result<SegmentationSample> {
        let _ = target_hw;
        self.load(index)
    }
    /// A short description for logs ("Oxford-IIIT Pet trainval, 3680 images at data/…").
    fn describe(&self) -> String;
}

/// The class names of Oxford-IIIT Pet trimaps, indexed by `trimap value − 1`.
pub fn pet_class_names() -> Vec<String> {
    ["pet", "background", "border"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
