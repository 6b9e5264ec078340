//! A streaming loader for segmentation data: shuffles, batches, decodes and prepares samples
//! on worker threads, and keeps batches ready ahead of the training loop.
//!
//! Determinism: the order of an epoch depends only on `(seed, epoch)`, and every sample's
//! augmentation draws from its own generator seeded by `(seed, epoch, sample index)`, so the
//! batches are bit-identical whatever the number of workers and however the threads are
//! scheduled. Workers claim single samples in order (so the samples of one batch are prepared
//! in parallel) and put each in its place in its batch; the worker that completes a batch
//! stacks it, and the consumer yields batches in order. A worker may not claim a sample of a
//! batch more than `prefetch` batches past the ones being prepared for the consumer, which
//! bounds memory. [`SegmentationLoader::epochs`] runs several epochs as one stream, so the
//! workers go on into the next epoch while the training loop evaluates. Dropping the iterator
//! stops the workers (each finishes at most the sample it is preparing) and joins them.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use magma_tensor::{SeededRng, Tensor};

use crate::error::{DataError, Result};
use crate::preprocess::{Augment, PreparedSample, Preprocess, prepare};
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
        epoch_order(
            self.source.len(),
            &self.config,
            self.shard,
            self.samples_per_epoch(),
            epoch,
        )
    }

    /// The batches of epoch `epoch`, prepared on `workers` threads and yielded in order.
    /// A batch with a sample that fails to load or prepare is yielded as that sample's error.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        Epoch {
            stream: Stream::start(self.job(epoch, 1)),
        }
    }

    /// The epochs `epochs.start .. epochs.end` as one stream ([`EpochStream`]): the workers
    /// run on into the next epoch while the consumer is between epochs (evaluating, writing a
    /// checkpoint), so the next epoch's first batches are ready when it starts. Each epoch's
    /// batches are exactly those of [`Self::epoch`].
    pub fn epochs(&self, epochs: std::ops::Range<u64>) -> EpochStream {
        let count = epochs.end.saturating_sub(epochs.start);
        EpochStream {
            stream: Stream::start(self.job(epochs.start, count)),
            next_epoch: epochs.start,
            end: epochs.end.max(epochs.start),
        }
    }

    fn job(&self, first_epoch: u64, epochs: u64) -> Arc<Job> {
        let samples_per_epoch = self.samples_per_epoch();
        Arc::new(Job {
            source: Arc::clone(&self.source),
            config: self.config.clone(),
            shard: self.shard,
            first_epoch,
            epochs,
            samples_per_epoch,
            batches_per_epoch: samples_per_epoch.div_ceil(self.config.batch_size),
            orders: Mutex::new(Vec::new()),
        })
    }
}

/// The sample indices of one epoch (see [`SegmentationLoader::epoch_order`]).
fn epoch_order(
    len: usize,
    config: &LoaderConfig,
    shard: Option<Shard>,
    samples_per_epoch: usize,
    epoch: u64,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if config.shuffle {
        SeededRng::new(mix(&[config.seed, epoch, 0x5348_5546])).shuffle(&mut order);
    }
    if let Some(Shard { rank, ranks }) = shard {
        let b = config.batch_size;
        return order
            .chunks_exact(b * ranks)
            .flat_map(|global| &global[rank * b..(rank + 1) * b])
            .copied()
            .collect();
    }
    order.truncate(samples_per_epoch);
    order
}

/// Where a sample of the stream goes: the stream's samples are the epochs' orders one after
/// the other, numbered from 0; so are its batches.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The epoch.
    epoch: u64,
    /// The source index of the sample.
    index: usize,
    /// The batch, counted over the whole stream.
    batch: usize,
    /// The sample's place in its batch.
    place: usize,
    /// The number of samples in its batch.
    batch_len: usize,
}

/// What the workers of a stream share: the epochs to prepare and how.
struct Job {
    source: Arc<dyn SegmentationSource>,
    config: LoaderConfig,
    shard: Option<Shard>,
    first_epoch: u64,
    epochs: u64,
    samples_per_epoch: usize,
    batches_per_epoch: usize,
    /// The orders of the epochs in use (the last eight: the workers are at most a window of
    /// batches ahead of the consumer).
    orders: Mutex<Vec<(u64, Arc<Vec<usize>>)>>,
}

impl Job {
    fn total_samples(&self) -> usize {
        self.samples_per_epoch * self.epochs as usize
    }

    fn total_batches(&self) -> usize {
        self.batches_per_epoch * self.epochs as usize
    }

