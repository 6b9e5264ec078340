//! The streaming segmentation loader over an in-memory mock source: determinism across worker
//! counts, prefetch overlapping decoding with the training step, early drop, error propagation,
//! epoch streams running on across epochs, the samples of a batch shared by the workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dnn_data::{
    Augment, DataError, EpochStream, LoaderConfig, Mask, RgbImage, SegmentationBatch,
    SegmentationLoader, SegmentationSample, SegmentationSource, pet_class_names,
};

/// `n` samples of varying sizes whose pixels depend on the index; `load` may sleep, fail with a
/// decode error naming a file, or panic.
struct Mock {
    names: Vec<String>,
    classes: Vec<String>,
    delay: Duration,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
    /// `name` panics for this index too (so the loader's own panic handler meets a panic).
    name_panics_at: Option<usize>,
    loads: AtomicUsize,
    /// Loads running now, and the most that ever ran at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Mock {
    fn new(n: usize) -> Self {
        Self {
            names: (0..n).map(|i| format!("pet_{i}")).collect(),
            classes: pet_class_names(),
            delay: Duration::ZERO,
            fail_at: None,
            panic_at: None,
            name_panics_at: None,
            loads: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl SegmentationSource for Mock {
    fn len(&self) -> usize {
        self.names.len()
    }

    fn name(&self, index: usize) -> &str {
        assert!(
            self.name_panics_at != Some(index),
            "mock name panic at {index}"
        );
        &self.names[index]
    }

    fn class_names(&self) -> &[String] {
        &self.classes
    }

    fn load(&self, index: usize) -> dnn_data::Result<SegmentationSample> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.fail_at == Some(index) {
            return Err(DataError::Decode {
                path: PathBuf::from(format!("mock/images/{}.jpg", self.names[index])),
                reason: "truncated JPEG".into(),
            });
        }
        assert!(self.panic_at != Some(index), "mock panic at {index}");
        let (w, h) = (12 + index % 5, 10 + index % 3);
        let data = (0..w * h * 3)
            .map(|p| ((p * 7 + index * 31) % 256) as u8)
            .collect();
        let mask = (0..w * h).map(|p| ((p / w + index) % 3) as u8).collect();
        Ok(SegmentationSample {
            name: self.names[index].clone(),
            image: RgbImage {
                width: w,
                height: h,
                data,
            },
            mask: Mask {
                width: w,
                height: h,
                data: mask,
            },
        })
    }

    fn describe(&self) -> String {
        format!("mock source, {} samples", self.names.len())
    }
}

fn config(batch: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        workers,
        prefetch: 2,
        shuffle: true,
        seed: 42,
        augment: Some(Augment::standard()),
        ..LoaderConfig::new(batch, [8, 8])
    }
}

fn collect(loader: &SegmentationLoader, epoch: u64) -> Vec<SegmentationBatch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn batches_are_identical_whatever_the_worker_count() {
    let source: Arc<dyn SegmentationSource> = Arc::new(Mock::new(11));
    let reference = collect(
        &SegmentationLoader::new(Arc::clone(&source), config(3, 1)).unwrap(),
        0,
    );
    assert_eq!(reference.len(), 4);
    assert_eq!(reference[0].images.shape(), [3, 3, 8, 8]);
    assert_eq!(reference[0].masks.shape(), [3, 8, 8]);
    assert_eq!(reference[3].images.shape(), [2, 3, 8, 8]);
    // Every sample exactly once, shuffled.
    let mut names: Vec<String> = reference.iter().flat_map(|b| b.names.clone()).collect();
    let order = names.clone();
    names.sort();
    let mut expected: Vec<String> = (0..11).map(|i| format!("pet_{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_ne!(
        order,
        (0..11).map(|i| format!("pet_{i}")).collect::<Vec<_>>()
    );

    for workers in [0, 2, 4] {
        let loader = SegmentationLoader::new(Arc::clone(&source), config(3, workers)).unwrap();
        let batches = collect(&loader, 0);
        assert_eq!(batches.len(), reference.len());
        for (a, b) in batches.iter().zip(&reference) {
            assert_eq!(a.names, b.names, "workers {workers}");
            assert_eq!(
                a.images.to_vec().unwrap(),
                b.images.to_vec().unwrap(),
                "workers {workers}"
            );
            assert_eq!(
                a.masks.to_vec().unwrap(),
                b.masks.to_vec().unwrap(),
                "workers {workers}"
            );
        }
    }
    // Another epoch: another order and other augmentations, itself reproducible.
    let loader = SegmentationLoader::new(Arc::clone(&source), config(3, 4)).unwrap();
    let e1 = collect(&loader, 1);
    let e1_names: Vec<String> = e1.iter().flat_map(|b| b.names.clone()).collect();
    assert_ne!(e1_names, order);
    let again = collect(&loader, 1);
    assert_eq!(
        e1[0].images.to_vec().unwrap(),
        again[0].images.to_vec().unwrap()
    );
    // Mask values stay class indices or the pad label.
    for b in &e1 {
        assert!(
            b.masks
                .to_vec()
                .unwrap()
                .iter()
                .all(|&v| v < 3.0 || v == 255.0)
        );
    }
}

#[test]
fn batch_counts_drop_last_and_config_errors() {
    let source: Arc<dyn SegmentationSource> = Arc::new(Mock::new(10));
    let mut cfg = config(4, 2);
    cfg.shuffle = false;
    cfg.augment = None;
    let loader = SegmentationLoader::new(Arc::clone(&source), cfg.clone()).unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    let sizes: Vec<usize> = loader.epoch(0).map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(loader.epoch(0).len(), 3);
    let first = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(first.names, ["pet_0", "pet_1", "pet_2", "pet_3"]);

    cfg.drop_last = true;
    let loader = SegmentationLoader::new(Arc::clone(&source), cfg.clone()).unwrap();
    assert_eq!(loader.batches_per_epoch(), 2);
    assert_eq!(loader.epoch(3).count(), 2);

    let mut zero = cfg.clone();
    zero.batch_size = 0;
    let err = SegmentationLoader::new(Arc::clone(&source), zero).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
    assert!(err.to_string().contains("mock source"), "{err}");
    let err = SegmentationLoader::new(Arc::new(Mock::new(0)), cfg.clone()).unwrap_err();
    assert!(err.to_string().contains("no samples"), "{err}");
    let mut big = cfg;
    big.batch_size = 11;
    let err = SegmentationLoader::new(source, big).unwrap_err();
    assert!(err.to_string().contains("drop_last"), "{err}");
}

#[test]
fn prefetch_overlaps_decoding_with_the_training_step() {
    // Decoding a batch takes 2 × 20 ms; a training step takes 50 ms. Run strictly one after
    // the other that is 8 × 90 = 720 ms; with prefetching it is about 40 + 8 × 50 = 440 ms.
    let run = |workers: usize| {
        let source: Arc<dyn SegmentationSource> =
            Arc::new(Mock::new(16).slow(Duration::from_millis(20)));
        let mut cfg = config(2, workers);
        cfg.augment = None;
        let loader = SegmentationLoader::new(source, cfg).unwrap();
        let t = Instant::now();
        let mut n = 0;
        for batch in loader.epoch(0) {
            batch.unwrap();
            std::thread::sleep(Duration::from_millis(50));
            n += 1;
        }
        assert_eq!(n, 8);
        t.elapsed()
    };
    let inline = run(0);
    let prefetched = run(1);
    assert!(
        inline >= Duration::from_millis(700),
        "inline took {inline:?}"
    );
    assert!(
        prefetched < Duration::from_millis(620)
            && prefetched.as_secs_f64() < 0.86 * inline.as_secs_f64(),
        "prefetching took {prefetched:?}, inline {inline:?}"
    );
}

#[test]
fn dropping_the_iterator_early_stops_the_workers() {
    let mock = Arc::new(Mock::new(400).slow(Duration::from_millis(2)));
    let source: Arc<dyn SegmentationSource> = mock.clone();
    let mut cfg = config(4, 4);
    cfg.prefetch = 3;
    let loader = SegmentationLoader::new(source, cfg).unwrap();
    let mut epoch = loader.epoch(0);
    epoch.next().unwrap().unwrap();
    epoch.next().unwrap().unwrap();
    let t = Instant::now();
    drop(epoch);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t.elapsed()
    );
    let after_drop = mock.loads.load(Ordering::SeqCst);
    // At most the 2 consumed batches plus the window (prefetch 3 + 4 workers) were loaded.
    assert!(after_drop <= (2 + 3 + 4) * 4, "{after_drop} loads");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        mock.loads.load(Ordering::SeqCst),
        after_drop,
        "workers kept loading"
    );

