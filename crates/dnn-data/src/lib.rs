//! # dnn-data
//!
//! Owns the dataset readers and loaders of magma-dnn: code that turns files on disk into
//! [`Tensor`]s ready for training. For classification: the IDX format of MNIST and
//! Fashion-MNIST ([`read_idx_images`], [`read_idx_labels`], [`load_mnist`],
//! [`load_fashion_mnist`]) and the binary versions of CIFAR-10 and CIFAR-100 ([`load_cifar10`],
//! [`load_cifar100`]), raw or gzip-compressed, all yielding [`LabeledImages`] (NCHW `f32` images
//! in `[0, 1]` and class indices). For segmentation it reads Oxford-IIIT Pet in its release
//! layout ([`PetDataset`]) and image/mask folders ([`SegmentationFolder`]) through OpenCV, decoding
//! by content; writes and streams HDF5 datasets ([`write_segmentation_hdf5`],
//! [`Hdf5Segmentation`]); generates the embedded synthetic Pet-layout set
//! ([`generate_synthetic_pets`]); preprocesses and augments image and mask jointly ([`prepare`]);
//! batches with shuffling and prefetching worker threads ([`SegmentationLoader`]); and downloads
//! the real dataset ([`download_pets`]). Every reader validates what it reads against the file's own
//! header and size before allocating, and every failure is a typed [`DataError`] that names the
//! file. Tensors belong to `magma-tensor`; the only thing it takes from `dnn-layers` is the
//! `Dataset` trait that its classification sets implement for `Model::fit`.
//!
//! ## Features
//!
//! - `opencv` (default): decoding image files (the Pet and image-folder readers, [`image_io`]'s
//!   decoders, [`image_io::encode_jpeg`]) and [`generate_synthetic_pets`], which writes JPEGs.
//!   Without it (the GPU build) datasets come from `.h5` files made by `cargo xtask convert-hdf5`
//!   on a machine with OpenCV; [`open_segmentation`] on a Pet or image folder then says so.
//!   Resizing and augmentation ([`prepare`], [`resize_rgb`]) work in both builds: OpenCV's
//!   resampling with the feature, the crate's own Rust resampler (same geometry, pixel values
//!   within a few levels of OpenCV's) without it.
//! - `hdf5-static`: builds HDF5 from source into the binary (needs CMake >= 3.26), so it runs
//!   where no libhdf5 is installed.

mod cifar;
mod classification;
mod dataset;
mod download;
mod error;
#[cfg(feature = "opencv")]
mod folders;
mod hdf5_dataset;
mod idx;
pub mod image_io;
mod input;
mod loader;
mod mnist;
mod open;
#[cfg(feature = "opencv")]
mod pet;
mod preprocess;
mod resample;
mod segmentation;
mod synthetic;

pub use cifar::{CIFAR10_CLASS_NAMES, Cifar100Labels, load_cifar10, load_cifar100};
pub use classification::{LabeledImages, Split};
pub use download::{
    DownloadEvent, DownloadOptions, PET_BASE_URLS, ProgressFn, RemoteArchive, download_archives,
    download_pets, download_resumable, extract_tar_gz, file_digests, pet_archives, verify_file,
};
pub use error::{DataError, Result};
#[cfg(feature = "opencv")]
pub use folders::{
    FolderPair, ImageFolder, SegmentationFolder, SegmentationFolderOptions, read_class_names,
};
pub use hdf5_dataset::{
    CLASSIFICATION_SCHEMA, ConcatSource, DEFLATE_LEVEL, HDF5_SCHEMA_VERSION, Hdf5Progress,
    Hdf5Segmentation, Hdf5Summary, Hdf5WriteOptions, SEGMENTATION_SCHEMA, read_classification_hdf5,
    rfc3339_utc, rfc3339_utc_now, write_classification_hdf5, write_segmentation_hdf5,
};
pub use idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxImages, read_idx_images, read_idx_labels};
pub use loader::{
    Epoch, EpochBatches, EpochStream, LoaderConfig, SegmentationBatch, SegmentationLoader, Shard,
    panic_message,
};
pub use magma_tensor::Tensor;
pub use mnist::{FASHION_MNIST_CLASS_NAMES, MNIST_CLASS_NAMES, load_fashion_mnist, load_mnist};
pub use open::{
    DatasetLayout, OpenedSegmentation, detect_layout, open_segmentation, open_segmentation_detailed,
};
#[cfg(feature = "opencv")]
pub use pet::{PetDataset, PetEntry, PetSplit, PetWarning, Species, trimap_to_classes};
pub use preprocess::{
    Augment, IMAGENET_MEAN, IMAGENET_STD, Interpolation, PreparedSample, Preprocess, ResizeMode,
    prepare, resize_mask_nearest, resize_rgb, resize_sample,
};
pub use segmentation::*;
#[cfg(feature = "opencv")]
pub use synthetic::generate_synthetic_pets;
pub use synthetic::{
    SYNTHETIC_BREEDS, SyntheticBreed, SyntheticConfig, SyntheticSummary, render_synthetic_pet,
};
