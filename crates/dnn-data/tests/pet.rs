//! Oxford-IIIT Pet reader: the real sample and quirk files in `../shared` (skipped with a message
//! when absent) and small datasets written by the tests for every error path.
//!
//! Needs the `opencv` feature (image decoding / JPEG encoding).
#![cfg(feature = "opencv")]

use std::path::{Path, PathBuf};

use dnn_data::image_io::{self, ImageFormat, PixelsRef};
use dnn_data::{
    DataError, Mask, PetDataset, PetSplit, PetWarning, RgbImage, SegmentationSource, Species,
};

fn shared(sub: &str) -> Option<PathBuf> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/"
    ))
    .join(sub);
    if path.is_dir() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} does not exist (real-data check only)",
            path.display()
        );
        None
    }
}

#[test]
fn reads_every_pair_of_the_real_sample_in_both_splits() {
    let Some(root) = shared("oxford-pet-sample") else {
        return;
    };
    let mut names = Vec::new();
    for (split, expected) in [(PetSplit::Trainval, 101), (PetSplit::Test, 99)] {
        let ds = PetDataset::open(&root, split).unwrap();
        assert_eq!(ds.len(), expected, "{split}");
        assert!(ds.warnings().is_empty(), "{:?}", ds.warnings());
        assert_eq!(ds.class_names(), ["pet", "background", "border"]);
        for i in 0..ds.len() {
            let s = ds.load(i).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.name, ds.name(i));
            assert_eq!(s.image.data.len(), s.image.width * s.image.height * 3);
            assert_eq!(
                (s.mask.width, s.mask.height),
                (s.image.width, s.image.height)
            );
            let mut seen = [false; 3];
            for &v in &s.mask.data {
                seen[usize::from(v)] = true; // panics on a value above 2
            }
            assert!(
                seen[0] && seen[1],
                "{}: trimap without pet or background",
                s.name
            );
            names.push(s.name);
        }
    }
    let all = PetDataset::open(&root, PetSplit::All).unwrap();
    assert_eq!(all.len(), 200);
    names.sort();
    let mut all_names: Vec<String> = all.entries().iter().map(|e| e.name.clone()).collect();
    all_names.sort();
    assert_eq!(names, all_names, "trainval + test = list.txt");

    let by_name = |n: &str| all.entries().iter().find(|e| e.name == n).unwrap().clone();
    let aby = by_name("Abyssinian_101");
    assert_eq!(
        (aby.class_id, aby.species, aby.breed_id, aby.breed()),
        (1, Species::Cat, 1, "Abyssinian")
    );
    let bengal = by_name("Bengal_100");
    assert_eq!(
        (bengal.class_id, bengal.species, bengal.breed_id),
        (6, Species::Cat, 2)
    );
    let dog = by_name("american_bulldog_101");
    assert_eq!(
        (dog.class_id, dog.species, dog.breed_id, dog.breed()),
        (2, Species::Dog, 1, "american_bulldog")
    );
    assert!(all.describe().contains("200 images"), "{}", all.describe());
}

#[test]
fn reduced_decoding_keeps_image_and_mask_paired() {
    let Some(root) = shared("oxford-pet-sample") else {
        return;
    };
    let ds = PetDataset::open(&root, PetSplit::Test).unwrap();
    let full = ds.load(0).unwrap();
    let small = ds.load_for_target(0, [64, 64]).unwrap();
    assert!(
        small.image.width < full.image.width && small.image.width >= 64 && small.image.height >= 64
    );
    assert_eq!(
        (small.mask.width, small.mask.height),
        (small.image.width, small.image.height)
    );
    assert!(small.mask.data.iter().all(|&v| v <= 2));
}

#[test]
fn quirks_rgba_png_is_decoded_and_unlisted_files_are_reported() {
    let Some(root) = shared("oxford-pet-quirks") else {
        return;
    };
    let ds = PetDataset::open(&root, PetSplit::All).unwrap();
    assert_eq!(ds.len(), 1);
    // Abyssinian_5.jpg is an RGBA PNG: decoded by content, converted to RGB.
    let s = ds.load(0).unwrap();
    assert_eq!(s.name, "Abyssinian_5");
    assert_eq!(
        (s.image.width, s.image.height, s.image.data.len()),
        (200, 150, 200 * 150 * 3)
    );
    assert_eq!((s.mask.width, s.mask.height), (200, 150));
    let warnings: Vec<String> = ds.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(ds.warnings().len(), 2, "{warnings:?}");
    assert!(
        matches!(
            &ds.warnings()[0],
            PetWarning::Unlisted { path, content: ImageFormat::Gif } if path.ends_with("images/Abyssinian_34.jpg")
        ),
        "{warnings:?}"
    );
    assert!(
        matches!(
            &ds.warnings()[1],
            PetWarning::Unlisted { path, content: ImageFormat::Jpeg } if path.ends_with("images/Abyssinian_82.jpg")
        ),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("Abyssinian_34.jpg") && warnings[0].contains("GIF"),
        "{}",
        warnings[0]
    );

    let test = PetDataset::open(&root, PetSplit::Test).unwrap();
    assert_eq!(test.len(), 1);
    // The quirk folder ships no trainval.txt: the error names it.
    let err = PetDataset::open(&root, PetSplit::Trainval).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if path.ends_with("annotations/trainval.txt")),
        "{err}"
    );
}

