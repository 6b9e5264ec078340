//! # dnn-ops
//!
//! Owns the operations of magma-dnn and their gradients. [`backend`] defines the seam: a
//! [`Backend`] is the sum of small object-safe op traits (convolution, pooling, activations,
//! batch norm, softmax, resampling, shape, elementwise, losses, optimizer updates), each with
//! explicit backward functions. [`cpu::CpuBackend`] implements them all with rayon and the `gemm`
//! crate and is the reference every GPU op is tested against; `cuda::CudaBackend` (feature
//! `cuda`) runs the same traits on cuDNN and our own kernels (`cuda/*.cu`), its convolutions in fp32,
//! TF32 or bf16 mixed [`Precision`]. [`autodiff`] records a tape of
//! these ops ([`Graph`]) so that models with skip connections, concatenation and shared
//! parameters backpropagate without hand-written plumbing. Tensors and memory belong to
//! `magma-tensor`; layers, losses as modules, and optimizers as objects belong to `dnn-layers`.

pub mod attrs;
pub mod autodiff;
pub mod backend;
mod checks;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
mod pending;
pub mod precision;
pub mod testing;

pub use attrs::{
    Activation, AdagradStep, AdamStep, BatchNormAttrs, Conv2dAttrs, ConvTranspose2dAttrs,
    GaussianCenter, GaussianWeights, Pool2dAttrs, RmsPropStep, SgdStep,
};
pub use autodiff::{Gradients, Graph, NonFiniteValue, ParamId, Parameter, Var};
pub use backend::Backend;
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
pub use error::{OpError, Result};
pub use magma_tensor::Tensor;
pub use pending::PendingValues;
pub use precision::Precision;
