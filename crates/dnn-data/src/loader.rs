//! A streaming loader for segmentation data: shuffles, batches, decodes and prepares samples
//! on worker threads, and keeps batches ready ahead of the training loop.
//!
//! Determinism: the order of an epoch depends only on `(seed, epoch)`, and every sample's
//! augmentation draws from its own generator seeded by `(seed, epoch, sample index)`, so the
//! batches are bit-identical whatever the number of workers and however the threads are
//! scheduled. Workers claim whole batches in order and the iterator yields them in order;
//! a worker may not claim a batch more than `prefetch + workers` batches ahead of the one the
//! consumer waits for, which bounds memory. Dropping the iterator stops the workers (each
//! finishes at most the batch it is preparing) and joins them.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use magma_tensor::{SeededRng, Tensor};

use crate::error::{DataError, Result};
use crate::preprocess::{Augment, Preprocess, prepare};
use crate::segmentation::SegmentationSource;

/// How a [`SegmentationLoader`] batches, shuffles, prepares and prefetches.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Samples per batch (at least 1).
    pub batch_size: usize,
    /// Shuffle the samples every epoch (from `(seed, epoch)`).
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seeds the shuffling and every augmentation.
    pub seed: u64,
    /// Worker threads decoding and preparing batches; 0 prepares them on the calling thread.
    pub workers: usize,
    /// Batches kept ready ahead of the consumer, beyond the ones the workers are preparing.
    pub prefetch: usize,
    /// Resizing and normalisation of every sample.
    pub preprocess: Preprocess,
    /// Augmentation (training), or `None` (evaluation).
    pub augment: Option<Augment>,
}

impl LoaderConfig {
    /// A configuration for `size` (`[height, width]`) samples: batches of `batch_size`, no
    /// shuffling or augmentation, seed 0, two workers, two batches of prefetch.
    pub fn new(batch_size: usize, size: [usize; 2]) -> Self {
        Self {
            batch_size,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 2,
            preprocess: Preprocess::new(size),
            augment: None,
        }
    }
}

/// One batch, ready for a model.
#[derive(Debug, Clone)]
pub struct SegmentationBatch {
    /// Normalised images `[B, 3, H, W]`.
    pub images: Tensor,
    /// Class indices `[B, H, W]` as `f32`.
    pub masks: Tensor,
    /// The sample names, in batch order.
    pub names: Vec<String>,
}

impl SegmentationBatch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the batch has no sample (never true for a loader's batch).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One rank's part of every epoch in data-parallel training ([`SegmentationLoader::sharded`]).
///
/// The epoch's order (shuffled from `(seed, epoch)` exactly as without sharding) is cut into
/// global batches of `batch_size × ranks` samples; rank `r` takes the `r`-th block of
/// `batch_size` samples of each. The ranks' batches of one step are therefore disjoint and
/// together form the batch a single process with `batch_size × ranks` would see at that step.
/// The last, incomplete global batch is dropped, so every rank makes the same number of steps
/// (shuffling drops different samples every epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank, `0..ranks`.
    pub rank: usize,
    /// Number of ranks.
    pub ranks: usize,
}

/// Batches of a [`SegmentationSource`], prepared on worker threads.
pub struct SegmentationLoader {
    source: Arc<dyn SegmentationSource>,
    config: LoaderConfig,
    shard: Option<Shard>,
}

impl std::fmt::Debug for SegmentationLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentationLoader")
            .field("source", &self.source.describe())
            .field("config", &self.config)
            .field("shard", &self.shard)
            .finish()
    }
}

