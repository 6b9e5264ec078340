//! Image-folder datasets: segmentation (images/ + masks/) and classification (one folder per
//! class).
//!
//! Needs the `opencv` feature (image decoding / JPEG encoding).
#![cfg(feature = "opencv")]

use std::path::Path;

use dnn_data::image_io::{PixelsRef, encode_jpeg, encode_png, encode_png_palette};
use dnn_data::{
    DataError, ImageFolder, Mask, RgbImage, SegmentationFolder, SegmentationFolderOptions,
    SegmentationSource,
};

fn image(w: usize, h: usize, rgb: [u8; 3]) -> RgbImage {
    RgbImage {
        width: w,
        height: h,
        data: rgb.repeat(w * h),
    }
}

fn mask(w: usize, h: usize, values: &[u8]) -> Mask {
    Mask {
        width: w,
        height: h,
        data: (0..w * h).map(|i| values[i % values.len()]).collect(),
    }
}

/// `images/` + `masks/` with `a` (JPEG + grey PNG), `b` (PNG + palette PNG).
fn seg_folder(root: &Path) {
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("masks")).unwrap();
    encode_jpeg(&root.join("images/a.jpg"), &image(10, 8, [200, 30, 30]), 95).unwrap();
    encode_png(
        &root.join("masks/a.png"),
        PixelsRef::from(&mask(10, 8, &[0, 1])),
    )
    .unwrap();
    encode_png(
        &root.join("images/b.png"),
        PixelsRef::from(&image(6, 4, [1, 2, 3])),
    )
    .unwrap();
    let palette = [[0, 0, 0], [128, 0, 0], [0, 128, 0]];
    encode_png_palette(&root.join("masks/b.png"), &mask(6, 4, &[2, 0, 1]), &palette).unwrap();
}

#[test]
fn segmentation_folder_pairs_by_stem_and_reads_palette_indices() {
    let tmp = tempfile::tempdir().unwrap();
    seg_folder(tmp.path());
    std::fs::write(tmp.path().join("images/notes.txt"), "not an image").unwrap();
    let ds = SegmentationFolder::open(tmp.path()).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!((ds.name(0), ds.name(1)), ("a", "b"));
    assert_eq!(ds.class_names(), ["class_0", "class_1", "class_2"]);
    assert_eq!(ds.warnings().len(), 1, "{:?}", ds.warnings());
    assert!(ds.warnings()[0].contains("notes.txt"));
    let b = ds.load(1).unwrap();
    assert_eq!(
        &b.mask.data[..6],
        &[2, 0, 1, 2, 0, 1],
        "indices, not colours"
    );
    assert_eq!(&b.image.data[..3], &[1, 2, 3]);
    let a = ds.load(0).unwrap();
    assert_eq!((a.image.width, a.image.height), (10, 8));
    assert!(a.image.data[0] > 180 && a.image.data[2] < 60, "RGB order");
}

#[test]
fn classes_txt_names_the_classes_and_bounds_the_mask_values() {
    let tmp = tempfile::tempdir().unwrap();
    seg_folder(tmp.path());
    std::fs::write(
        tmp.path().join("classes.txt"),
        "# names\nbackground\ncat\n\n",
    )
    .unwrap();
    let ds = SegmentationFolder::open(tmp.path()).unwrap();
    assert_eq!(ds.class_names(), ["background", "cat"]);
    assert!(ds.load(0).is_ok());
    match ds.load(1).unwrap_err() {
        DataError::MaskValue {
            path, value, x, y, ..
        } => {
            assert!(path.ends_with("masks/b.png"));
            assert_eq!((value, x, y), (2, 0, 0));
        }
        e => panic!("{e}"),
    }
    std::fs::write(tmp.path().join("classes.txt"), "a\nb\na\n").unwrap();
    let err = SegmentationFolder::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::ListEntry { line: 3, .. }),
        "{err}"
    );
}

#[test]
fn an_ignore_value_passes_through_and_does_not_count_as_a_class() {
    let tmp = tempfile::tempdir().unwrap();
    seg_folder(tmp.path());
    encode_png(
        &tmp.path().join("masks/a.png"),
        PixelsRef::from(&mask(10, 8, &[0, 255, 1])),
    )
    .unwrap();
    assert!(
        SegmentationFolder::open(tmp.path())
            .unwrap()
            .class_names()
            .len()
            == 256
    );
    let options = SegmentationFolderOptions {
        ignore_value: Some(255),
    };
    let ds = SegmentationFolder::open_with(tmp.path(), &options).unwrap();
    assert_eq!(ds.class_names().len(), 3);
    assert_eq!(&ds.load(0).unwrap().mask.data[..3], &[0, 255, 1]);
}

