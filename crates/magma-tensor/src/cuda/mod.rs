//! CUDA memory (only with the `cuda` feature): one [`CudaDevice`] per GPU holding the primary
//! context, the stream every operation runs on, a caching allocator ([`allocator`]) and pinned
//! staging buffers for host↔device copies ([`CudaBuffer`] is the cust-backed
//! [`DeviceBuffer`](crate::device::DeviceBuffer)).
//!
//! All work of a device is ordered on its one stream, so a buffer returned to the cache can be
//! handed to the next kernel without waiting: the stream runs them in order.

mod allocator;
mod buffer;
mod device;

pub use allocator::MemoryStats;
pub use buffer::CudaBuffer;
pub use device::{CudaDevice, QUEUED_READ_MAX, QueuedRead};

use crate::TensorError;

/// Turns a cust status into a typed error naming the call.
pub(crate) fn cuda_err(call: &'static str, e: cust::error::CudaError) -> TensorError {
    // `{:?}`, not Display: cust's Display asks the driver for a string and can fail.
    TensorError::Cuda {
        call,
        detail: format!("{e:?}"),
    }
}

/// Checks a raw driver-API status.
pub(crate) fn check_driver(call: &'static str, status: cust::sys::CUresult) -> crate::Result<()> {
    if status == cust::sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(TensorError::Cuda {
            call,
            detail: format!("{status:?}"),
        })
    }
}