/// Mixes numbers into one 64-bit seed (SplitMix64 finaliser over a running state).
fn mix(parts: &[u64]) -> u64 {
    let mut state = 0x243F_6A88_85A3_08D3u64;
    for &p in parts {
        state ^= p;
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}

impl SegmentationLoader {
    /// A loader over `source`. Errors when `batch_size` is 0, the source is empty, the
    /// preprocessing size is zero, or `drop_last` would leave no batch at all.
    pub fn new(source: Arc<dyn SegmentationSource>, config: LoaderConfig) -> Result<Self> {
        let invalid = |reason: String| DataError::Invalid {
            what: source.describe(),
            reason,
        };
        if config.batch_size == 0 {
            return Err(invalid("batch_size must be at least 1".into()));
        }
        if source.is_empty() {
            return Err(invalid("the source has no samples".into()));
        }
        if config.preprocess.size.contains(&0) {
            return Err(invalid(format!(
                "preprocessing size {:?} has a zero side",
                config.preprocess.size
            )));
        }
        if config.drop_last && source.len() < config.batch_size {
            return Err(invalid(format!(
                "{} samples make no full batch of {} and drop_last is set",
                source.len(),
                config.batch_size
            )));
        }
        Ok(Self {
            source,
            config,
            shard: None,
        })
    }

    /// This loader restricted to rank `rank` of `ranks` ([`Shard`]); one rank is the whole
    /// loader, unchanged. Errors when `rank >= ranks` or the source holds no full global batch
    /// of `batch_size × ranks` samples.
    pub fn sharded(mut self, rank: usize, ranks: usize) -> Result<Self> {
        let invalid = |reason: String| DataError::Invalid {
            what: self.source.describe(),
            reason,
        };
        if rank >= ranks {
            return Err(invalid(format!("rank {rank} is not below {ranks} ranks")));
        }
        if ranks == 1 {
            self.shard = None;
            return Ok(self);
        }
        let global = self.config.batch_size * ranks;
        if self.source.len() < global {
            return Err(invalid(format!(
                "{} samples make no full global batch of {} ({} per rank × {ranks} ranks)",
                self.source.len(),
                global,
                self.config.batch_size
            )));
        }
        self.shard = Some(Shard { rank, ranks });
        Ok(self)
    }

    /// The shard this loader yields, if any.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn SegmentationSource> {
        &self.source
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Number of samples per epoch (all of them, or fewer with `drop_last`; a shard's
    /// `batch_size` per step).
    pub fn samples_per_epoch(&self) -> usize {
        if self.config.drop_last || self.shard.is_some() {
            self.batches_per_epoch() * self.config.batch_size
        } else {
            self.source.len()
        }
    }

    /// Number of batches per epoch (of a shard: the full global batches).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.source.len(), self.config.batch_size);
        if let Some(shard) = self.shard {
            n / (b * shard.ranks)
        } else if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample indices of epoch `epoch`, in the order they are batched.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        if self.config.shuffle {
            SeededRng::new(mix(&[self.config.seed, epoch, 0x5348_5546])).shuffle(&mut order);
        }
        if let Some(Shard { rank, ranks }) = self.shard {
            let b = self.config.batch_size;
            return order
                .chunks_exact(b * ranks)
                .flat_map(|global| &global[rank * b..(rank + 1) * b])
                .copied()
                .collect();
        }
        order.truncate(self.samples_per_epoch());
        order
    }

    /// The batches of epoch `epoch`, prepared on `workers` threads and yielded in order.
    /// A batch with a sample that fails to load or prepare is yielded as that sample's error.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let order = self.epoch_order(epoch);
        let batches: Vec<Vec<usize>> = order
            .chunks(self.config.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        let job = Arc::new(Job {
            source: Arc::clone(&self.source),
            config: self.config.clone(),
            epoch,
            batches,
        });
        Epoch::start(job)
    }
}

/// What the workers of one epoch share.
struct Job {
    source: Arc<dyn SegmentationSource>,
    config: LoaderConfig,
    epoch: u64,
    batches: Vec<Vec<usize>>,
}

impl Job {
    fn sample_seed(&self, index: usize) -> u64 {
        mix(&[self.config.seed, self.epoch, index as u64])
    }

    /// Loads and prepares batch `b`.
    fn build(&self, b: usize) -> Result<SegmentationBatch> {
        let indices = &self.batches[b];
        let pre = &self.config.preprocess;
        let mut images = Vec::new();
        let mut masks = Vec::new();
        let mut names = Vec::with_capacity(indices.len());
        let mut size: Option<[usize; 2]> = None;
        for &i in indices {
            let sample = self.source.load_for_target(i, pre.size)?;
            let prepared = match &self.config.augment {
                Some(aug) => {
                    let mut rng = SeededRng::new(self.sample_seed(i));
                    prepare(&sample, pre, Some((aug, &mut rng)))?
                }
                None => prepare(&sample, pre, None)?,
            };
            let [h, w] = prepared.size;
            if prepared.image.len() != 3 * h * w || prepared.mask.len() != h * w {
                return Err(DataError::Preprocess {
                    name: prepared.name,
                    reason: format!(
                        "prepared image has {} values and mask {} for size {h}x{w}",
                        prepared.image.len(),
                        prepared.mask.len()
                    ),
                });
            }
            match size {
                None => {
                    size = Some(prepared.size);
                    images.reserve(indices.len() * 3 * h * w);
                    masks.reserve(indices.len() * h * w);
                }
                Some(s) if s != prepared.size => {
                    return Err(DataError::Preprocess {
                        name: prepared.name,
                        reason: format!(
                            "prepared size {:?} differs from the batch's {s:?}",
                            prepared.size
                        ),
                    });
                }
                Some(_) => {}
            }
            images.extend_from_slice(&prepared.image);
            masks.extend(prepared.mask.iter().map(|&m| f32::from(m)));
            names.push(prepared.name);
        }
        let [h, w] = size.unwrap_or(pre.size);
        let n = names.len();
        Ok(SegmentationBatch {
            images: Tensor::from_vec(images, &[n, 3, h, w])?,
            masks: Tensor::from_vec(masks, &[n, h, w])?,
            names,
        })
    }

    /// [`Self::build`], turning a panic into an error so the consumer never waits forever.
    fn build_guarded(&self, b: usize) -> Result<SegmentationBatch> {
        catch_unwind(AssertUnwindSafe(|| self.build(b))).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let names: Vec<&str> = self.batches[b]
                .iter()
                .map(|&i| self.source.name(i))
                .collect();
            Err(DataError::Invalid {
                what: self.source.describe(),
                reason: format!("preparing batch {b} ({}) panicked: {msg}", names.join(", ")),
            })
        })
    }
}

