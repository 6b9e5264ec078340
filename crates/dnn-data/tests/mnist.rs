//! MNIST / Fashion-MNIST loading: synthetic directories (exact values, every error), then the
//! real MNIST test set and Debian's Fashion-MNIST when they are present.

mod common;

use std::path::{Path, PathBuf};

use common::{bytes, gzip, histogram, idx_images, idx_labels, scaled, write};
use dnn_data::{
    DataError, FASHION_MNIST_CLASS_NAMES, Split, load_fashion_mnist, load_mnist, read_idx_labels,
};

/// Writes a t10k (or train) pair of `n` 28x28 images; gzipped or not per file.
fn write_split(dir: &Path, prefix: &str, pixels: &[u8], labels: &[u8], gz: [bool; 2]) {
    let n = labels.len() as u32;
    let images = idx_images(n, 28, 28, pixels);
    let labels = idx_labels(labels);
    let (iname, lname) = (
        format!("{prefix}-images-idx3-ubyte"),
        format!("{prefix}-labels-idx1-ubyte"),
    );
    if gz[0] {
        write(dir, &format!("{iname}.gz"), &gzip(&images));
    } else {
        write(dir, &iname, &images);
    }
    if gz[1] {
        write(dir, &format!("{lname}.gz"), &gzip(&labels));
    } else {
        write(dir, &lname, &labels);
    }
}

#[test]
fn synthetic_mnist_loads_exactly_in_every_compression_mix() {
    let labels = [7u8, 2, 1, 0, 9];
    let pixels = bytes(5 * 784, 11);
    for gz in [[false, false], [true, true], [true, false], [false, true]] {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "t10k", &pixels, &labels, gz);
        let set = load_mnist(dir.path(), Split::Test).unwrap();
        assert_eq!(set.len(), 5);
        assert_eq!(set.images.shape(), &[5, 1, 28, 28]);
        assert_eq!(set.image_shape(), [1, 28, 28]);
        assert_eq!(set.labels, vec![7, 2, 1, 0, 9]);
        assert_eq!(set.classes(), 10);
        assert_eq!(set.class_names[3], "3");
        let want: Vec<f32> = pixels.iter().map(|&b| scaled(b)).collect();
        assert_eq!(set.images.to_vec().unwrap(), want, "{gz:?}");
        // The extremes map to the ends of [0, 1] exactly.
        assert_eq!(set.images.get(&[0, 0, 0, 0]).unwrap(), 0.0);
        assert_eq!(set.images.get(&[4, 0, 27, 27]).unwrap(), 1.0);
        // The other split is not there.
        assert!(load_mnist(dir.path(), Split::Train).is_err());
    }
}

#[test]
fn raw_file_is_preferred_when_both_forms_exist() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &bytes(784, 1), &[1], [false, false]);
    // A different, valid .gz alongside: the raw file must win.
    write(
        dir.path(),
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx_labels(&[2])),
    );
    let set = load_mnist(dir.path(), Split::Train).unwrap();
    assert_eq!(set.labels, vec![1]);
}

#[test]
fn fashion_mnist_uses_its_class_names() {
    let dir = tempfile::tempdir().unwrap();
    write_split(
        dir.path(),
        "t10k",
        &bytes(2 * 784, 3),
        &[0, 9],
        [true, true],
    );
    let set = load_fashion_mnist(dir.path(), Split::Test).unwrap();
    assert_eq!(set.class_names[0], "T-shirt/top");
    assert_eq!(set.class_names[9], "Ankle boot");
    assert_eq!(set.class_names, FASHION_MNIST_CLASS_NAMES.map(String::from));
}

#[test]
fn count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "t10k-images-idx3-ubyte",
        &idx_images(3, 28, 28, &bytes(3 * 784, 4)),
    );
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gzip(&idx_labels(&[1, 2])),
    );
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    match &err {
        DataError::CountMismatch {
            images_path,
            labels_path,
            images,
            labels,
        } => {
            assert!(images_path.ends_with("t10k-images-idx3-ubyte"));
            assert!(labels_path.ends_with("t10k-labels-idx1-ubyte.gz"));
            assert_eq!((*images, *labels), (3, 2));
        }
        other => panic!("expected CountMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("3 images") && msg.contains("2 labels"),
        "{msg}"
    );
}