    // Dropping a fresh, never-polled epoch returns too.
    let t = Instant::now();
    drop(loader.epoch(1));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_failing_sample_is_yielded_as_an_error_naming_the_file() {
    let mut mock = Mock::new(9);
    mock.fail_at = Some(5);
    let source: Arc<dyn SegmentationSource> = Arc::new(mock);
    for workers in [0, 3] {
        let mut cfg = config(2, workers);
        cfg.shuffle = false;
        let loader = SegmentationLoader::new(Arc::clone(&source), cfg).unwrap();
        let results: Vec<_> = loader.epoch(0).collect();
        assert_eq!(results.len(), 5);
        for (b, r) in results.iter().enumerate() {
            if b == 2 {
                let msg = r.as_ref().unwrap_err().to_string();
                assert!(msg.contains("mock/images/pet_5.jpg"), "{msg}");
                assert!(msg.contains("truncated JPEG"), "{msg}");
            } else {
                assert!(r.is_ok(), "batch {b}: {r:?}");
            }
        }
    }

    let mut mock = Mock::new(6);
    mock.panic_at = Some(3);
    let source: Arc<dyn SegmentationSource> = Arc::new(mock);
    let mut cfg = config(2, 2);
    cfg.shuffle = false;
    let loader = SegmentationLoader::new(source, cfg).unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 3);
    let msg = results[1].as_ref().unwrap_err().to_string();
    assert!(msg.contains("panicked") && msg.contains("pet_3"), "{msg}");
    assert!(results[2].is_ok());
}