/// Claim bookkeeping shared by the consumer and the workers.
struct Shared {
    state: Mutex<ClaimState>,
    wake: Condvar,
}

struct ClaimState {
    /// The next batch a worker may claim.
    next_claim: usize,
    /// The batch the consumer yields next.
    next_yield: usize,
    /// Set when the iterator is dropped.
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ClaimState> {
        // A poisoned lock only means a thread panicked while holding it; the counters stay valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The batches of one epoch ([`SegmentationLoader::epoch`]). Dropping it stops its workers.
pub struct Epoch {
    job: Arc<Job>,
    shared: Arc<Shared>,
    rx: Option<Receiver<(usize, Result<SegmentationBatch>)>>,
    workers: Vec<JoinHandle<()>>,
    ready: BTreeMap<usize, Result<SegmentationBatch>>,
    next: usize,
}

impl Epoch {
    fn start(job: Arc<Job>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(ClaimState {
                next_claim: 0,
                next_yield: 0,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let mut epoch = Self {
            job: Arc::clone(&job),
            shared: Arc::clone(&shared),
            rx: None,
            workers: Vec::new(),
            ready: BTreeMap::new(),
            next: 0,
        };
        let wanted = job.config.workers.min(job.batches.len());
        if wanted == 0 {
            return epoch;
        }
        let window = job.config.prefetch + wanted;
        let (tx, rx) = channel();
        for w in 0..wanted {
            let (job, shared, tx) = (Arc::clone(&job), Arc::clone(&shared), tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("seg-loader-{w}"))
                .spawn(move || worker(&job, &shared, &tx, window));
            match spawned {
                Ok(handle) => epoch.workers.push(handle),
                // Fewer threads than asked for still work; none at all falls back to inline.
                Err(_) => break,
            }
        }
        if !epoch.workers.is_empty() {
            epoch.rx = Some(rx);
        }
        epoch
    }

    /// Number of batches this epoch yields in all.
    pub fn total_batches(&self) -> usize {
        self.job.batches.len()
    }
}

fn worker(
    job: &Job,
    shared: &Shared,
    tx: &Sender<(usize, Result<SegmentationBatch>)>,
    window: usize,
) {
    loop {
        let b = {
            let mut st = shared.lock();
            loop {
                if st.stop || st.next_claim >= job.batches.len() {
                    return;
                }
                if st.next_claim < st.next_yield + window {
                    break;
                }
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.next_claim += 1;
            st.next_claim - 1
        };
        let result = job.build_guarded(b);
        if tx.send((b, result)).is_err() {
            return;
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<SegmentationBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let total = self.job.batches.len();
        if self.next >= total {
            return None;
        }
        let b = self.next;
        let item = match &self.rx {
            None => self.job.build_guarded(b),
            Some(rx) => loop {
                if let Some(item) = self.ready.remove(&b) {
                    break item;
                }
                match rx.recv() {
                    Ok((i, item)) => {
                        self.ready.insert(i, item);
                    }
                    Err(_) => {
                        // Every worker is gone without sending batch b (cannot happen unless a
                        // thread died outside the guarded section): report it and end the epoch.
                        self.next = total;
                        return Some(Err(DataError::Invalid {
                            what: self.job.source.describe(),
                            reason: format!("loader workers stopped before batch {b}"),
                        }));
                    }
                }
            },
        };
        self.next += 1;
        {
            let mut st = self.shared.lock();
            st.next_yield = self.next;
        }
        self.shared.wake.notify_all();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.job.batches.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        // Workers never block on the (unbounded) channel, so dropping the receiver is only
        // tidiness; each worker sees `stop` after at most the batch it is preparing.
        self.rx = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_differs_by_every_part() {
        let a = mix(&[1, 2, 3]);
        assert_ne!(a, mix(&[1, 2, 4]));
        assert_ne!(a, mix(&[1, 3, 3]));
        assert_ne!(a, mix(&[0, 2, 3]));
        assert_eq!(a, mix(&[1, 2, 3]));
    }
}
