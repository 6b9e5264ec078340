//! How the C allocator treats the host memory of tensors.
//!
//! A training step allocates and frees activation-sized buffers (megabytes each) over and over.
//! glibc's malloc hands blocks above its (dynamic) mmap threshold back to the kernel when they
//! are freed and trims the heap's top, so the next step takes a page fault for every 4 KiB it
//! gets back, zeroed by the kernel: on the developer machine's U-Net base 16 / 128² / batch 8
//! CPU benchmark, 520 k faults in 7 benchmark steps, a tenth of the run. Keeping freed blocks
//! (up to glibc's largest mmap threshold, 32 MiB) brings that to 76 k.

use std::sync::Once;

/// Makes the process's allocator keep freed tensor-sized blocks for reuse instead of returning
/// them to the kernel (glibc: `mallopt` raises the mmap threshold to its 32 MiB maximum and
/// turns heap trimming off; other C libraries: nothing). Done once per process; skipped when
/// `GLIBC_TUNABLES` is set, so that a user's own malloc tuning wins. The CPU backend calls it.
pub fn keep_freed_host_blocks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            tune_allocator();
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    use std::os::raw::c_int;
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    // SAFETY: mallopt takes two integers and changes glibc's allocation parameters under its
    // own lock; no memory is passed. A refused value (return 0) leaves the default in place.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, c_int::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
