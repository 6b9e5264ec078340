//! The HDF5 dataset format: round trips, splits, resizing, atomic writes, schema validation,
//! streaming through the loader, and h5py reading what we write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use dnn_data::{
    ConcatSource, DataError, HDF5_SCHEMA_VERSION, Hdf5Segmentation, Hdf5WriteOptions,
    LabeledImages, LoaderConfig, Mask, RgbImage, SEGMENTATION_SCHEMA, SegmentationLoader,
    SegmentationSample, SegmentationSource, Tensor, pet_class_names, read_classification_hdf5,
    write_classification_hdf5, write_segmentation_hdf5,
};

/// In-memory samples.
struct Memory {
    samples: Vec<SegmentationSample>,
    classes: Vec<String>,
    fail_at: Option<usize>,
}

fn sample(i: usize, w: usize, h: usize) -> SegmentationSample {
    SegmentationSample {
        name: format!("Abyssinian_{i}"),
        image: RgbImage {
            width: w,
            height: h,
            data: (0..w * h * 3)
                .map(|p| ((p * 13 + i * 7) % 256) as u8)
                .collect(),
        },
        mask: Mask {
            width: w,
            height: h,
            data: (0..w * h)
                .map(|p| ((p % w + p / w + i) % 3) as u8)
                .collect(),
        },
    }
}

impl Memory {
    fn uniform(n: usize, w: usize, h: usize) -> Self {
        Self {
            samples: (0..n).map(|i| sample(i, w, h)).collect(),
            classes: pet_class_names(),
            fail_at: None,
        }
    }
}

impl SegmentationSource for Memory {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn name(&self, index: usize) -> &str {
        &self.samples[index].name
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn load(&self, index: usize) -> dnn_data::Result<SegmentationSample> {
        if self.fail_at == Some(index) {
            return Err(DataError::Decode {
                path: PathBuf::from(format!("memory/{}.jpg", self.samples[index].name)),
                reason: "broken on purpose".into(),
            });
        }
        Ok(self.samples[index].clone())
    }
    fn describe(&self) -> String {
        format!("{} in-memory samples", self.samples.len())
    }
}

fn options() -> Hdf5WriteOptions {
    Hdf5WriteOptions {
        workers: 2,
        ..Hdf5WriteOptions::new("unit test")
    }
}

/// Names in `dir`, sorted (to see temporary files).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_with_splits_streams_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/pets.h5");
    let source = Memory::uniform(7, 9, 6);
    let splits = vec![0, 1, 0, 0, 1, 0, 1];
    let opts = options().with_splits(vec!["trainval".into(), "test".into()], splits.clone());
    let progress = Arc::new(std::sync::Mutex::new(Vec::new()));
    let p2 = Arc::clone(&progress);
    let opts = opts.with_progress(Arc::new(move |done, total| {
        p2.lock().unwrap().push((done, total))
    }));
    let summary = write_segmentation_hdf5(&source, &out, &opts).unwrap();
    assert_eq!(summary.samples, 7);
    assert_eq!(summary.size, [6, 9]);
    assert_eq!(summary.classes, 3);
    assert_eq!(
        summary.split_counts,
        [("trainval".to_string(), 4), ("test".to_string(), 3)]
    );
    assert!(summary.file_bytes > 0);
    assert_eq!(progress.lock().unwrap().last(), Some(&(7, 7)));
    assert_eq!(listing(&dir.path().join("sub")), ["pets.h5"]);

    let all = Hdf5Segmentation::open(&out).unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all.size(), [6, 9]);
    assert_eq!(all.class_names(), pet_class_names());
    assert_eq!(all.source_attr(), "unit test");
    assert!(
        all.created().ends_with('Z') && all.created().len() == 20,
        "{}",
        all.created()
    );
    for i in 0..7 {
        assert_eq!(all.name(i), format!("Abyssinian_{i}"));
        assert_eq!(all.load(i).unwrap(), source.samples[i]);
    }
    assert!(all.describe().contains("7 samples"));

    let test = Hdf5Segmentation::open_split(&out, "test").unwrap();
    assert_eq!(test.len(), 3);
    assert_eq!(
        (0..3).map(|i| test.name(i).to_string()).collect::<Vec<_>>(),
        ["Abyssinian_1", "Abyssinian_4", "Abyssinian_6"]
    );
    assert_eq!(test.load(2).unwrap(), source.samples[6]);
    assert_eq!(test.split_of(0), "test");
    assert_eq!(Hdf5Segmentation::open_split(&out, "all").unwrap().len(), 7);
    let err = Hdf5Segmentation::open_split(&out, "val")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pets.h5") && err.contains("\"val\"") && err.contains("\"trainval\""),
        "{err}"
    );
    assert!(test.load(3).is_err());

    // The reader is a SegmentationSource the loader streams from.
    let cfg = LoaderConfig {
        workers: 2,
        ..LoaderConfig::new(2, [4, 4])
    };
    let loader = SegmentationLoader::new(Arc::new(test), cfg).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].images.shape(), [2, 3, 4, 4]);
}