#[test]
fn segmentation_folder_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    seg_folder(tmp.path());
    std::fs::remove_file(tmp.path().join("masks/b.png")).unwrap();
    let err = SegmentationFolder::open(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("images/b.png") && err.to_string().contains("no mask"),
        "{err}"
    );

    seg_folder(tmp.path());
    encode_png(
        &tmp.path().join("masks/b.png"),
        PixelsRef::from(&mask(4, 6, &[0])),
    )
    .unwrap();
    let ds = SegmentationFolder::open(tmp.path()).unwrap();
    assert!(matches!(
        ds.load(1).unwrap_err(),
        DataError::SizeMismatch {
            image_size: [6, 4],
            mask_size: [4, 6],
            ..
        }
    ));

    seg_folder(tmp.path());
    encode_png(
        &tmp.path().join("images/a.png"),
        PixelsRef::from(&image(2, 2, [0, 0, 0])),
    )
    .unwrap();
    let err = SegmentationFolder::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("stem \"a\""), "{err}");
    std::fs::remove_file(tmp.path().join("images/a.png")).unwrap();

    // A mask without an image is a warning; a colour mask an error naming it.
    encode_png(
        &tmp.path().join("masks/c.png"),
        PixelsRef::from(&mask(2, 2, &[0])),
    )
    .unwrap();
    let ds = SegmentationFolder::open(tmp.path()).unwrap();
    assert!(
        ds.warnings().iter().any(|w| w.contains("masks/c.png")),
        "{:?}",
        ds.warnings()
    );
    encode_png(
        &tmp.path().join("masks/b.png"),
        PixelsRef::from(&image(6, 4, [1, 1, 2])),
    )
    .unwrap();
    let err = SegmentationFolder::open(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("masks/b.png") && err.to_string().contains("colour"),
        "{err}"
    );
}

#[test]
fn image_folder_lists_classes_and_loads_at_a_fixed_size() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (class, rgb) in [("cat", [250u8, 0, 0]), ("dog", [0, 0, 250])] {
        std::fs::create_dir_all(root.join(class).join("sub")).unwrap();
        for i in 0..3 {
            let path = root.join(class).join(format!("{i}.jpg"));
            encode_jpeg(&path, &image(40 + i * 7, 30, rgb), 95).unwrap();
        }
        encode_png(
            &root.join(class).join("sub/x.jpeg"),
            PixelsRef::from(&image(9, 9, rgb)),
        )
        .unwrap();
    }
    std::fs::write(root.join("dog/readme.txt"), "text").unwrap();
    std::fs::write(root.join("stray.jpg"), "x").unwrap();
    std::fs::create_dir_all(root.join(".cache")).unwrap();
    let folder = ImageFolder::open(root).unwrap();
    assert_eq!(folder.class_names(), ["cat", "dog"]);
    assert_eq!(folder.samples().len(), 8);
    assert_eq!(folder.samples().iter().filter(|(_, c)| *c == 1).count(), 4);
    assert!(folder.samples()[3].0.ends_with("cat/sub/x.jpeg"));
    assert_eq!(folder.warnings().len(), 2, "{:?}", folder.warnings());
    let set = folder.load([16, 12]).unwrap();
    assert_eq!(set.images.shape(), [8, 3, 16, 12]);
    assert_eq!(set.labels, [0, 0, 0, 0, 1, 1, 1, 1]);
    let pixels = set.images.host_data().unwrap();
    let plane = 16 * 12;
    // Sample 0 is red, sample 4 blue: channels first, scaled to [0, 1].
    assert!(pixels[0] > 0.9 && pixels[2 * plane] < 0.1);
    let blue = 4 * 3 * plane;
    assert!(pixels[blue] < 0.1 && pixels[blue + 2 * plane] > 0.9);
    let subset = folder.load_indices(&[5, 1], [4, 4]).unwrap();
    assert_eq!(subset.labels, [1, 0]);
    assert!(folder.load_indices(&[8], [4, 4]).is_err());
}

#[test]
fn image_folder_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        ImageFolder::open(tmp.path())
            .unwrap_err()
            .to_string()
            .contains("no class")
    );
    std::fs::create_dir_all(tmp.path().join("a")).unwrap();
    let path = tmp.path().join("a/broken.jpg");
    let mut jpeg = Vec::new();
    encode_jpeg(&path, &image(16, 16, [1, 2, 3]), 90).unwrap();
    jpeg.extend_from_slice(&std::fs::read(&path).unwrap()[..30]);
    std::fs::write(&path, jpeg).unwrap();
    let folder = ImageFolder::open(tmp.path()).unwrap();
    let err = folder.load([8, 8]).unwrap_err();
    assert!(err.to_string().contains("broken.jpg"), "{err}");
}
