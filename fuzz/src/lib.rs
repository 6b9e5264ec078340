//! What the fuzz targets share: each hands the fuzzer's bytes to one of magma-dnn's readers, the
//! way a user's file would reach it, and lets the reader accept or refuse them. A panic, an
//! abort, a hang or an allocation beyond libFuzzer's `-rss_limit_mb` is a bug; an `Err` is the
//! reader doing its job.
//!
//! The same functions run as plain tests over the committed seeds (`fuzz/seeds/<target>/`) in
//! `cargo xtask fuzz-smoke --corpus-only`, so CI needs no nightly toolchain.

use std::path::{Path, PathBuf};

/// A scratch folder of this thread (one per process and thread: libFuzzer's `-fork`/`-jobs`
/// workers and the smoke run's tests, which the test harness runs on parallel threads, never
/// share files; a shared `sealed.h5` once let one test truncate what another was sealing).
/// Removed when the thread ends.
pub fn scratch() -> PathBuf {
    SCRATCH.with(|s| s.0.clone())
}

static NEXT_THREAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    static SCRATCH: ScratchDir = ScratchDir::create();
}

/// The folder behind [`scratch`], deleted with its thread.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> Self {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let thread = NEXT_THREAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("magma-dnn-fuzz-{}-{thread}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the scratch folder");
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `bytes` to `name` in the scratch folder and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("writing the fuzz input");
    path
}

/// IDX images and labels, raw or gzip (the reader detects gzip by content).
pub fn idx(data: &[u8]) {
    let path = file("input.idx", data);
    if let Ok(images) = dnn_data::read_idx_images(&path) {
        assert_eq!(
            images.pixels.len(),
            images.count * images.rows * images.cols
        );
    }
    let _ = dnn_data::read_idx_labels(&path);
}

/// CIFAR-10 and CIFAR-100 test splits from one file (first byte: whether a names file exists).
pub fn cifar(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let dir = scratch().join("cifar");
    std::fs::create_dir_all(&dir).expect("cifar folder");
    for name in ["test_batch.bin", "test.bin"] {
        std::fs::write(dir.join(name), body).expect("cifar file");
    }
    for names in [
        "batches.meta.txt",
        "fine_label_names.txt",
        "coarse_label_names.txt",
    ] {
        let path = dir.join(names);
        if flags & 1 == 1 {
            // Ten lines: a valid CIFAR-10 names file; wrong for CIFAR-100.
            std::fs::write(&path, "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n").expect("names");
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    let check = |r: dnn_data::Result<dnn_data::LabeledImages>, classes: u32| {
        if let Ok(set) = r {
            assert!(set.labels.iter().all(|&l| l < classes));
            assert_eq!(set.images.shape()[1..], [3, 32, 32]);
        }
    };
    check(dnn_data::load_cifar10(&dir, dnn_data::Split::Test), 10);
    check(
        dnn_data::load_cifar100(&dir, dnn_data::Split::Test, dnn_data::Cifar100Labels::Fine),
        100,
    );
    check(
        dnn_data::load_cifar100(
            &dir,
            dnn_data::Split::Test,
            dnn_data::Cifar100Labels::Coarse,
        ),
        20,
    );
}

/// A mask or trimap PNG: decoded to class indices, then checked as an Oxford-IIIT Pet trimap
/// (values 1..=3) would be.
pub fn mask(data: &[u8]) {
    let path = Path::new("fuzz/trimap.png");
    if let Ok(mask) = dnn_data::image_io::decode_mask(data, path) {
        assert_eq!(mask.data.len(), mask.width * mask.height);
        let _trimap_ok = mask.data.iter().all(|v| (1..=3).contains(v));
    }
}

/// An HDF5 segmentation or classification data set: opened (checksum, schema), then every sample
/// of a small file read.
pub fn hdf5_dataset(data: &[u8]) {
    use dnn_data::SegmentationSource;
    let path = file("input.h5", data);
    if let Ok(set) = dnn_data::Hdf5Segmentation::open(&path) {
        for i in 0..set.len().min(64) {
            if let Ok(s) = set.load(i) {
                assert_eq!(s.image.data.len(), s.image.width * s.image.height * 3);
                assert!(
                    s.mask
                        .data
                        .iter()
                        .all(|&v| usize::from(v) < set.class_names().len())
                );
            }
        }
    }
    let _ = dnn_data::read_classification_hdf5(&path, "all");
}

/// A training checkpoint, then the model built from it.
pub fn checkpoint(data: &[u8]) {
    let path = file("input-checkpoint.h5", data);
    if let Ok(ck) = unet::checkpoint::load(&path) {
        // Refuse absurd architectures before allocating them: the loader validated the
        // integrity header, so only a deliberately crafted file gets here.
        let u = &ck.meta.unet;
        if u.base <= 64 && u.depth <= 6 && u.classes <= 256 && u.in_channels <= 16 {
            let _ = ck.build_model(&path);
        }
    }
}

/// Whether `MAGMA_FUZZ_MODE=raw` asks the HDF5 targets to take every input as a whole file.
pub fn raw_only() -> bool {
    static RAW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RAW.get_or_init(|| std::env::var("MAGMA_FUZZ_MODE").is_ok_and(|m| m == "raw"))
}

/// `data` with a valid integrity header in front: the bytes behind the checksum (HDF5 itself and
/// the schema checks), as a file crafted on purpose would present them.
pub fn sealed(data: &[u8]) -> Vec<u8> {
    let path = file("sealed.h5", &[vec![0u8; 512], data.to_vec()].concat());
    dnn_layers::archive::integrity::seal(&path).expect("sealing");
    std::fs::read(&path).expect("reading back")
}
