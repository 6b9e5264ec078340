//! # unet
//!
//! Owns the segmentation models and their workflows: the [`UNet`] (and ResU-Net, the same
//! network with residual blocks) for any input size, and the training, evaluation and prediction
//! that `cargo xtask train-unet`, `eval-unet` and `predict-unet` run. Layers, losses, optimizers
//! and metrics come from `dnn-layers`; datasets and loaders from `dnn-data`; the command line
//! lives in `xtask`. A [`Device`] names the backend a run uses (`cpu`, `cuda:N`).

mod config;
mod model;

pub use config::{BlockKind, UNetConfig, UpsampleKind};
pub use model::UNet;
pub mod checkpoint;
mod device;
mod error;
pub mod metrics;
pub mod predict;
pub mod report;
pub mod train;

pub use device::Device;
#[cfg(feature = "cuda")]
pub use device::cuda_backend;
pub use error::{Result, UnetError};