fn same_batches(a: &[SegmentationBatch], b: &[SegmentationBatch], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.names, y.names, "{what}");
        assert_eq!(
            x.images.to_vec().unwrap(),
            y.images.to_vec().unwrap(),
            "{what}"
        );
        assert_eq!(
            x.masks.to_vec().unwrap(),
            y.masks.to_vec().unwrap(),
            "{what}"
        );
    }
}

fn take_epoch(stream: &mut EpochStream, expected_epoch: u64) -> Vec<SegmentationBatch> {
    let batches = stream.next_epoch().expect("an epoch is left");
    assert_eq!(batches.epoch(), expected_epoch);
    batches.map(|b| b.unwrap()).collect()
}

#[test]
fn an_epoch_stream_yields_each_epoch_as_epoch_does() {
    let source: Arc<dyn SegmentationSource> = Arc::new(Mock::new(11));
    for workers in [0, 1, 3, 8] {
        let loader = SegmentationLoader::new(Arc::clone(&source), config(3, workers)).unwrap();
        let mut stream = loader.epochs(2..5);
        for epoch in 2..5 {
            let batches = stream.next_epoch().unwrap();
            assert_eq!(batches.len(), 4);
            let batches: Vec<_> = batches.map(|b| b.unwrap()).collect();
            same_batches(
                &batches,
                &collect(&loader, epoch),
                &format!("workers {workers}, epoch {epoch}"),
            );
        }
        assert!(stream.next_epoch().is_none());

        // An epoch left half-taken is skipped; the next one is whole and unchanged.
        let mut stream = loader.epochs(0..3);
        let first = stream.next_epoch().unwrap().next().unwrap().unwrap();
        same_batches(&[first], &collect(&loader, 0)[..1], "first batch");
        same_batches(
            &take_epoch(&mut stream, 1),
            &collect(&loader, 1),
            &format!("workers {workers}, after a skip"),
        );
        // Not taking an epoch at all skips it too.
        assert!(stream.next_epoch().is_some());
        assert!(stream.next_epoch().is_none());
    }
    // An empty range has no epoch.
    let loader = SegmentationLoader::new(source, config(3, 2)).unwrap();
    assert!(loader.epochs(4..4).next_epoch().is_none());
}

#[test]
fn the_next_epoch_is_prepared_while_the_consumer_is_between_epochs() {
    let mock = Arc::new(Mock::new(8).slow(Duration::from_millis(5)));
    let source: Arc<dyn SegmentationSource> = mock.clone();
    let mut cfg = config(4, 2);
    cfg.prefetch = 1;
    let loader = SegmentationLoader::new(source, cfg).unwrap();
    let mut stream = loader.epochs(0..2);
    assert_eq!(take_epoch(&mut stream, 0).len(), 2);
    // Between epochs (evaluating, say): the workers load the next epoch's first batches.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.loads.load(Ordering::SeqCst) < 8 + 4 {
        assert!(
            Instant::now() < deadline,
            "only {} samples loaded between epochs",
            mock.loads.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    same_batches(&take_epoch(&mut stream, 1), &collect(&loader, 1), "epoch 1");
}

#[test]
fn the_samples_of_one_batch_are_prepared_in_parallel() {
    let mock = Arc::new(Mock::new(8).slow(Duration::from_millis(30)));
    let source: Arc<dyn SegmentationSource> = mock.clone();
    let mut cfg = config(8, 4);
    cfg.prefetch = 0;
    let loader = SegmentationLoader::new(source, cfg).unwrap();
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 1);
    // One batch, four workers: they share its eight samples.
    assert!(
        mock.max_in_flight.load(Ordering::SeqCst) >= 2,
        "at most {} samples loaded at once",
        mock.max_in_flight.load(Ordering::SeqCst)
    );
    let reference = collect(
        &SegmentationLoader::new(Arc::clone(loader.source()), config(8, 0)).unwrap(),
        0,
    );
    same_batches(&batches, &reference, "four workers against inline");
}

#[test]
fn a_panic_outside_the_sample_guard_still_ends_its_batch_with_an_error() {
    // The sample panics, and so does the source's `name`, which the loader calls to describe
    // the panic: the batch must still arrive (as an error), not leave the consumer waiting.
    let mut mock = Mock::new(6);
    mock.panic_at = Some(3);
    mock.name_panics_at = Some(3);
    let source: Arc<dyn SegmentationSource> = Arc::new(mock);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cfg = config(2, 2);
        cfg.shuffle = false;
        let loader = SegmentationLoader::new(source, cfg).unwrap();
        let mut stream = loader.epochs(0..2);
        let mut outcomes = Vec::new();
        while let Some(batches) = stream.next_epoch() {
            outcomes.push(batches.map(|b| b.is_ok()).collect::<Vec<_>>());
        }
        let _ = tx.send(outcomes);
    });
    let outcomes = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the loader hung after a panic outside its sample guard");
    assert_eq!(outcomes, [[true, false, true], [true, false, true]]);
}
