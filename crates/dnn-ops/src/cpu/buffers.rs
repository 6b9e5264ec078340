//! Output and scratch buffers of the CPU kernels without single-threaded passes over them.
//!
//! `vec![0.0; n]` zeroes a reused heap block on the calling thread; for an activation of several
//! MiB that one-thread memset cost as much as the multi-threaded kernel that then overwrites it
//! (measured at 8 threads, docs/perf/bench-unet.md). [`zeroed`] zeroes large buffers on the rayon
//! pool instead, [`written_in_full`] skips the zeroing for outputs a kernel writes whole, and
//! [`with_thread_scratch`] lends each worker thread a buffer kept between calls
//! for scratch that the kernel overwrites before reading (padded images, transformed tiles).

use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

/// Below this many floats (1 MiB) a buffer is zeroed on the calling thread.
const PARALLEL_ZERO_MIN: usize = 1 << 18;

/// `len` zeros, written by the rayon pool's threads when the buffer is large.
/// A pooled block of that length is zeroed and reused ([`written_in_full`]).
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    if let Some(mut buf) = magma_tensor::host_buffer_pool::take_pooled(len) {
        buf.par_chunks_mut(PARALLEL_CHUNK)
            .for_each(|chunk| chunk.fill(0.0));
        return buf;
    }
    if len < PARALLEL_ZERO_MIN || rayon::current_num_threads() == 1 {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0.0f32, len));
    v
}

/// A buffer of `len` floats for an output that the kernel writes in full before anything reads
/// it: a freed tensor's block of that length when the pool keeps one
/// ([`magma_tensor::host_buffer_pool`]; no zeroing pass), else [`zeroed`]. Its contents are
/// unspecified; debug builds fill it with NaN either way, so a kernel that leaves an element
/// unwritten fails its tests.
pub(crate) fn written_in_full(len: usize) -> Vec<f32> {
    if let Some(buf) = magma_tensor::host_buffer_pool::take_pooled(len) {
        return buf;
    }
    if cfg!(debug_assertions) {
        return vec![f32::NAN; len];
    }
    zeroed(len)
}

/// An empty vector with room for `len` floats, for a parallel `par_extend` that fills it: a
/// pooled block of that length when there is one ([`written_in_full`]).
pub(crate) fn empty_with_capacity(len: usize) -> Vec<f32> {
    match magma_tensor::host_buffer_pool::take_pooled(len) {
        Some(mut buf) => {
            buf.clear();
            buf
        }
        None => Vec::with_capacity(len),
    }
}

/// `f(a[i], b[i])` for every `i`, written once by the rayon pool's threads (no copy of `a`
/// first: `a.to_vec()` is a one-thread copy as slow as the parallel pass after it).
pub(crate) fn par_map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = empty_with_capacity(a.len());
    out.par_extend(
        a.par_iter()
            .zip(b.par_iter())
            .with_min_len(PARALLEL_CHUNK)
            .map(|(&x, &y)| f(x, y)),
    );
    out
}

/// `f(a[i])` for every `i`, as [`par_map2`].
pub(crate) fn par_map(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = empty_with_capacity(a.len());
    out.par_extend(a.par_iter().with_min_len(PARALLEL_CHUNK).map(|&x| f(x)));
    out
}