/// Copies the quirk folder and lists all three images, so the GIF is a real sample.
fn quirks_all_listed(tmp: &Path) -> Option<PathBuf> {
    let src = shared("oxford-pet-quirks")?;
    let root = tmp.join("quirks");
    for dir in ["images", "annotations/trimaps"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        for f in std::fs::read_dir(src.join(dir)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, root.join(dir).join(f.file_name().unwrap())).unwrap();
        }
    }
    let list = "Abyssinian_34 1 1 1\nAbyssinian_5 1 1 1\nAbyssinian_82 1 1 1\n";
    std::fs::write(root.join("annotations/list.txt"), list).unwrap();
    Some(root)
}

#[test]
fn a_listed_gif_is_a_typed_error_naming_the_file_and_can_be_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(root) = quirks_all_listed(tmp.path()) else {
        return;
    };
    let ds = PetDataset::open(&root, PetSplit::All).unwrap();
    assert_eq!(ds.len(), 3);
    assert!(ds.warnings().is_empty(), "{:?}", ds.warnings());
    match ds.load(0) {
        Err(DataError::Unsupported { path, format, .. }) => {
            assert!(path.ends_with("images/Abyssinian_34.jpg"));
            assert_eq!(format, "GIF");
        }
        Ok(s) => {
            // An OpenCV with a GIF decoder (4.7+): the GIF simply decodes.
            assert_eq!((s.image.width, s.image.height), (250, 202));
            return;
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    assert!(ds.load(2).is_ok(), "Abyssinian_82 decodes");
    let failures = ds.validate();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, 0);
    assert!(
        failures[0].1.to_string().contains("Abyssinian_34.jpg"),
        "{}",
        failures[0].1
    );

    let skipping = PetDataset::open_skipping_unsupported(&root, PetSplit::All).unwrap();
    let names: Vec<&str> = (0..skipping.len()).map(|i| skipping.name(i)).collect();
    assert_eq!(names, ["Abyssinian_5", "Abyssinian_82"]);
    assert_eq!(skipping.warnings().len(), 1);
    let w = skipping.warnings()[0].to_string();
    assert!(
        matches!(&skipping.warnings()[0], PetWarning::Skipped { path, .. } if path.ends_with("Abyssinian_34.jpg"))
    );
    assert!(w.contains("Abyssinian_34.jpg") && w.contains("GIF"), "{w}");
}

/// Writes a tiny Pet dataset: 8×6 images, trimaps with every value, list files from `lines`.
fn tiny_pet(root: &Path, names: &[&str]) {
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("annotations/trimaps")).unwrap();
    let mut list = String::from("#Image CLASS-ID SPECIES BREED ID\n");
    for (i, name) in names.iter().enumerate() {
        let image = RgbImage {
            width: 8,
            height: 6,
            data: (0..8 * 6 * 3).map(|v| (v * 5 + i) as u8).collect(),
        };
        image_io::encode_jpeg(&root.join(format!("images/{name}.jpg")), &image, 95).unwrap();
        write_trimap(root, name, 8, 6, |x, _| 1 + (x % 3) as u8);
        list.push_str(&format!("{name} 1 1 1\n"));
    }
    std::fs::write(root.join("annotations/list.txt"), &list).unwrap();
    std::fs::write(root.join("annotations/trainval.txt"), &list).unwrap();
    std::fs::write(root.join("annotations/test.txt"), "").unwrap();
}

fn write_trimap(root: &Path, name: &str, w: usize, h: usize, value: impl Fn(usize, usize) -> u8) {
    let mask = Mask {
        width: w,
        height: h,
        data: (0..w * h).map(|i| value(i % w, i / w)).collect(),
    };
    image_io::encode_png(
        &root.join(format!("annotations/trimaps/{name}.png")),
        PixelsRef::from(&mask),
    )
    .unwrap();
}

#[test]
fn trimap_values_become_class_indices() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_pet(tmp.path(), &["Cat_1", "dog_2"]);
    let ds = PetDataset::open(tmp.path(), PetSplit::Trainval).unwrap();
    assert_eq!(ds.len(), 2);
    let s = ds.load(1).unwrap();
    assert_eq!(s.name, "dog_2");
    assert_eq!(&s.mask.data[..4], &[0, 1, 2, 0]);
    assert_eq!((s.image.width, s.image.height), (8, 6));
    assert!(
        PetDataset::open(tmp.path(), PetSplit::Test)
            .unwrap()
            .is_empty()
    );
}

