//! The fuzz targets of `fuzz/` (cargo-fuzz, nightly) as plain tests on the stable toolchain:
//! every committed seed (`fuzz/seeds/<target>/`) and every input that once crashed a target
//! (`fuzz/regressions/<target>/`) goes through the same function the fuzzer calls. A panic here
//! is a reader that crashes on bad input. This is the fuzz smoke run of CI, which has no nightly
//! toolchain; `cargo xtask fuzz-smoke` also fuzzes for a few seconds per target where cargo-fuzz
//! is installed.

#[path = "../../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = Path::new(ROOT).join(kind).join(target);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

/// Runs every input of `target` through `run`; returns how many there were.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no seeds for {target} in {ROOT}/seeds/{target}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target} crashed on {}", f.display());
    }
    println!("fuzz seeds: {target}: {} inputs, no crash", files.len());
    files.len()
}

/// The mode byte of the HDF5 targets: odd = the file as it is, even = behind a valid checksum.
fn both_modes(run: fn(&[u8])) -> impl Fn(&[u8]) {
    move |data: &[u8]| match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 0 && !targets::raw_only() => run(&targets::sealed(rest)),
        Some((_, rest)) => run(rest),
        None => {}
    }
}

#[test]
fn idx_seeds() {
    replay("idx", targets::idx);
}

#[test]
fn cifar_seeds() {
    replay("cifar", targets::cifar);
}

#[test]
fn mask_seeds() {
    replay("mask", targets::mask);
}

fn hdf5_dataset_both(data: &[u8]) {
    both_modes(targets::hdf5_dataset)(data)
}

fn checkpoint_both(data: &[u8]) {
    both_modes(targets::checkpoint)(data)
}

#[test]
fn hdf5_dataset_seeds() {
    replay("hdf5_dataset", hdf5_dataset_both);
}

#[test]
fn checkpoint_seeds() {
    replay("checkpoint", checkpoint_both);
}

/// The seeds are real files of our writers: a data set must open, a checkpoint must load, in
/// both modes (so the fuzzer starts from inputs that reach deep into the readers).
#[test]
fn hdf5_seeds_are_valid_files() {
    use dnn_data::SegmentationSource;
    for f in inputs("hdf5_dataset")
        .iter()
        .filter(|p| p.to_string_lossy().contains("valid"))
    {
        let bytes = std::fs::read(f).unwrap();
        let whole = if bytes[0] & 1 == 0 {
            targets::sealed(&bytes[1..])
        } else {
            bytes[1..].to_vec()
        };
        let path = targets::file("seed-check.h5", &whole);
        if f.to_string_lossy().contains("classification") {
            let (set, _) = dnn_data::read_classification_hdf5(&path, "all").unwrap();
            assert_eq!(set.len(), 2);
        } else {
            let set = dnn_data::Hdf5Segmentation::open(&path).unwrap();
            assert!(set.len() > 0 && set.load(0).is_ok(), "{}", f.display());
        }
    }
    for f in inputs("checkpoint")
        .iter()
        .filter(|p| p.to_string_lossy().contains("valid"))
    {
        let bytes = std::fs::read(f).unwrap();
        let whole = if bytes[0] & 1 == 0 {
            targets::sealed(&bytes[1..])
        } else {
            bytes[1..].to_vec()
        };
        let path = targets::file("seed-check-ck.h5", &whole);
        unet::checkpoint::load(&path).unwrap();
    }
}

/// Regenerates the HDF5 and checkpoint seeds: `cargo test -p xtask-tasks --test fuzz_seeds --
/// --ignored write_hdf5_seeds`.
#[test]
#[ignore]
fn write_hdf5_seeds() {
    use dnn_data::{Hdf5WriteOptions, Mask, RgbImage, SegmentationSample, SegmentationSource};
    struct Two(Vec<SegmentationSample>, Vec<String>);
    impl SegmentationSource for Two {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn name(&self, i: usize) -> &str {
            &self.0[i].name
        }
        fn class_names(&self) -> &[String] {
            &self.1
        }
        fn load(&self, i: usize) -> dnn_data::Result<SegmentationSample> {
            Ok(self.0[i].clone())
        }
        fn describe(&self) -> String {
            "two samples".into()
        }
    }
    let samples = (0..2)
        .map(|i| SegmentationSample {
            name: format!("s{i}"),
            image: RgbImage {
                width: 4,
                height: 3,
                data: (0..36).map(|v| (v * 7 + i) as u8).collect(),
            },
            mask: Mask {
                width: 4,
                height: 3,
                data: (0..12).map(|v| ((v + i) % 3) as u8).collect(),
            },
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let h5 = tmp.path().join("d.h5");
    let options = Hdf5WriteOptions::new("seed")
        .with_splits(vec!["trainval".into(), "test".into()], vec![0, 1]);
    let source = Two(samples, dnn_data::pet_class_names());
    dnn_data::write_segmentation_hdf5(&source, &h5, &options).unwrap();
    let cls = tmp.path().join("c.h5");
    let data = dnn_data::LabeledImages {
        images: magma_tensor::Tensor::from_vec(vec![0.25; 2 * 4], &[2, 1, 2, 2]).unwrap(),
        labels: vec![1, 0],
        class_names: vec!["a".into(), "b".into()],
    };
    dnn_data::write_classification_hdf5(&data, None, &cls, &Hdf5WriteOptions::new("seed")).unwrap();

    let model_cfg = unet::UNetConfig::new(3, 3).with_base(1).with_depth(1);
    let model = unet::UNet::new(&model_cfg, &mut magma_tensor::SeededRng::new(0)).unwrap();
    let optimizer = dnn_layers::optim::Adam::new(1e-3);
    let meta = unet::checkpoint::CheckpointMeta {
        unet: model_cfg,
        train: unet::train::TrainConfig {
            data: "d.h5".into(),
            split: "trainval".into(),
            val_data: None,
            val_split: "test".into(),
            size: 8,
            loss: unet::train::LossKind::Ce,
            epochs: 1,
            batch: 1,
            lr: 1e-3,
            seed: 0,
            augment: unet::train::AugmentKind::None,
            workers: 1,
            skip_nonfinite: 0,
        },
        epoch: 0,
        best_miou: 0.0,
        history: Vec::new(),
        class_names: dnn_data::pet_class_names(),
    };
    let ck = tmp.path().join("ck.h5");
    unet::checkpoint::save(&ck, &model, &optimizer, &meta).unwrap();

    for (target, file, name) in [
        ("hdf5_dataset", &h5, "segmentation"),
        ("hdf5_dataset", &cls, "classification"),
        ("checkpoint", &ck, "unet"),
    ] {
        let bytes = std::fs::read(file).unwrap();
        let dir = Path::new(ROOT).join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        // Behind a valid checksum (reaches HDF5 and the schema checks) and as a whole file.
        std::fs::write(
            dir.join(format!("valid-{name}-sealed")),
            [&[0u8][..], &bytes[512..]].concat(),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("valid-{name}-whole")),
            [&[1u8][..], &bytes[..]].concat(),
        )
        .unwrap();
        // A truncated copy.
        std::fs::write(
            dir.join(format!("{name}-truncated")),
            [&[1u8][..], &bytes[..bytes.len() / 2]].concat(),
        )
        .unwrap();
    }
}
