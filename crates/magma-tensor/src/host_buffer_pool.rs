//! Reuse of freed activation-sized host buffers for outputs that a kernel writes in full.
//!
//! A training step frees and allocates the same activation-sized buffers every step. A kernel
//! that writes every element of its output does not need the buffer zeroed first, yet
//! `vec![0.0; n]` from a reused heap block is a full write pass of its own: on the developer
//! machine's U-Net base 16 / 128² / batch 8 CPU benchmark that zeroing took 8 % of the step.
//! Once [`enable_reuse`] was called (the CPU backend does), host storage of at least
//! [`MIN_POOLED_FLOATS`] elements that is dropped goes into a process-wide pool instead of back
//! to the allocator, and [`take_pooled`] hands out a pooled buffer of exactly the asked
//! length without touching its contents. The pool keeps at most `MAGMA_HOST_POOL_MIB` MiB
//! (default [`DEFAULT_CAPACITY_MIB`]; 0 turns reuse off), lets the oldest buffers go first,
//! frees a buffer nobody asked for within [`MAX_AGE_EVENTS`] (a data loader's fresh batches do
//! not pile up), and [`release_pooled`] frees them all.
//!
//! Contents of a reused buffer are whatever its last tensor held; in debug builds every buffer
//! handed out is filled with NaN, so that a kernel that leaves an element unwritten fails its
//! tests instead of passing on stale values (callers do the same with the fresh buffers they
//! make when the pool has none).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Buffers below this many floats (256 KiB) are left to the allocator.
pub const MIN_POOLED_FLOATS: usize = 1 << 16;

/// The pool's default capacity in MiB (`MAGMA_HOST_POOL_MIB` overrides it).
pub const DEFAULT_CAPACITY_MIB: usize = 512;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// How many pool events (buffers kept or asked for) a kept buffer waits for a taker before it is
/// freed. A U-Net base 16 training step makes about 200, and a step's activations are asked for
/// again one step after they are freed; buffers of a length nobody asks for (a data loader's
/// fresh batches, the shapes of an evaluation pass) go back to the allocator after this many.
pub const MAX_AGE_EVENTS: u64 = 4096;

