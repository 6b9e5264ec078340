//! # dnn-data
//!
//! Owns the dataset readers and loaders of magma-dnn: code that turns files on disk into
//! [`Tensor`]s ready for training. Today that is classification data: the IDX format of MNIST and
//! Fashion-MNIST ([`read_idx_images`], [`read_idx_labels`], [`load_mnist`],
//! [`load_fashion_mnist`]) and the binary versions of CIFAR-10 and CIFAR-100 ([`load_cifar10`],
//! [`load_cifar100`]), raw or gzip-compressed, all yielding [`LabeledImages`] (NCHW `f32` images
//! in `[0, 1]` and class indices). Segmentation ingestion (images and masks read through OpenCV
//! and HDF5) will live here later. Every reader validates what it reads against the file's own
//! header and size before allocating, and every failure is a typed [`DataError`] that names the
//! file. Tensors belong to `magma-tensor`; nothing here knows of operations or layers.

mod cifar;
mod classification;
mod error;
mod idx;
mod input;
mod mnist;

pub use cifar::{CIFAR10_CLASS_NAMES, Cifar100Labels, load_cifar10, load_cifar100};
pub use classification::{LabeledImages, Split};
pub use error::{DataError, Result};
pub use idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxImages, read_idx_images, read_idx_labels};
pub use magma_tensor::Tensor;
pub use mnist::{FASHION_MNIST_CLASS_NAMES, MNIST_CLASS_NAMES, load_fashion_mnist, load_mnist};
