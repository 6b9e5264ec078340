//! IDX reading: exact round trips of raw and gzipped files, and every malformed-file error.

mod common;

use common::{bytes, gzip, idx_header, idx_images, idx_labels, write};
use dnn_data::{DataError, read_idx_images, read_idx_labels};

#[test]
fn raw_and_gzipped_images_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let pixels = bytes(4 * 3 * 5, 1);
    let file = idx_images(4, 3, 5, &pixels);
    // Gzip is detected by content: the compressed file has no .gz suffix, the raw one has it.
    for (name, data) in [("raw.gz", file.clone()), ("compressed", gzip(&file))] {
        let path = write(dir.path(), name, &data);
        let images = read_idx_images(&path).unwrap();
        assert_eq!(
            (images.count, images.rows, images.cols),
            (4, 3, 5),
            "{name}"
        );
        assert_eq!(images.pixels, pixels, "{name}");
    }
}

#[test]
fn raw_and_gzipped_labels_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let labels = vec![3u8, 0, 9, 9, 1, 255, 7];
    let file = idx_labels(&labels);
    for (name, data) in [("labels", file.clone()), ("labels.gz", gzip(&file))] {
        let path = write(dir.path(), name, &data);
        assert_eq!(read_idx_labels(&path).unwrap(), labels, "{name}");
    }
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let labels = bytes(40, 2);
    let file = idx_labels(&labels);
    let mut data = gzip(&file[..13]);
    data.extend(gzip(&file[13..]));
    let path = write(dir.path(), "multi.gz", &data);
    assert_eq!(read_idx_labels(&path).unwrap(), labels);
}

#[test]
fn empty_label_file_is_an_empty_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty", &idx_labels(&[]));
    assert!(read_idx_labels(&path).unwrap().is_empty());
}

#[test]
fn bad_magic_is_reported_with_both_numbers() {
    let dir = tempfile::tempdir().unwrap();
    // A label file where an image file is expected, raw and gzipped.
    let file = idx_labels(&[1, 2, 3]);
    for (name, data) in [("raw", file.clone()), ("gz", gzip(&file))] {
        let path = write(dir.path(), name, &data);
        let err = read_idx_images(&path).unwrap_err();
        match &err {
            DataError::BadMagic {
                path: p,
                expected,
                found,
            } => {
                assert_eq!(p, &path);
                assert_eq!((*expected, *found), (0x803, 0x801));
            }
            other => panic!("{name}: expected BadMagic, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("0x00000803") && msg.contains("0x00000801"),
            "{msg}"
        );
    }
}

#[test]
fn truncated_payload_reports_expected_and_actual_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let full = idx_images(3, 4, 4, &bytes(48, 3));
    assert_eq!(full.len(), 16 + 48);
    let cut = &full[..full.len() - 5];
    for (name, data) in [("raw", cut.to_vec()), ("gz", gzip(cut))] {
        let path = write(dir.path(), name, &data);
        let err = read_idx_images(&path).unwrap_err();
        match &err {
            DataError::Truncated {
                path: p,
                expected_bytes,
                actual_bytes,
            } => {
                assert_eq!(p, &path);
                assert_eq!((*expected_bytes, *actual_bytes), (64, 59), "{name}");
            }
            other => panic!("{name}: expected Truncated, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("64") && msg.contains("59"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}

#[test]
fn truncated_header_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let header = idx_header(0x803, &[1, 2, 2]);
    for (len, want) in [(2usize, 2u64), (9, 9)] {
        let path = write(dir.path(), &format!("h{len}"), &header[..len]);
        match read_idx_images(&path).unwrap_err() {
            DataError::Truncated {
                expected_bytes,
                actual_bytes,
                ..
            } => assert_eq!((expected_bytes, actual_bytes), (16, want)),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = idx_labels(&[1, 2, 3]);
    file.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    for (name, data) in [("raw", file.clone()), ("gz", gzip(&file))] {
        let path = write(dir.path(), name, &data);
        let err = read_idx_labels(&path).unwrap_err();
        assert!(
            matches!(&err, DataError::Format { path: p, .. } if p == &path),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("7 trailing bytes"), "{msg}");
    }
}

#[test]
fn zero_rows_or_columns_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for dims in [[1u32, 0, 5], [1, 5, 0]] {
        let path = write(dir.path(), "zero", &idx_header(0x803, &dims));
        let err = read_idx_images(&path).unwrap_err();
        assert!(matches!(err, DataError::Format { .. }), "{dims:?}: {err:?}");
    }
}

#[test]
fn missing_file_is_io_not_found_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope");
    match read_idx_labels(&path).unwrap_err() {
        DataError::Io { path: p, source } => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn corrupt_gzip_body_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = gzip(&idx_labels(&bytes(500, 4)));
    let mid = data.len() / 2;
    data.truncate(mid);
    let path = write(dir.path(), "cut.gz", &data);
    let err = read_idx_labels(&path).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path: p, .. } if p == &path),
        "{err:?}"
    );
}

#[test]
fn dimensions_overflowing_64_bits_are_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "overflow.gz",
        &gzip(&idx_header(0x803, &[u32::MAX, u32::MAX, u32::MAX])),
    );
    match read_idx_images(&path).unwrap_err() {
        DataError::Format { reason, .. } => assert!(reason.contains("overflow"), "{reason}"),
        other => panic!("expected Format, got {other:?}"),
    }
}
