//! A corrupt header claiming billions of samples must fail fast and without allocating what it
//! claims. This test binary installs an allocator that records the largest single allocation
//! (its only unsafe code, forwarding to `System`), so a reader that trusted the header and
//! reserved its size up front — which Linux overcommit would otherwise let pass silently — fails
//! here. It holds one test so that no other test's allocations interleave.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{bytes, gzip, idx_header, write};
use dnn_data::{DataError, read_idx_images, read_idx_labels};

/// Largest single allocation (or reallocation target) seen since the last reset, in bytes.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct RecordLargest;

// SAFETY: every method forwards its arguments unchanged to `System`, which implements the
// `GlobalAlloc` contract; the only addition is an atomic update that neither allocates nor
// touches the memory.
unsafe impl GlobalAlloc for RecordLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`, as the
        // caller guarantees; the arguments are passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: RecordLargest = RecordLargest;

/// Far below any header-implied size used here (the smallest is 2 GiB).
const LIMIT: usize = 16 << 20;

#[test]
fn headers_claiming_huge_sizes_fail_fast_without_allocating_them() {
    let dir = tempfile::tempdir().unwrap();
    let body = bytes(1000, 5);
    let mut cases = Vec::new();
    // 2^31 images of 28x28 (1.6 TiB) and of 1x1 (2 GiB, which overcommit would let a naive
    // reader reserve), each raw and gzipped, and 2^31 labels.
    for (i, dims) in [[1u32 << 31, 28, 28], [1 << 31, 1, 1]].iter().enumerate() {
        let mut file = idx_header(0x803, dims);
        file.extend_from_slice(&body);
        cases.push((write(dir.path(), &format!("img{i}"), &file), true));
        cases.push((write(dir.path(), &format!("img{i}.gz"), &gzip(&file)), true));
    }
    let mut labels = idx_header(0x801, &[1 << 31]);
    labels.extend_from_slice(&body);
    cases.push((write(dir.path(), "labels.gz", &gzip(&labels)), false));
    cases.push((write(dir.path(), "labels", &labels), false));

    LARGEST.store(0, Ordering::Relaxed);
    let start = Instant::now();
    for (path, images) in &cases {
        let err = if *images {
            read_idx_images(path).map(|_| ()).unwrap_err()
        } else {
            read_idx_labels(path).map(|_| ()).unwrap_err()
        };
        match err {
            DataError::Truncated {
                expected_bytes,
                actual_bytes,
                ..
            } => {
                assert!(expected_bytes >= 1 << 31, "{}", path.display());
                assert!(actual_bytes < 2000, "{}", path.display());
            }
            other => panic!("{}: expected Truncated, got {other:?}", path.display()),
        }
    }
    let elapsed = start.elapsed();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < LIMIT,
        "largest allocation {largest} bytes while reading the bogus headers"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "took {elapsed:?} to reject the bogus headers"
    );

    // The instrument works: a 64 MiB allocation is seen.
    LARGEST.store(0, Ordering::Relaxed);
    let big = vec![1u8; 64 << 20];
    assert_eq!(big.len(), 64 << 20);
    assert!(LARGEST.load(Ordering::Relaxed) >= 64 << 20);
}