#[test]
fn sizes_must_agree_unless_resized() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mixed.h5");
    let mut source = Memory::uniform(4, 10, 8);
    source.samples[2] = sample(2, 12, 8);
    let err = write_segmentation_hdf5(&source, &out, &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("mixed.h5"), "{err}");
    assert!(
        err.contains("\"Abyssinian_2\"") && err.contains("12x8") && err.contains("10x8"),
        "{err}"
    );
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    let summary = write_segmentation_hdf5(&source, &out, &options().with_size(5)).unwrap();
    assert_eq!(summary.size, [5, 5]);
    let file = Hdf5Segmentation::open(&out).unwrap();
    let s = file.load(2).unwrap();
    assert_eq!(
        (s.image.width, s.image.height, s.mask.width, s.mask.height),
        (5, 5, 5, 5)
    );
    assert!(s.mask.data.iter().all(|&v| v < 3));
}

#[test]
fn a_failed_write_leaves_no_file_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pets.h5");
    let mut source = Memory::uniform(30, 6, 6);
    source.fail_at = Some(21);
    let err = write_segmentation_hdf5(&source, &out, &options())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("memory/Abyssinian_21.jpg") && err.contains("broken on purpose"),
        "{err}"
    );
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    // An existing file is only replaced by a complete one.
    source.fail_at = None;
    write_segmentation_hdf5(&source, &out, &options()).unwrap();
    let before = std::fs::read(&out).unwrap();
    source.fail_at = Some(3);
    assert!(write_segmentation_hdf5(&source, &out, &options()).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(listing(dir.path()), ["pets.h5"]);

    // Bad mask values and bad split indices are refused before anything lands.
    let mut bad = Memory::uniform(2, 4, 4);
    bad.samples[1].mask.data[5] = 7;
    let out2 = dir.path().join("bad.h5");
    let err = write_segmentation_hdf5(&bad, &out2, &options())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mask value 7") && err.contains("Abyssinian_1"),
        "{err}"
    );
    let opts = options().with_splits(vec!["a".into()], vec![0, 1]);
    let err = write_segmentation_hdf5(&Memory::uniform(2, 4, 4), &out2, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("split index 1"), "{err}");
    assert!(!out2.exists());
    let err = write_segmentation_hdf5(&Memory::uniform(0, 4, 4), &out2, &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no samples"), "{err}");
}

/// Writes a valid file, then lets `spoil` damage it with raw HDF5 calls and seals it again
/// (a file crafted with a valid checksum: the schema checks behind the checksum must hold).
fn spoiled(dir: &Path, name: &str, spoil: impl FnOnce(&hdf5::File)) -> PathBuf {
    let path = dir.join(name);
    write_segmentation_hdf5(&Memory::uniform(3, 5, 4), &path, &options()).unwrap();
    let file = hdf5::File::open_rw(&path).unwrap();
    spoil(&file);
    file.close().unwrap();
    dnn_layers::archive::integrity::seal(&path).unwrap();
    path
}

fn str_attr(file: &hdf5::File, name: &str, value: &str) {
    file.delete_attr(name).unwrap();
    let v: hdf5::types::VarLenUnicode = value.parse().unwrap();
    file.new_attr::<hdf5::types::VarLenUnicode>()
        .create(name)
        .unwrap()
        .write_scalar(&v)
        .unwrap();
}