fn list_error(lines: &str) -> (PathBuf, usize, String) {
    let tmp = tempfile::tempdir().unwrap();
    tiny_pet(tmp.path(), &["Cat_1"]);
    std::fs::write(tmp.path().join("annotations/trainval.txt"), lines).unwrap();
    match PetDataset::open(tmp.path(), PetSplit::Trainval) {
        Err(DataError::ListEntry { path, line, reason }) => {
            assert!(path.ends_with("annotations/trainval.txt"));
            (path, line, reason)
        }
        other => panic!("expected a list error for {lines:?}, got {other:?}"),
    }
}

#[test]
fn list_lines_pointing_outside_the_root_are_refused_with_file_and_line() {
    for bad in [
        "../Cat_1",
        "/etc/passwd",
        "images/Cat_1",
        "..",
        "a\\b",
        ".hidden",
    ] {
        let (_, line, reason) = list_error(&format!("# header\nCat_1 1 1 1\n{bad} 1 1 1\n"));
        assert_eq!(line, 3, "{bad}");
        assert!(reason.contains(&format!("{bad:?}")), "{bad}: {reason}");
    }
}

#[test]
fn malformed_list_lines_are_refused_with_file_and_line() {
    let (_, line, reason) = list_error("Cat_1 1 1\n");
    assert_eq!(line, 1);
    assert!(reason.contains("4 fields"), "{reason}");
    let (_, line, reason) = list_error("\nCat_1 1 3 1\n");
    assert_eq!(line, 2);
    assert!(reason.contains("SPECIES 3"), "{reason}");
    let (_, _, reason) = list_error("Cat_1 x 1 1\n");
    assert!(reason.contains("CLASS-ID"), "{reason}");
    let (_, line, reason) = list_error("Cat_1 1 1 1\nCat_1 1 1 1\n");
    assert_eq!(line, 2);
    assert!(reason.contains("twice"), "{reason}");
}

#[test]
fn missing_trimap_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_pet(tmp.path(), &["Cat_1", "Cat_2"]);
    std::fs::remove_file(tmp.path().join("annotations/trimaps/Cat_2.png")).unwrap();
    let err = PetDataset::open(tmp.path(), PetSplit::All).unwrap_err();
    match &err {
        DataError::Io { path, source } => {
            assert!(path.ends_with("annotations/trimaps/Cat_2.png"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("Cat_2.png"));
}

#[test]
fn trimap_value_outside_one_to_three_is_an_error_naming_file_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_pet(tmp.path(), &["Cat_1"]);
    write_trimap(tmp.path(), "Cat_1", 8, 6, |x, y| {
        if (x, y) == (5, 2) { 4 } else { 2 }
    });
    let ds = PetDataset::open(tmp.path(), PetSplit::All).unwrap();
    match ds.load(0).unwrap_err() {
        DataError::MaskValue {
            path, value, x, y, ..
        } => {
            assert!(path.ends_with("trimaps/Cat_1.png"));
            assert_eq!((value, x, y), (4, 5, 2));
        }
        e => panic!("{e}"),
    }
    write_trimap(tmp.path(), "Cat_1", 8, 6, |_, _| 0);
    let err = ds.load(0).unwrap_err();
    assert!(err.to_string().contains("mask value 0"), "{err}");
}

#[test]
fn image_and_trimap_of_different_sizes_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_pet(tmp.path(), &["Cat_1"]);
    write_trimap(tmp.path(), "Cat_1", 6, 8, |_, _| 1);
    let ds = PetDataset::open(tmp.path(), PetSplit::All).unwrap();
    match ds.load(0).unwrap_err() {
        DataError::SizeMismatch {
            image_path,
            mask_path,
            image_size,
            mask_size,
        } => {
            assert!(
                image_path.ends_with("images/Cat_1.jpg")
                    && mask_path.ends_with("trimaps/Cat_1.png")
            );
            assert_eq!((image_size, mask_size), ([8, 6], [6, 8]));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn unlisted_images_are_warnings_not_samples() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_pet(tmp.path(), &["Cat_1", "Cat_2"]);
    std::fs::write(tmp.path().join("annotations/list.txt"), "Cat_1 1 1 1\n").unwrap();
    std::fs::write(tmp.path().join("annotations/trainval.txt"), "Cat_1 1 1 1\n").unwrap();
    let ds = PetDataset::open(tmp.path(), PetSplit::All).unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.warnings().len(), 1);
    assert!(ds.warnings()[0].to_string().contains("Cat_2.jpg"));
}