/// `acc[i] += b[i]` on the rayon pool's threads.
pub(crate) fn par_add_assign(acc: &mut [f32], b: &[f32]) {
    debug_assert_eq!(acc.len(), b.len());
    acc.par_chunks_mut(PARALLEL_CHUNK)
        .zip(b.par_chunks(PARALLEL_CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
}

/// The smallest share of an elementwise pass that one task takes (32 KiB).
const PARALLEL_CHUNK: usize = 8192;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats per cache line (64 bytes, one AVX-512 vector).
pub(crate) const LINE_FLOATS: usize = 16;

/// `len` rounded up to whole cache lines: where a kernel splits its scratch into parts, each
/// part's length rounded so, keeps the next part's start on a line.
pub(crate) fn line_aligned_len(len: usize) -> usize {
    len.next_multiple_of(LINE_FLOATS)
}

/// Runs `f` with a buffer of `len` floats, starting on a cache line, that the process keeps
/// between calls for scratch shared by the rayon pool's threads within one call (the batch-wide
/// transforms of a filter gradient, several MiB: a fresh one would fault its pages in at every
/// call). Its contents are whatever the last use left: `f` must write every value before
/// reading it. A call while another holds it gets a fresh buffer.
pub(crate) fn with_shared_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    static SHARED: Mutex<Vec<f32>> = Mutex::new(Vec::new());
    let mut buf = std::mem::take(&mut *SHARED.lock().unwrap_or_else(PoisonError::into_inner));
    let result = lend_aligned(&mut buf, len, f);
    let mut kept = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() < buf.len() {
        *kept = buf;
    }
    result
}

/// `f` on `len` floats of `buf` (grown as needed) from its first cache line.
fn lend_aligned<R>(buf: &mut Vec<f32>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if buf.len() < len + LINE_FLOATS {
        buf.resize(len + LINE_FLOATS, 0.0);
    }
    // An f32 pointer reaches a multiple of 64 bytes within 15 floats.
    let start = buf.as_ptr().align_offset(4 * LINE_FLOATS);
    debug_assert!(start < LINE_FLOATS);
    f(&mut buf[start..start + len])
}

/// Runs `f` with this thread's scratch buffer of `len` floats, starting on a cache line (64
/// bytes: the allocator aligns large blocks to 16 bytes only, and a vector load or store across
/// two lines costs two). Its contents are whatever the thread's last use left (zeros where it
/// grew): `f` must write every value before reading it. A nested call on the same thread gets a
/// fresh buffer of its own.
pub(crate) fn with_thread_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => lend_aligned(&mut buf, len, f),
        Err(_) => lend_aligned(&mut Vec::new(), len, f),
    })
}

#[cfg(test)]
mod tests {
    use super::{PARALLEL_ZERO_MIN, with_shared_scratch, with_thread_scratch, zeroed};

    #[test]
    fn zeroed_buffers_are_zero_at_every_size() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            for len in [
                0,
                1,
                PARALLEL_ZERO_MIN - 1,
                PARALLEL_ZERO_MIN,
                3 * PARALLEL_ZERO_MIN + 7,
            ] {
                let v = zeroed(len);
                assert_eq!(v.len(), len);
                assert!(v.iter().all(|&x| x == 0.0), "len {len}");
            }
        });
    }

    #[test]
    fn thread_scratch_is_reused_and_nested_calls_get_their_own() {
        with_thread_scratch(8, |a| {
            a.fill(3.0);
            with_thread_scratch(4, |b| {
                assert_eq!(b, &[0.0; 4], "a nested call does not see the outer buffer");
                b.fill(5.0);
            });
            assert_eq!(a, &[3.0; 8]);
        });
        with_thread_scratch(6, |a| {
            assert_eq!(a, &[3.0; 6], "kept between calls");
        });
    }

    #[test]
    fn shared_scratch_is_aligned_and_nested_calls_get_their_own() {
        with_shared_scratch(100, |a| {
            assert_eq!(a.as_ptr() as usize % 64, 0);
            a.fill(2.0);
            with_shared_scratch(50, |b| {
                assert_eq!(b.as_ptr() as usize % 64, 0);
                b.fill(4.0);
            });
            assert_eq!(
                a, &[2.0; 100],
                "a nested call does not touch the outer buffer"
            );
        });
    }

    #[test]
    fn thread_scratch_starts_on_a_cache_line() {
        for len in [1, 17, 1000, 1 << 20, 5, (1 << 20) + 3] {
            with_thread_scratch(len, |a| {
                assert_eq!(a.len(), len);
                assert_eq!(a.as_ptr() as usize % 64, 0, "len {len}");
                a.fill(1.0);
                with_thread_scratch(len, |b| {
                    assert_eq!(b.as_ptr() as usize % 64, 0, "nested, len {len}");
                });
            });
        }
    }
}
