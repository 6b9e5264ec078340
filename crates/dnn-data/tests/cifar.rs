//! CIFAR-10 / CIFAR-100 binary loading: exact values from synthetic files and every error.

mod common;

use std::path::Path;

use common::{bytes, gzip, scaled, write};
use dnn_data::{
    CIFAR10_CLASS_NAMES, Cifar100Labels, DataError, Split, load_cifar10, load_cifar100,
};

const PIXELS: usize = 3072;

/// CIFAR-10 records (1 label byte + 3072 pixels) for `labels`, pixels from `seed`; also returns
/// the pixels.
fn cifar10_file(labels: &[u8], seed: u64) -> (Vec<u8>, Vec<u8>) {
    let pixels = bytes(labels.len() * PIXELS, seed);
    let mut file = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        file.push(l);
        file.extend_from_slice(&pixels[i * PIXELS..(i + 1) * PIXELS]);
    }
    (file, pixels)
}

/// CIFAR-100 records (coarse, fine, 3072 pixels); also returns the pixels.
fn cifar100_file(labels: &[(u8, u8)], seed: u64) -> (Vec<u8>, Vec<u8>) {
    let pixels = bytes(labels.len() * PIXELS, seed);
    let mut file = Vec::new();
    for (i, &(coarse, fine)) in labels.iter().enumerate() {
        file.push(coarse);
        file.push(fine);
        file.extend_from_slice(&pixels[i * PIXELS..(i + 1) * PIXELS]);
    }
    (file, pixels)
}

fn scaled_all(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&b| scaled(b)).collect()
}

#[test]
fn cifar10_test_split_reads_back_exactly_raw_and_gzipped() {
    let (file, pixels) = cifar10_file(&[3, 0, 9], 21);
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        if gz {
            write(dir.path(), "test_batch.bin.gz", &gzip(&file));
        } else {
            write(dir.path(), "test_batch.bin", &file);
        }
        let set = load_cifar10(dir.path(), Split::Test).unwrap();
        assert_eq!(set.images.shape(), &[3, 3, 32, 32]);
        assert_eq!(set.labels, vec![3, 0, 9]);
        assert_eq!(set.class_names, CIFAR10_CLASS_NAMES.map(String::from));
        assert_eq!(set.images.to_vec().unwrap(), scaled_all(&pixels), "gz {gz}");
        // Channel-first: byte 1024 of a record's pixels is the first green value.
        assert_eq!(
            set.images.get(&[1, 1, 0, 0]).unwrap(),
            scaled(pixels[PIXELS + 1024])
        );
    }
}

#[test]
fn cifar10_train_split_concatenates_the_five_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_pixels = Vec::new();
    let mut all_labels = Vec::new();
    for i in 1..=5u8 {
        let labels = [i, 9 - i];
        let (file, pixels) = cifar10_file(&labels, u64::from(i));
        // Mix compressed and raw batches (gzip detected by content, not name).
        let data = if i % 2 == 0 { gzip(&file) } else { file };
        write(dir.path(), &format!("data_batch_{i}.bin"), &data);
        all_pixels.extend(pixels);
        all_labels.extend(labels.map(u32::from));
    }
    write(
        dir.path(),
        "batches.meta.txt",
        b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n\n",
    );
    let set = load_cifar10(dir.path(), Split::Train).unwrap();
    assert_eq!(set.len(), 10);
    assert_eq!(set.labels, all_labels);
    assert_eq!(set.images.to_vec().unwrap(), scaled_all(&all_pixels));
    assert_eq!(set.class_names[0], "a");
    assert_eq!(set.class_names[9], "j");
}

#[test]
fn cifar10_missing_batch_is_not_found_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for i in [1, 2, 4, 5] {
        write(
            dir.path(),
            &format!("data_batch_{i}.bin"),
            &cifar10_file(&[1], 1).0,
        );
    }
    match load_cifar10(dir.path(), Split::Train).unwrap_err() {
        DataError::Io { path, source } => {
            assert_eq!(path, dir.path().join("data_batch_3.bin"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn cifar10_partial_record_is_truncated_with_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut file, _) = cifar10_file(&[1, 2], 2);
    file.truncate(3073 + 100);
    for gz in [false, true] {
        let data = if gz { gzip(&file) } else { file.clone() };
        let path = write(dir.path(), "test_batch.bin", &data);
        let err = load_cifar10(dir.path(), Split::Test).unwrap_err();
        match &err {
            DataError::Truncated {
                path: p,
                expected_bytes,
                actual_bytes,
            } => {
                assert_eq!(p, &path);
                assert_eq!((*expected_bytes, *actual_bytes), (6146, 3173));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("6146") && msg.contains("3173"), "{msg}");
    }
}

#[test]
fn cifar10_empty_file_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test_batch.bin", b"");
    let err = load_cifar10(dir.path(), Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
}

#[test]
fn cifar10_label_out_of_range_is_bad_label() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "test_batch.bin",
        &cifar10_file(&[0, 9, 10], 3).0,
    );
    match load_cifar10(dir.path(), Split::Test).unwrap_err() {
        DataError::BadLabel {
            path: p,
            index,
            value,
            classes,
        } => {
            assert_eq!(p, path);
            assert_eq!((index, value, classes), (2, 10, 10));
        }
        other => panic!("expected BadLabel, got {other:?}"),
    }
}

#[test]
fn cifar10_names_file_with_wrong_count_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test_batch.bin", &cifar10_file(&[0], 3).0);
    let names = write(dir.path(), "batches.meta.txt", b"cat\ndog\n");
    match load_cifar10(dir.path(), Split::Test).unwrap_err() {
        DataError::Format { path, reason } => {
            assert_eq!(path, names);
            assert!(reason.contains("2 class names"), "{reason}");
        }
        other => panic!("expected Format, got {other:?}"),
    }
}

