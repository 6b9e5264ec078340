//! The CPU backend: the embedded default and the reference every other backend is tested
//! against. Multi-threaded with rayon; GEMMs through the `gemm` crate.

mod activation;
mod batch_norm;
mod buffers;
mod conv;
mod direct_conv;
mod elementwise;
mod gemm;
mod loss;
mod matmul;
mod metrics;
mod optim;
mod pool;
mod reduce;
mod resize;
mod shape;
mod softmax;
mod vectorized;
mod winograd4_conv;
mod winograd_conv;

use crate::backend::Backend;

/// The CPU backend. Threads come from the global rayon pool (set its size with
/// [`CpuBackend::set_threads`] or `RAYON_NUM_THREADS`).
#[derive(Debug, Clone, Copy)]
pub struct CpuBackend;

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// The CPU backend; also makes the allocator keep freed activation-sized blocks
    /// ([`magma_tensor::host_memory::keep_freed_host_blocks`]), which saves a page fault per
    /// 4 KiB of every buffer a step allocates again, and turns on the reuse of freed tensor
    /// buffers for outputs that a kernel writes in full
    /// ([`magma_tensor::host_buffer_pool`]), which saves zeroing them.
    pub fn new() -> Self {
        magma_tensor::host_memory::keep_freed_host_blocks();
        magma_tensor::host_buffer_pool::enable_reuse();
        Self
    }

    /// Sizes the global thread pool; only the first call in a process takes effect.
    pub fn set_threads(threads: usize) -> std::result::Result<(), String> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| e.to_string())
    }

    /// Threads the backend uses.
    pub fn threads() -> usize {
        rayon::current_num_threads()
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads)", Self::threads())
    }
}
