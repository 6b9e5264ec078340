//! # magma-tensor
//!
//! Owns the tensor type of magma-dnn and the memory it lives in. A [`Tensor`] is an `f32` array
//! with a shape, strides and an offset into shared [`Storage`]; activations are NCHW by default
//! and may be laid out channels-last ([`MemoryFormat::ChannelsLast`], NHWC in memory) behind the
//! same logical shape. Memory comes in MagmaDNN's kinds: [`MemoryKind::Host`] always, and with
//! the `cuda` feature `Device` and `Managed` (host and device copies synchronised explicitly)
//! through the [`DeviceBuffer`](device::DeviceBuffer) seam, filled by the cust-backed `cuda`
//! module (a caching allocator, one stream per GPU, pinned staging for copies). The crate
//! also owns seeded initialisers ([`Initializer`], [`SeededRng`]) and zero-copy `ndarray`
//! interop, how the C allocator keeps freed host blocks ([`host_memory`]) and the reuse of freed
//! activation-sized host buffers for outputs written in full ([`host_buffer_pool`]). It knows
//! nothing of operations, gradients or layers: those live in `dnn-ops` and above. Every
//! fallible public call returns a typed [`TensorError`].

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "device-seam")]
pub mod device;
mod error;
pub mod host_buffer_pool;
pub mod host_memory;
mod init;
mod layout;
mod ndarray_interop;
mod rng;
mod storage;
mod tensor;

pub use error::{Result, TensorError};
pub use init::{Initializer, fans};
pub use layout::{DType, MemoryFormat, channels_last_strides, contiguous_strides, numel};
pub use rng::SeededRng;
pub use storage::{MemoryKind, Storage};
pub use tensor::Tensor;