    /// The stream batch that sample `position` of the stream belongs to.
    fn batch_of(&self, position: usize) -> usize {
        let (e, q) = (
            position / self.samples_per_epoch,
            position % self.samples_per_epoch,
        );
        e * self.batches_per_epoch + q / self.config.batch_size
    }

    /// The first stream position of stream batch `batch`.
    fn first_position(&self, batch: usize) -> usize {
        let (e, b) = (
            batch / self.batches_per_epoch,
            batch % self.batches_per_epoch,
        );
        e * self.samples_per_epoch + b * self.config.batch_size
    }

    fn order(&self, epoch: u64) -> Arc<Vec<usize>> {
        let cached = |orders: &[(u64, Arc<Vec<usize>>)]| {
            orders
                .iter()
                .find(|(e, _)| *e == epoch)
                .map(|(_, order)| Arc::clone(order))
        };
        if let Some(order) = cached(&lock(&self.orders)) {
            return order;
        }
        // Shuffled outside the lock, so the other workers are not held up at an epoch's start.
        let order = Arc::new(epoch_order(
            self.source.len(),
            &self.config,
            self.shard,
            self.samples_per_epoch,
            epoch,
        ));
        let mut orders = lock(&self.orders);
        if let Some(order) = cached(&orders) {
            return order;
        }
        // Enough for a window spanning several tiny epochs.
        if orders.len() >= 8 {
            orders.remove(0);
        }
        orders.push((epoch, Arc::clone(&order)));
        order
    }

    fn slot(&self, position: usize) -> Slot {
        let b = self.config.batch_size;
        let (e, q) = (
            position / self.samples_per_epoch,
            position % self.samples_per_epoch,
        );
        let epoch = self.first_epoch + e as u64;
        let in_epoch = q / b;
        Slot {
            epoch,
            index: self.order(epoch)[q],
            batch: e * self.batches_per_epoch + in_epoch,
            place: q % b,
            batch_len: b.min(self.samples_per_epoch - in_epoch * b),
        }
    }

    fn sample_seed(&self, epoch: u64, index: usize) -> u64 {
        mix(&[self.config.seed, epoch, index as u64])
    }