#[test]
fn label_out_of_range_is_bad_label() {
    let dir = tempfile::tempdir().unwrap();
    write_split(
        dir.path(),
        "t10k",
        &bytes(4 * 784, 5),
        &[1, 9, 10, 3],
        [false, true],
    );
    match load_mnist(dir.path(), Split::Test).unwrap_err() {
        DataError::BadLabel {
            path,
            index,
            value,
            classes,
        } => {
            assert!(path.ends_with("t10k-labels-idx1-ubyte.gz"));
            assert_eq!((index, value, classes), (2, 10, 10));
        }
        other => panic!("expected BadLabel, got {other:?}"),
    }
}

#[test]
fn missing_file_names_the_path_and_the_gz_alternative() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "t10k-images-idx3-ubyte.gz",
        &gzip(&idx_images(1, 28, 28, &bytes(784, 6))),
    );
    let err = load_mnist(dir.path(), Split::Test).unwrap_err();
    match &err {
        DataError::Io { path, source } => {
            assert_eq!(path, &dir.path().join("t10k-labels-idx1-ubyte"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
}

/// `shared/data/mnist` beside the workspace.
fn shared_mnist() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/mnist"
    ))
}

fn exists(dir: &Path, name: &str) -> bool {
    dir.join(name).is_file() || dir.join(format!("{name}.gz")).is_file()
}

#[test]
fn real_mnist_test_set() {
    let dir = shared_mnist();
    if !dir.is_dir() {
        eprintln!(
            "skipped: the MNIST directory {} does not exist (real-data check only)",
            dir.display()
        );
        return;
    }
    let set = load_mnist(&dir, Split::Test).unwrap();
    assert_eq!(set.len(), 10_000);
    assert_eq!(set.images.shape(), &[10_000, 1, 28, 28]);
    // The label count agrees with the IDX label file itself.
    let labels_path = if dir.join("t10k-labels-idx1-ubyte").is_file() {
        dir.join("t10k-labels-idx1-ubyte")
    } else {
        dir.join("t10k-labels-idx1-ubyte.gz")
    };
    assert_eq!(read_idx_labels(&labels_path).unwrap().len(), set.len());
    assert!(set.labels.iter().all(|&l| l < 10));
    let hist = histogram(&set.labels, 10);
    assert_eq!(hist.iter().sum::<usize>(), 10_000);
    // The published class counts and first labels of the MNIST test set.
    assert_eq!(
        hist,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(&set.labels[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    let px = set.images.host_data().unwrap();
    let mean = px.iter().map(|&v| f64::from(v)).sum::<f64>() / px.len() as f64;
    assert!((mean - 0.1325).abs() < 0.001, "mean pixel {mean}");
    assert!(px.iter().all(|&v| (0.0..=1.0).contains(&v)));

    // The training split: 60,000 when its files are there, else a NotFound naming the file.
    if exists(&dir, "train-images-idx3-ubyte") && exists(&dir, "train-labels-idx1-ubyte") {
        let train = load_mnist(&dir, Split::Train).unwrap();
        assert_eq!(train.len(), 60_000);
    } else {
        match load_mnist(&dir, Split::Train).unwrap_err() {
            DataError::Io { path, source } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                assert!(path.starts_with(&dir), "{}", path.display());
            }
            other => panic!("expected Io NotFound, got {other:?}"),
        }
    }
}

#[test]
fn debian_fashion_mnist() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} does not exist (install Debian's fashion-mnist package to run this check)",
            dir.display()
        );
        return;
    }
    let test = load_fashion_mnist(dir, Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.image_shape(), [1, 28, 28]);
    assert_eq!(test.images.shape(), &[10_000, 1, 28, 28]);
    // Fashion-MNIST is balanced: 1,000 test and 6,000 training images per class.
    assert_eq!(histogram(&test.labels, 10), vec![1000; 10]);
    if exists(dir, "train-images-idx3-ubyte") {
        let train = load_fashion_mnist(dir, Split::Train).unwrap();
        assert_eq!(train.images.shape(), &[60_000, 1, 28, 28]);
        assert_eq!(histogram(&train.labels, 10), vec![6000; 10]);
    }
}