/// Freed buffers, oldest first, each with the event count when it was kept; the bytes they hold;
/// the events so far.
struct Pool {
    buffers: VecDeque<(u64, Vec<f32>)>,
    bytes: usize,
    events: u64,
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

fn bytes_of(buf: &Vec<f32>) -> usize {
    buf.capacity() * std::mem::size_of::<f32>()
}

/// The pool's capacity in bytes: `MAGMA_HOST_POOL_MIB` when set and a whole number, else
/// [`DEFAULT_CAPACITY_MIB`] (a value that is not a whole number is reported on stderr once);
/// read once.
fn capacity_bytes() -> usize {
    static CAPACITY: OnceLock<usize> = OnceLock::new();
    *CAPACITY.get_or_init(|| {
        let set = std::env::var("MAGMA_HOST_POOL_MIB").ok();
        parse_capacity_mib(set.as_deref())
            .unwrap_or_else(|bad| {
                eprintln!(
                    "magma-tensor: MAGMA_HOST_POOL_MIB={bad:?} is not a whole number of MiB; \
                     the host buffer pool keeps its default {DEFAULT_CAPACITY_MIB} MiB"
                );
                DEFAULT_CAPACITY_MIB
            })
            .saturating_mul(1 << 20)
    })
}

/// The capacity in MiB that a `MAGMA_HOST_POOL_MIB` value asks for (the default when unset), or
/// the value itself when it is not a whole number.
fn parse_capacity_mib(value: Option<&str>) -> Result<usize, String> {
    match value {
        None => Ok(DEFAULT_CAPACITY_MIB),
        Some(v) => v.trim().parse::<usize>().map_err(|_| v.to_string()),
    }
}

/// Lets dropped host storage of at least [`MIN_POOLED_FLOATS`] elements be kept for
/// [`take_pooled`] from now on (a no-op when `MAGMA_HOST_POOL_MIB=0`).
pub fn enable_reuse() {
    if capacity_bytes() > 0 {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// Whether dropped host storage is being kept for reuse.
pub fn reuse_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Bytes the pool holds now.
pub fn pooled_bytes() -> usize {
    POOL.lock().unwrap_or_else(PoisonError::into_inner).bytes
}

impl Pool {
    const fn new() -> Self {
        Pool {
            buffers: VecDeque::new(),
            bytes: 0,
            events: 0,
        }
    }

    /// Takes out the oldest buffers while they are older than [`MAX_AGE_EVENTS`] or while
    /// `incoming` more bytes would pass `capacity`; returns them (for the caller to free outside
    /// the lock).
    fn evict(&mut self, incoming: usize, capacity: usize) -> Vec<Vec<f32>> {
        let mut evicted = Vec::new();
        while let Some((kept_at, buf)) = self.buffers.front() {
            let too_old = kept_at + MAX_AGE_EVENTS < self.events;
            if !too_old && self.bytes + incoming <= capacity {
                break;
            }
            self.bytes -= bytes_of(buf);
            if let Some((_, buf)) = self.buffers.pop_front() {
                evicted.push(buf);
            }
        }
        evicted
    }

    /// Keeps `buf`, first letting the oldest buffers go (see [`Pool::evict`]); returns those.
    /// A buffer larger than `capacity` is returned itself.
    fn keep(&mut self, buf: Vec<f32>, capacity: usize) -> Vec<Vec<f32>> {
        self.events += 1;
        let size = bytes_of(&buf);
        if size > capacity {
            return vec![buf];
        }
        let evicted = self.evict(size, capacity);
        self.bytes += size;
        self.buffers.push_back((self.events, buf));
        evicted
    }

    /// Every kept buffer, taken out.
    fn drain(&mut self) -> Vec<Vec<f32>> {
        self.bytes = 0;
        self.buffers.drain(..).map(|(_, buf)| buf).collect()
    }

    /// The newest kept buffer of exactly `len` elements, taken out, and the buffers that aged
    /// out meanwhile.
    fn take(&mut self, len: usize, capacity: usize) -> (Option<Vec<f32>>, Vec<Vec<f32>>) {
        self.events += 1;
        // Looked for before the aged ones go: one of exactly this length is still of use.
        let found = self
            .buffers
            .iter()
            .rposition(|(_, b)| b.len() == len)
            .and_then(|i| self.buffers.remove(i))
            .map(|(_, buf)| buf);
        if let Some(buf) = &found {
            self.bytes -= bytes_of(buf);
        }
        (found, self.evict(0, capacity))
    }
}

/// Frees every buffer the pool keeps (reuse stays on): for a program that is done with a model
/// and wants its activations' memory back.
pub fn release_pooled() {
    let kept = POOL.lock().unwrap_or_else(PoisonError::into_inner).drain();
    drop(kept);
}

/// Keeps `buf` for reuse when reuse is on and it is large enough; otherwise frees it. The
/// oldest kept buffers are freed while the pool holds more than its capacity.
pub(crate) fn recycle(buf: Vec<f32>) {
    if buf.len() < MIN_POOLED_FLOATS || !reuse_enabled() {
        return;
    }
    let evicted = POOL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .keep(buf, capacity_bytes());
    // Freed outside the lock.
    drop(evicted);
}

/// The newest pooled buffer of exactly `len` floats, taken out of the pool, or `None` (reuse
/// off, `len` below [`MIN_POOLED_FLOATS`], or none of that length kept). Its contents are
/// unspecified (debug builds fill it with NaN): for outputs that the caller writes in full
/// before anything reads them.
pub fn take_pooled(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED_FLOATS || !reuse_enabled() {
        return None;
    }
    let (found, evicted) = POOL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(len, capacity_bytes());
    // Freed outside the lock.
    drop(evicted);
    let mut buf = found?;
    if cfg!(debug_assertions) {
        buf.fill(f32::NAN);
    }
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    /// The process-wide pool, through tensors. Other tests of this binary may drop large
    /// tensors meanwhile, so this one checks which block comes back (by address, for lengths no
    /// other test uses), not the pool's byte count.
    #[test]
    fn dropped_storage_is_handed_out_again_and_small_or_unmatched_lengths_are_not() {
        enable_reuse();
        if !reuse_enabled() {
            eprintln!("skipped: MAGMA_HOST_POOL_MIB=0 turns the pool off");
            return;
        }
        let len = MIN_POOLED_FLOATS + 4099;
        let t = Tensor::from_vec(vec![3.0; len], &[len]).unwrap();
        let ptr = t.host_data().unwrap().as_ptr();
        drop(t);

        // Another length does not take it.
        assert!(take_pooled(len + 1).is_none());

        // The same length gets the very block, NaN-filled in debug builds; only once.
        let again = take_pooled(len).unwrap();
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.len(), len);
        if cfg!(debug_assertions) {
            assert!(again.iter().all(|v| v.is_nan()));
        }
        assert!(take_pooled(len).is_none());

        // Storage shared by a view goes back only when its last handle drops.
        let t = Tensor::from_vec(again, &[len]).unwrap();
        let view = t.clone();
        drop(t);
        assert!(take_pooled(len).is_none());
        drop(view);
        let back = take_pooled(len).unwrap();
        assert_eq!(back.as_ptr(), ptr);

        // `into_vec` takes the elements out, whole: the block stays the vector's.
        let len = MIN_POOLED_FLOATS + 4111;
        let t = Tensor::from_vec(vec![2.0; len], &[len]).unwrap();
        let ptr = t.host_data().unwrap().as_ptr();
        let v = t.into_vec().unwrap();
        assert_eq!(v.as_ptr(), ptr);
        assert!(v.iter().all(|&x| x == 2.0));
        assert!(take_pooled(len).is_none());

        // Buffers below the minimum stay with the allocator, whatever their length.
        let small = MIN_POOLED_FLOATS - 1;
        let t = Tensor::from_vec(vec![1.0; small], &[small]).unwrap();
        let ptr = t.host_data().unwrap().as_ptr();
        drop(t);
        assert!(take_pooled(small).is_none());
        let pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(pool.buffers.iter().all(|(_, b)| b.as_ptr() != ptr));
    }

    #[test]
    fn a_full_pool_lets_its_oldest_buffers_go_and_takes_the_newest_of_a_length() {
        let mut pool = Pool::new();
        let cap = 3 * 4096;
        assert!(pool.keep(vec![1.0; 1024], cap).is_empty());
        assert!(pool.keep(vec![2.0; 1024], cap).is_empty());
        assert!(pool.keep(vec![3.0; 512], cap).is_empty());
        assert_eq!(pool.bytes, 2560 * 4);
        // 1024 more floats pass the capacity: the oldest (the 1.0s) goes.
        let evicted = pool.keep(vec![4.0; 1024], cap);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0][0], 1.0);
        assert_eq!(pool.bytes, 2560 * 4);
        // Larger than the whole capacity: handed straight back.
        let evicted = pool.keep(vec![5.0; 4096], cap);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].len(), 4096);
        // The newest of a length first.
        assert_eq!(pool.take(1024, cap).0.unwrap()[0], 4.0);
        assert_eq!(pool.take(1024, cap).0.unwrap()[0], 2.0);
        assert!(pool.take(1024, cap).0.is_none());
        assert_eq!(pool.take(512, cap).0.unwrap()[0], 3.0);
        assert_eq!(pool.bytes, 0);
        // Draining hands back everything.
        assert!(pool.keep(vec![6.0; 256], cap).is_empty());
        assert!(pool.keep(vec![7.0; 128], cap).is_empty());
        assert_eq!(pool.drain().len(), 2);
        assert_eq!(pool.bytes, 0);
        assert!(pool.take(256, cap).0.is_none());
    }

    #[test]
    fn the_capacity_setting_takes_whole_mib_and_refuses_anything_else() {
        assert_eq!(parse_capacity_mib(None), Ok(DEFAULT_CAPACITY_MIB));
        assert_eq!(parse_capacity_mib(Some("0")), Ok(0));
        assert_eq!(parse_capacity_mib(Some(" 2048 ")), Ok(2048));
        for bad in ["", "1.5", "-1", "512MiB", "lots"] {
            assert_eq!(parse_capacity_mib(Some(bad)), Err(bad.to_string()));
        }
    }

    #[test]
    fn a_buffer_nobody_asks_for_goes_after_max_age_events() {
        let mut pool = Pool::new();
        let cap = usize::MAX;
        assert!(pool.keep(vec![1.0; 64], cap).is_empty());
        // A length asked for and given back every event (a training step's activations) stays
        // reused; the unasked one ages out after MAX_AGE_EVENTS more events, and not before.
        assert!(pool.keep(vec![2.0; 32], cap).is_empty());
        let mut evicted_at = Vec::new();
        for round in 0..MAX_AGE_EVENTS {
            let (found, mut evicted) = pool.take(32, cap);
            let found = found.expect("the reused length is kept");
            evicted.extend(pool.keep(found, cap));
            if !evicted.is_empty() {
                assert_eq!(evicted, vec![vec![1.0; 64]]);
                evicted_at.push((round, pool.events));
            }
        }
        // Kept at event 1, it goes at the first event past 1 + MAX_AGE_EVENTS (each round is a
        // take and a keep, after the two keeps before the loop), and only once.
        assert_eq!(
            evicted_at,
            vec![(MAX_AGE_EVENTS / 2 - 1, MAX_AGE_EVENTS + 2)]
        );
        assert!(pool.take(64, cap).0.is_none());
        assert_eq!(pool.bytes, 32 * 4);

        // A buffer past its age is still handed out when its very length is asked for.
        let mut pool = Pool::new();
        assert!(pool.keep(vec![3.0; 16], cap).is_empty());
        pool.events += 2 * MAX_AGE_EVENTS;
        let (found, evicted) = pool.take(16, cap);
        assert_eq!(found, Some(vec![3.0; 16]));
        assert!(evicted.is_empty());
    }
}