    /// Loads and prepares one sample.
    fn prepare(&self, slot: &Slot) -> Result<PreparedSample> {
        let pre = &self.config.preprocess;
        let sample = self.source.load_for_target(slot.index, pre.size)?;
        let prepared = match &self.config.augment {
            Some(aug) => {
                let mut rng = SeededRng::new(self.sample_seed(slot.epoch, slot.index));
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
        Ok(prepared)
    }

    /// [`Self::prepare`], turning a panic into an error so the consumer never waits forever.
    fn prepare_guarded(&self, slot: &Slot) -> Result<PreparedSample> {
        catch_unwind(AssertUnwindSafe(|| self.prepare(slot))).unwrap_or_else(|panic| {
            let msg = panic_message(panic.as_ref());
            Err(DataError::Invalid {
                what: self.source.describe(),
                reason: format!(
                    "preparing sample {} of batch {} (epoch {}) panicked: {msg}",
                    self.source.name(slot.index),
                    slot.batch % self.batches_per_epoch,
                    slot.epoch
                ),
            })
        })
    }

    /// Stacks a batch's prepared samples (in batch order); the first failed sample's error
    /// stands for the batch.
    fn assemble(&self, samples: Vec<Result<PreparedSample>>) -> Result<SegmentationBatch> {
        let pre = &self.config.preprocess;
        let mut images = Vec::new();
        let mut masks = Vec::new();
        let mut names = Vec::with_capacity(samples.len());
        let mut size: Option<[usize; 2]> = None;
        let count = samples.len();
        for prepared in samples {
            let prepared = prepared?;
            let [h, w] = prepared.size;
            match size {
                None => {
                    size = Some(prepared.size);
                    images.reserve(count * 3 * h * w);
                    masks.reserve(count * h * w);
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

    /// Prepares stream batch `batch` on the calling thread.
    fn build_inline(&self, batch: usize) -> Result<SegmentationBatch> {
        let first = self.first_position(batch);
        let len = self.slot(first).batch_len;
        let samples = (first..first + len)
            .map(|p| self.prepare_guarded(&self.slot(p)))
            .collect();
        self.assemble(samples)
    }
}

/// Claim bookkeeping shared by the consumer and the workers.
struct Shared {
    state: Mutex<ClaimState>,
    wake: Condvar,
    /// Batches whose samples are partly prepared, by stream batch.
    partial: Mutex<BTreeMap<usize, PartialBatch>>,
}

struct ClaimState {
    /// The next stream position (sample) a worker may claim.
    next_claim: usize,
    /// The stream batch the consumer yields next.
    next_yield: usize,
    /// Set when the stream is dropped.
    stop: bool,
}

/// The samples of one batch prepared so far, each in its place.
struct PartialBatch {
    samples: Vec<Option<Result<PreparedSample>>>,
    filled: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked while holding it; the state stays valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Delivery = (usize, Result<SegmentationBatch>);

/// The batches of a run of epochs, prepared by worker threads that each claim the next sample
/// (so a batch's samples are prepared in parallel, and the epoch boundary does not stop them).
/// Dropping it stops its workers.
struct Stream {
    job: Arc<Job>,
    shared: Arc<Shared>,
    rx: Option<Receiver<Delivery>>,
    workers: Vec<JoinHandle<()>>,
    ready: BTreeMap<usize, Result<SegmentationBatch>>,
    /// The stream batch yielded next.
    next: usize,
}

impl Stream {
    fn start(job: Arc<Job>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(ClaimState {
                next_claim: 0,
                next_yield: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            partial: Mutex::new(BTreeMap::new()),
        });
        let mut stream = Self {
            job: Arc::clone(&job),
            shared: Arc::clone(&shared),
            rx: None,
            workers: Vec::new(),
            ready: BTreeMap::new(),
            next: 0,
        };
        let wanted = job.config.workers.min(job.total_samples());
        if wanted == 0 {
            return stream;
        }
        // A worker may claim a sample of at most this many batches past the one the consumer
        // waits for: the batches being prepared and the prefetched ones.
        let window =
            job.config.prefetch + job.config.workers.div_ceil(job.config.batch_size).max(1);
        let (tx, rx) = channel();
        for w in 0..wanted {
            let (job, shared, tx) = (Arc::clone(&job), Arc::clone(&shared), tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("seg-loader-{w}"))
                .spawn(move || worker(&job, &shared, &tx, window));
            match spawned {
                Ok(handle) => stream.workers.push(handle),
                // Fewer threads than asked for still work; none at all falls back to inline.
                Err(_) => break,
            }
        }
        if !stream.workers.is_empty() {
            stream.rx = Some(rx);
        }
        stream
    }

    /// The next batch of the stream; `None` after the last.
    fn next_batch(&mut self) -> Option<Result<SegmentationBatch>> {
        let total = self.job.total_batches();
        if self.next >= total {
            return None;
        }
        let b = self.next;
        let item = match &self.rx {
            None => self.job.build_inline(b),
            Some(rx) => loop {
                if let Some(item) = self.ready.remove(&b) {
                    break item;
                }
                match rx.recv() {
                    // A batch skipped by the consumer ([`Self::skip_to`]) is dropped.
                    Ok((i, _)) if i < b => {}
                    Ok((i, item)) => {
                        self.ready.insert(i, item);
                    }
                    Err(_) => {
                        // Every worker is gone without sending batch b (cannot happen unless a
                        // thread died outside the guarded section): report it, and so every
                        // later batch, rather than end the epochs silently.
                        self.advance_to(b + 1);
                        return Some(Err(DataError::Invalid {
                            what: self.job.source.describe(),
                            reason: format!(
                                "loader workers stopped before batch {} of epoch {}",
                                b % self.job.batches_per_epoch,
                                self.job.first_epoch + (b / self.job.batches_per_epoch) as u64
                            ),
                        }));
                    }
                }
            },
        };
        self.advance_to(b + 1);
        Some(item)
    }

    /// Moves the consumer to stream batch `batch` (skipping any before it that were not
    /// yielded) and lets the workers claim further.
    fn advance_to(&mut self, batch: usize) {
        self.next = self.next.max(batch);
        {
            let mut st = lock(&self.shared.state);
            st.next_yield = self.next;
            let first = self
                .job
                .first_position(self.next.min(self.job.total_batches()));
            st.next_claim = st.next_claim.max(first.min(self.job.total_samples()));
        }
        // Anything before `batch` is not wanted any more (only skipping leaves any): a worker
        // checks `next_yield`, set above, under the same lock before it adds a sample.
        self.ready.retain(|&i, _| i >= batch);
        lock(&self.shared.partial).retain(|&i, _| i >= batch);
        self.shared.wake.notify_all();
    }
}

fn worker(job: &Job, shared: &Shared, tx: &Sender<Delivery>, window: usize) {
    let total = job.total_samples();
    loop {
        let position = {
            let mut st = lock(&shared.state);
            loop {
                if st.stop || st.next_claim >= total {
                    return;
                }
                if job.batch_of(st.next_claim) < st.next_yield + window {
                    break;
                }
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.next_claim += 1;
            st.next_claim - 1
        };
        // A panic anywhere in here (a source's `name`, say) still delivers the batch, as an
        // error: the consumer must never wait for a batch no worker will finish.
        let handled = catch_unwind(AssertUnwindSafe(|| {
            handle_sample(job, shared, tx, position)
        }));
        let delivered = match handled {
            Ok(delivered) => delivered,
            Err(panic) => {
                let batch = job.batch_of(position);
                lock(&shared.partial).remove(&batch);
                let error = DataError::Invalid {
                    what: job.source.describe(),
                    reason: format!(
                        "preparing batch {} (epoch {}) panicked: {}",
                        batch % job.batches_per_epoch,
                        job.first_epoch + (batch / job.batches_per_epoch) as u64,
                        panic_message(panic.as_ref())
                    ),
                };
                tx.send((batch, Err(error))).is_ok()
            }
        };
        if !delivered {
            return;
        }
    }
}

/// Prepares the sample at stream `position`, puts it in its batch and, if that completes the
/// batch, stacks and sends it. Returns false when the consumer is gone.
fn handle_sample(job: &Job, shared: &Shared, tx: &Sender<Delivery>, position: usize) -> bool {
    let slot = job.slot(position);
    let result = job.prepare_guarded(&slot);
    let complete = {
        let mut partial = lock(&shared.partial);
        // A batch the consumer skipped meanwhile is not assembled. (Lock order: `partial`,
        // then `state`; nothing takes them the other way round.)
        if slot.batch < lock(&shared.state).next_yield {
            return true;
        }
        let entry = partial.entry(slot.batch).or_insert_with(|| PartialBatch {
            samples: (0..slot.batch_len).map(|_| None).collect(),
            filled: 0,
        });
        entry.samples[slot.place] = Some(result);
        entry.filled += 1;
        if entry.filled == slot.batch_len {
            partial.remove(&slot.batch)
        } else {
            None
        }
    };
    match complete {
        Some(batch) => {
            let samples = batch.samples.into_iter().flatten().collect();
            tx.send((slot.batch, job.assemble(samples))).is_ok()
        }
        None => true,
    }
}

/// The message of a caught panic (as the loader reports a worker's; for callers that run the
/// loader on threads of their own).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Drop for Stream {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        // Workers never block on the (unbounded) channel, so dropping the receiver is only
        // tidiness; each worker sees `stop` after at most the sample it is preparing.
        self.rx = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The batches of one epoch ([`SegmentationLoader::epoch`]). Dropping it stops its workers.
pub struct Epoch {
    stream: Stream,
}

impl Epoch {
    /// Number of batches this epoch yields in all.
    pub fn total_batches(&self) -> usize {
        self.stream.job.total_batches()
    }
}

impl Iterator for Epoch {
    type Item = Result<SegmentationBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.stream.next_batch()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.stream.job.total_batches() - self.stream.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch {}

/// A run of epochs prepared as one stream ([`SegmentationLoader::epochs`]): take each epoch's
/// batches with [`Self::next_epoch`]. Dropping it stops its workers.
pub struct EpochStream {
    stream: Stream,
    next_epoch: u64,
    end: u64,
}

impl EpochStream {
    /// The batches of the next epoch of the run, `None` after the last. Batches of the previous
    /// epoch that were not taken are skipped.
    pub fn next_epoch(&mut self) -> Option<EpochBatches<'_>> {
        if self.next_epoch >= self.end {
            return None;
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let per_epoch = self.stream.job.batches_per_epoch;
        let first = (epoch - self.stream.job.first_epoch) as usize * per_epoch;
        if self.stream.next < first {
            self.stream.advance_to(first);
        }
        Some(EpochBatches {
            stream: &mut self.stream,
            epoch,
            end: first + per_epoch,
        })
    }
}

/// The batches of one epoch of an [`EpochStream`].
pub struct EpochBatches<'a> {
    stream: &'a mut Stream,
    epoch: u64,
    /// The stream batch after this epoch's last.
    end: usize,
}

impl EpochBatches<'_> {
    /// Which epoch these batches are.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Iterator for EpochBatches<'_> {
    type Item = Result<SegmentationBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stream.next >= self.end {
            return None;
        }
        self.stream.next_batch()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end.saturating_sub(self.stream.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches<'_> {}

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
