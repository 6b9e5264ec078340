//! # dnn-layers
//!
//! Owns what a user builds networks from: layers with named parameters ([`layers`], built from
//! config builders such as `Conv2dConfig::new(3, 16, [3, 3]).with_same_padding().init("conv1",
//! &mut rng)`), losses ([`loss`]), optimizers and learning-rate schedules ([`optim`]), metrics,
//! and the [`Model`] API (`fit`, `evaluate`, `predict`, per-epoch summaries, progress bars).
//! Weights and any named tensors are stored in HDF5, one dataset per parameter path, readable by
//! h5py ([`archive`], [`weights`]). Operations and gradients come from `dnn-ops`; datasets from
//! files come from `dnn-data`, which implements this crate's [`Dataset`] trait.

pub mod archive;
mod dataset;
pub mod distributed;
mod error;
pub mod layers;
pub mod loss;
pub mod metrics;
mod model;
pub mod models;
mod module;
pub mod optim;
pub mod progress;
pub mod weights;

pub use dataset::{Dataset, TensorDataset, gather_rows};
pub use error::{LayerError, Result};
pub use model::{EpochRecord, Evaluation, FitConfig, History, Model};
pub use module::{Mode, Module, state_names, try_for_each_parameter_mut};
