//! A caching device allocator: freed blocks go back to a per-size free list and are reused, so a
//! training step after the first allocates nothing from the driver.
//!
//! Sizes are rounded (512 B below 1 MiB, 2 MiB above) so that tensors of nearly equal size share
//! blocks. When the driver reports out-of-memory, every cached block is released and the
//! allocation is tried once more.

use std::collections::HashMap;

use super::check_driver;
use crate::Result;

/// Bytes the allocator holds, for benchmarks and memory reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of the blocks of live buffers (sizes rounded to the allocator's blocks: what they
    /// keep from other use, as PyTorch's `memory_reserved` minus its cache).
    pub in_use: usize,
    /// The most `in_use` has been since the last reset.
    pub peak_in_use: usize,
    /// Bytes the live buffers asked for, each rounded up to 512 B (PyTorch's
    /// `memory_allocated`).
    pub allocated: usize,
    /// The most `allocated` has been since the last reset (PyTorch's `max_memory_allocated`).
    pub peak_allocated: usize,
    /// Bytes in free blocks kept for reuse.
    pub cached: usize,
    /// Allocations the driver served (cache misses).
    pub driver_allocations: u64,
}

/// Free lists by rounded size, plus the statistics.
#[derive(Debug, Default)]
pub(crate) struct CachingAllocator {
    free: HashMap<usize, Vec<u64>>,
    stats: MemoryStats,
}

/// The block size a request of `bytes` is served from.
pub(crate) fn rounded_size(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 2 << 20;
    let bytes = bytes.max(1);
    if bytes < (1 << 20) {
        bytes.div_ceil(SMALL) * SMALL
    } else {
        bytes.div_ceil(LARGE) * LARGE
    }
}

/// A request as PyTorch's allocator counts it: rounded up to 512 B.
fn requested_size(bytes: usize) -> usize {
    bytes.max(1).div_ceil(512) * 512
}

impl CachingAllocator {
    /// A block of at least `bytes`; the caller's context must be current. When the driver is
    /// out of memory, `drain` (waiting for the work that may still use cached blocks) runs
    /// before the cached blocks are freed and the allocation is tried once more.
    pub(crate) fn allocate(
        &mut self,
        bytes: usize,
        drain: impl FnOnce() -> Result<()>,
    ) -> Result<(u64, usize)> {
        let size = rounded_size(bytes);
        if let Some(ptr) = self.free.get_mut(&size).and_then(Vec::pop) {
            self.stats.cached -= size;
            self.note_in_use(size, bytes);
            return Ok((ptr, size));
        }
        let ptr = match driver_alloc(size) {
            Ok(p) => p,
            Err(_) => {
                drain()?;
                self.release_cached()?;
                driver_alloc(size)?
            }
        };
        self.stats.driver_allocations += 1;
        self.note_in_use(size, bytes);
        Ok((ptr, size))
    }

    /// Returns a block of `size` bytes, allocated for a request of `requested`, to its free list.
    pub(crate) fn release(&mut self, ptr: u64, size: usize, requested: usize) {
        self.stats.in_use -= size;
        self.stats.allocated -= requested_size(requested);
        self.stats.cached += size;
        self.free.entry(size).or_default().push(ptr);
    }

    /// Gives every cached block back to the driver. The caller synchronises the stream first.
    pub(crate) fn release_cached(&mut self) -> Result<()> {
        for (size, ptrs) in self.free.drain() {
            for ptr in ptrs {
                // SAFETY: `ptr` came from cuMemAlloc in this context and no live buffer holds it
                // (it sits on a free list); the stream was synchronised by the caller.
                check_driver("cuMemFree", unsafe { cust::sys::cuMemFree_v2(ptr) })?;
                self.stats.cached -= size;
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.stats
    }

    pub(crate) fn reset_peak(&mut self) {
        self.stats.peak_in_use = self.stats.in_use;
        self.stats.peak_allocated = self.stats.allocated;
    }

    fn note_in_use(&mut self, size: usize, requested: usize) {
        self.stats.in_use += size;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
        self.stats.allocated += requested_size(requested);
        self.stats.peak_allocated = self.stats.peak_allocated.max(self.stats.allocated);
    }
}

fn driver_alloc(size: usize) -> Result<u64> {
    let mut ptr: cust::sys::CUdeviceptr = 0;
    // SAFETY: cuMemAlloc writes one device pointer into `ptr`, a valid local.
    check_driver("cuMemAlloc", unsafe {
        cust::sys::cuMemAlloc_v2(&mut ptr, size)
    })?;
    Ok(ptr)
}

#[cfg(test)]
mod tests {
    use super::rounded_size;

    #[test]
    fn sizes_round_to_their_bucket() {
        assert_eq!(rounded_size(0), 512);
        assert_eq!(rounded_size(513), 1024);
        assert_eq!(rounded_size((1 << 20) + 1), 2 << 20);
        assert_eq!(rounded_size(5 << 20), 6 << 20);
    }
}