#[test]
fn schema_violations_are_clear_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            spoiled(d, "schema.h5", |f| str_attr(f, "schema", "something-else")),
            "schema is \"something-else\"",
        ),
        (
            spoiled(d, "version.h5", |f| {
                f.delete_attr("schema_version").unwrap();
                f.new_attr::<i64>()
                    .create("schema_version")
                    .unwrap()
                    .write_scalar(&3i64)
                    .unwrap();
            }),
            "schema_version is 3",
        ),
        (
            spoiled(d, "nomasks.h5", |f| f.unlink("masks").unwrap()),
            "missing dataset `masks`",
        ),
        (
            spoiled(d, "maskshape.h5", |f| {
                f.unlink("masks").unwrap();
                f.new_dataset::<u8>()
                    .shape((3, 4, 6))
                    .create("masks")
                    .unwrap();
            }),
            "`masks` must be [N, H, W] = [3, 4, 5]",
        ),
        (
            spoiled(d, "dtype.h5", |f| {
                f.unlink("images").unwrap();
                f.new_dataset::<f32>()
                    .shape((3, 4, 5, 3))
                    .create("images")
                    .unwrap();
            }),
            "dataset `images` must be u8",
        ),
        (
            spoiled(d, "count.h5", |f| {
                f.unlink("split").unwrap();
                f.new_dataset::<u8>().shape(2).create("split").unwrap();
            }),
            "`names` has 3 entries but `split` has 2",
        ),
        (
            spoiled(d, "noschema.h5", |f| f.delete_attr("schema").unwrap()),
            "missing attribute `schema`",
        ),
    ];
    for (path, expected) in cases {
        let err = Hdf5Segmentation::open(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
    let not_h5 = d.join("plain.h5");
    std::fs::write(&not_h5, b"not hdf5 at all").unwrap();
    let err = Hdf5Segmentation::open(&not_h5).unwrap_err().to_string();
    assert!(
        err.contains("plain.h5") && err.contains("not a magma-dnn HDF5 file"),
        "{err}"
    );
    let err = Hdf5Segmentation::open(&d.join("absent.h5"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.h5"), "{err}");
}

#[test]
fn concat_source_records_splits_and_classification_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let concat = ConcatSource::new(vec![
        (
            "trainval".into(),
            Box::new(Memory::uniform(3, 4, 4)) as Box<dyn SegmentationSource>,
        ),
        ("test".into(), Box::new(Memory::uniform(2, 4, 4))),
    ])
    .unwrap();
    assert_eq!(concat.len(), 5);
    assert_eq!(concat.splits(), [0, 0, 0, 1, 1]);
    assert_eq!(concat.name(4), "Abyssinian_1");
    let out = dir.path().join("concat.h5");
    let opts = options().with_splits(concat.split_names(), concat.splits());
    write_segmentation_hdf5(&concat, &out, &opts).unwrap();
    assert_eq!(Hdf5Segmentation::open_split(&out, "test").unwrap().len(), 2);

    let mut other = Memory::uniform(1, 4, 4);
    other.classes = vec!["a".into(), "b".into(), "c".into()];
    let err = ConcatSource::new(vec![
        (
            "x".into(),
            Box::new(Memory::uniform(1, 4, 4)) as Box<dyn SegmentationSource>,
        ),
        ("y".into(), Box::new(other)),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("classes"), "{err}");

    // Classification: u8 images channels-last, u32 labels.
    let pixels: Vec<f32> = (0..4 * 3 * 2 * 2)
        .map(|i| (i % 256) as f32 / 255.0)
        .collect();
    let data = LabeledImages {
        images: Tensor::from_vec(pixels.clone(), &[4, 3, 2, 2]).unwrap(),
        labels: vec![0, 2, 1, 2],
        class_names: vec!["cat".into(), "dog".into(), "fox".into()],
    };
    let out = dir.path().join("classes.h5");
    let opts = options().with_splits(vec!["train".into(), "test".into()], vec![0, 0, 1, 0]);
    write_classification_hdf5(&data, None, &out, &opts).unwrap();
    let (all, names) = read_classification_hdf5(&out, "all").unwrap();
    assert_eq!(
        names,
        [
            "sample_000000",
            "sample_000001",
            "sample_000002",
            "sample_000003"
        ]
    );
    assert_eq!(all.labels, data.labels);
    assert_eq!(all.class_names, data.class_names);
    let back = all.images.to_vec().unwrap();
    assert!(back.iter().zip(&pixels).all(|(a, b)| (a - b).abs() < 1e-6));
    let (test, names) = read_classification_hdf5(&out, "test").unwrap();
    assert_eq!(
        (test.labels.clone(), names),
        (vec![1], vec!["sample_000002".to_string()])
    );
    // A segmentation reader refuses a classification file, naming the schema.
    let err = Hdf5Segmentation::open(&out).unwrap_err().to_string();
    assert!(err.contains("magma-dnn-classification"), "{err}");
}

/// Runs `script` with the system Python and h5py, passing `args`; `None` when h5py is missing
/// and CI is unset (the caller skips), a panic when it is missing on CI.
pub fn run_h5py(script: &str, args: &[&str]) -> Option<String> {
    let python = "/usr/bin/python3";
    let has_h5py = Command::new(python)
        .args(["-c", "import h5py"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_h5py {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} cannot import h5py and CI is set: install python3-h5py (cargo xtask test does)"
        );
        eprintln!(
            "skipping the h5py check: {python} cannot import h5py (apt-get install python3-h5py)"
        );
        return None;
    }
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "h5py check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks a segmentation file against the documented schema with h5py; prints `N H W`.
pub const H5PY_SEGMENTATION_CHECK: &str = r#"
import sys, hashlib, h5py, numpy as np
path, n, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
raw = open(path, "rb").read()
head = raw[:512].rstrip(b"\0").decode().split("\n")
assert head[0] == "magma-dnn integrity v1", head
assert head[1] == "sha256 " + hashlib.sha256(raw[512:]).hexdigest(), head
assert head[2] == "length %d" % (len(raw) - 512), head
with h5py.File(path, "r") as f:
    assert f.userblock_size == 512
    a = f.attrs
    assert a["schema"] == "magma-dnn-segmentation", a["schema"]
    assert int(a["schema_version"]) == 2
    classes = [str(c) for c in a["class_names"]]
    splits = [str(s) for s in a["split_names"]]
    assert list(a["size"]) == [h, w], a["size"]
    assert isinstance(a["source"], str) and isinstance(a["resized"], str)
    assert a["created"].endswith("Z") and "T" in a["created"]
    img, msk = f["images"], f["masks"]
    assert img.shape == (n, h, w, 3) and img.dtype == np.uint8, (img.shape, img.dtype)
    assert msk.shape == (n, h, w) and msk.dtype == np.uint8, (msk.shape, msk.dtype)
    assert img.chunks == (1, h, w, 3) and img.compression == "gzip" and img.compression_opts == 4
    assert msk.chunks == (1, h, w) and msk.compression == "gzip"
    names = [s.decode() if isinstance(s, bytes) else s for s in f["names"][:]]
    assert len(names) == n and len(set(names)) == n
    split = f["split"][:]
    assert split.dtype == np.uint8 and split.shape == (n,) and int(split.max()) < len(splits)
    m = msk[n - 1]
    assert int(m.max()) < len(classes)
    print(n, h, w, ",".join(classes), ",".join(splits), names[0], int(img[0].astype(np.int64).sum()), int(m.astype(np.int64).sum()))
"#;

#[test]
fn h5py_reads_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h5py.h5");
    let source = Memory::uniform(5, 7, 3);
    let opts = options().with_splits(vec!["trainval".into(), "test".into()], vec![0, 1, 0, 1, 1]);
    write_segmentation_hdf5(&source, &out, &opts).unwrap();
    let Some(stdout) = run_h5py(
        H5PY_SEGMENTATION_CHECK,
        &[out.to_str().unwrap(), "5", "3", "7"],
    ) else {
        return;
    };
    let image_sum: u64 = source.samples[0]
        .image
        .data
        .iter()
        .map(|&v| u64::from(v))
        .sum();
    let mask_sum: u64 = source.samples[4]
        .mask
        .data
        .iter()
        .map(|&v| u64::from(v))
        .sum();
    assert_eq!(
        stdout.trim(),
        format!("5 3 7 pet,background,border trainval,test Abyssinian_0 {image_sum} {mask_sum}")
    );

    // And the classification schema.
    let data = LabeledImages {
        images: Tensor::from_vec(vec![0.5; 2 * 2 * 2], &[2, 1, 2, 2]).unwrap(),
        labels: vec![1, 0],
        class_names: vec!["zero".into(), "one".into()],
    };
    let out = dir.path().join("cls.h5");
    write_classification_hdf5(&data, None, &out, &options()).unwrap();
    let script = r#"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["schema"] == "magma-dnn-classification"
    assert f["images"].shape == (2, 2, 2, 1) and f["images"].dtype == np.uint8
    assert f["labels"].dtype == np.uint32
    print(list(f["labels"][:]), int(f["images"][0, 0, 0, 0]), [str(c) for c in f.attrs["class_names"]])
"#;
    let stdout = run_h5py(script, &[out.to_str().unwrap()]).unwrap();
    assert_eq!(stdout.trim(), "[1, 0] 128 ['zero', 'one']");
    assert_eq!(SEGMENTATION_SCHEMA, "magma-dnn-segmentation");
    assert_eq!(HDF5_SCHEMA_VERSION, 2);
}