fn write_cifar100(dir: &Path, name: &str, labels: &[(u8, u8)], seed: u64) -> Vec<u8> {
    let (file, pixels) = cifar100_file(labels, seed);
    write(dir, name, &file);
    pixels
}

#[test]
fn cifar100_fine_and_coarse_labels_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let records = [(19u8, 99u8), (0, 0), (7, 42)];
    let pixels = write_cifar100(dir.path(), "train.bin", &records, 31);

    let fine = load_cifar100(dir.path(), Split::Train, Cifar100Labels::Fine).unwrap();
    assert_eq!(fine.images.shape(), &[3, 3, 32, 32]);
    assert_eq!(fine.labels, vec![99, 0, 42]);
    assert_eq!(fine.classes(), 100);
    assert_eq!(fine.class_names[42], "class_42");
    assert_eq!(fine.images.to_vec().unwrap(), scaled_all(&pixels));

    let coarse = load_cifar100(dir.path(), Split::Train, Cifar100Labels::Coarse).unwrap();
    assert_eq!(coarse.labels, vec![19, 0, 7]);
    assert_eq!(coarse.classes(), 20);
    assert_eq!(coarse.images.to_vec().unwrap(), scaled_all(&pixels));
}

#[test]
fn cifar100_names_files_are_used_when_present() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar100(dir.path(), "test.bin", &[(1, 2)], 1);
    let coarse: String = (0..20).map(|k| format!("super{k}\r\n")).collect();
    let fine: String = (0..100).map(|k| format!("  fine{k}  \n")).collect();
    write(dir.path(), "coarse_label_names.txt", coarse.as_bytes());
    write(dir.path(), "fine_label_names.txt", fine.as_bytes());
    let set = load_cifar100(dir.path(), Split::Test, Cifar100Labels::Coarse).unwrap();
    assert_eq!(set.class_names[19], "super19");
    let set = load_cifar100(dir.path(), Split::Test, Cifar100Labels::Fine).unwrap();
    assert_eq!(set.class_names[57], "fine57");
}

#[test]
fn cifar100_labels_are_checked_against_the_chosen_kind() {
    let dir = tempfile::tempdir().unwrap();
    // A fine label of 50 is valid; as a coarse label (0..20) 50 would not be.
    let path = dir.path().join("test.bin");
    write_cifar100(dir.path(), "test.bin", &[(3, 50), (20, 1)], 4);
    assert_eq!(
        load_cifar100(dir.path(), Split::Test, Cifar100Labels::Fine)
            .unwrap()
            .labels,
        vec![50, 1]
    );
    match load_cifar100(dir.path(), Split::Test, Cifar100Labels::Coarse).unwrap_err() {
        DataError::BadLabel {
            path: p,
            index,
            value,
            classes,
        } => {
            assert_eq!(p, path);
            assert_eq!((index, value, classes), (1, 20, 20));
        }
        other => panic!("expected BadLabel, got {other:?}"),
    }
    write_cifar100(dir.path(), "test.bin", &[(3, 100)], 4);
    assert!(matches!(
        load_cifar100(dir.path(), Split::Test, Cifar100Labels::Fine).unwrap_err(),
        DataError::BadLabel {
            value: 100,
            classes: 100,
            ..
        }
    ));
}

#[test]
fn cifar100_record_size_is_3074() {
    let dir = tempfile::tempdir().unwrap();
    // Two CIFAR-10 records (2 x 3073 bytes) are not whole CIFAR-100 records.
    write(dir.path(), "test.bin", &cifar10_file(&[1, 2], 5).0);
    match load_cifar100(dir.path(), Split::Test, Cifar100Labels::Fine).unwrap_err() {
        DataError::Truncated {
            expected_bytes,
            actual_bytes,
            ..
        } => assert_eq!((expected_bytes, actual_bytes), (6148, 6146)),
        other => panic!("expected Truncated, got {other:?}"),
    }
}
