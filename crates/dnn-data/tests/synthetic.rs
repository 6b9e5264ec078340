//! The synthetic Pet generator: layout, trimaps, determinism and difficulty.
//!
//! Needs the `opencv` feature (image decoding / JPEG encoding).
#![cfg(feature = "opencv")]

use std::collections::BTreeMap;
use std::path::Path;

use dnn_data::image_io;
use dnn_data::{
    PetDataset, PetSplit, SegmentationSource, SyntheticConfig, generate_synthetic_pets,
    render_synthetic_pet,
};

fn config(images: usize, seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        images,
        size: [96, 112],
        size_jitter: 0.2,
        test_fraction: 0.25,
        seed,
        jpeg_quality: 90,
    }
}

/// Every file under `root`, by relative path.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn generated_folder_opens_as_pet_in_all_three_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = generate_synthetic_pets(tmp.path(), &config(20, 7)).unwrap();
    assert_eq!(
        (summary.images, summary.trainval, summary.test),
        (20, 15, 5)
    );
    let trainval = PetDataset::open(tmp.path(), PetSplit::Trainval).unwrap();
    let test = PetDataset::open(tmp.path(), PetSplit::Test).unwrap();
    let all = PetDataset::open(tmp.path(), PetSplit::All).unwrap();
    assert_eq!((trainval.len(), test.len(), all.len()), (15, 5, 20));
    assert!(all.warnings().is_empty(), "{:?}", all.warnings());
    let names: Vec<&str> = all.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(&names[..2], ["Synthcat_1", "Synthcat_2"]);
    assert!(names.contains(&"patchdog_5"));
    let dog = all
        .entries()
        .iter()
        .find(|e| e.name == "synthdog_1")
        .unwrap();
    assert_eq!(
        (dog.class_id, dog.species, dog.breed_id),
        (3, dnn_data::Species::Dog, 1)
    );
    let list = std::fs::read_to_string(tmp.path().join("annotations/list.txt")).unwrap();
    assert!(
        list.starts_with("#Image CLASS-ID SPECIES BREED ID\n"),
        "{list}"
    );
    for i in 0..all.len() {
        let s = all.load(i).unwrap();
        assert!(
            s.image.width <= 112
                && s.image.width >= 89
                && s.image.height <= 96
                && s.image.height >= 76
        );
        assert!(s.mask.data.iter().all(|&c| c <= 2));
    }
    // Images really are JPEG files, trimaps 8-bit grey PNGs.
    let jpg = std::fs::read(tmp.path().join("images/Spotcat_1.jpg")).unwrap();
    assert_eq!(
        image_io::ImageFormat::detect(&jpg),
        image_io::ImageFormat::Jpeg
    );
    let png = std::fs::read(tmp.path().join("annotations/trimaps/Spotcat_1.png")).unwrap();
    let header = image_io::png_header(&png).unwrap();
    assert_eq!((header.color_type, header.bit_depth), (0, 8));
    // No temporary files are left behind.
    assert!(files(tmp.path()).keys().all(|k| !k.contains(".tmp-")));
}

#[test]
fn trimaps_hold_one_two_three_with_a_border_band_between_pet_and_background() {
    for i in 0..12 {
        let (image, trimap) = render_synthetic_pet(&config(12, 3), i);
        assert_eq!((trimap.width, trimap.height), (image.width, image.height));
        let (w, h) = (trimap.width, trimap.height);
        let mut counts = [0usize; 4];
        for &v in &trimap.data {
            assert!((1..=3).contains(&v), "value {v}");
            counts[usize::from(v)] += 1;
        }
        let total = (w * h) as f64;
        let pet = counts[1] as f64 / total;
        assert!((0.05..0.5).contains(&pet), "sample {i}: pet covers {pet}");
        assert!(
            counts[3] > 0 && counts[2] > counts[1] / 2,
            "sample {i}: {counts:?}"
        );
        // The band separates pet from background: no 4-neighbours 1 and 2.
        for y in 0..h {
            for x in 0..w {
                let v = trimap.data[y * w + x];
                if x + 1 < w {
                    let r = trimap.data[y * w + x + 1];
                    assert!(
                        !matches!((v, r), (1, 2) | (2, 1)),
                        "sample {i} at ({x}, {y})"
                    );
                }
                if y + 1 < h {
                    let d = trimap.data[(y + 1) * w + x];
                    assert!(
                        !matches!((v, d), (1, 2) | (2, 1)),
                        "sample {i} at ({x}, {y})"
                    );
                }
            }
        }
        // A thin band: every border pixel lies within 4 pixels of pet or background (or of the
        // image edge, where the band is cut off); narrow gaps between ears or legs may be all
        // border. The exact profile (1 inside, 2 outside) is a unit test in src/synthetic.rs.
        for y in 0..h as isize {
            for x in 0..w as isize {
                if trimap.data[y as usize * w + x as usize] != 3 {
                    continue;
                }
                let near = (-4isize..=4).any(|dy| {
                    (-4isize..=4).any(|dx| {
                        let (nx, ny) = (x + dx, y + dy);
                        let inside = nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h;
                        dx * dx + dy * dy <= 16
                            && (!inside || trimap.data[ny as usize * w + nx as usize] != 3)
                    })
                });
                assert!(
                    near,
                    "sample {i}: border pixel ({x}, {y}) far from pet and background"
                );
            }
        }
    }
}

#[test]
fn same_seed_gives_byte_identical_files_and_another_seed_differs() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate_synthetic_pets(a.path(), &config(8, 11)).unwrap();
    generate_synthetic_pets(b.path(), &config(8, 11)).unwrap();
    generate_synthetic_pets(c.path(), &config(8, 12)).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa.len(), 8 * 2 + 4);
    assert!(fa == fb, "same seed, different bytes");
    assert_eq!(fa.keys().collect::<Vec<_>>(), fc.keys().collect::<Vec<_>>());
    assert_ne!(fa["images/Synthcat_1.jpg"], fc["images/Synthcat_1.jpg"]);
}

/// Pet IoU of the best classifier that sees only a pixel's colour (quantised to 8 levels per
/// channel and fitted on the very pixels it is scored on, so an upper bound for colour alone).
fn colour_only_pet_iou(samples: &[(dnn_data::RgbImage, dnn_data::Mask)]) -> f64 {
    let mut counts = vec![[0u64; 2]; 512];
    let bin = |p: &[u8]| {
        usize::from(p[0] >> 5) * 64 + usize::from(p[1] >> 5) * 8 + usize::from(p[2] >> 5)
    };
    for (image, trimap) in samples {
        for (p, &t) in image.data.chunks_exact(3).zip(&trimap.data) {
            if t != 3 {
                counts[bin(p)][usize::from(t == 1)] += 1;
            }
        }
    }
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for [bg, pet] in counts {
        if pet > bg {
            tp += pet;
            fp += bg;
        } else {
            fneg += pet;
        }
    }
    tp as f64 / (tp + fp + fneg) as f64
}

#[test]
fn pet_is_not_separable_by_colour_alone() {
    let cfg = config(48, 5);
    let samples: Vec<_> = (0..cfg.images)
        .map(|i| render_synthetic_pet(&cfg, i))
        .collect();
    let iou = colour_only_pet_iou(&samples);
    eprintln!("colour-only pet IoU: {iou:.3}");
    assert!(
        iou < 0.6,
        "a colour-only classifier reaches pet IoU {iou:.3}"
    );
    // The check can fail: a scene where pets have their own colours is separable.
    let easy: Vec<_> = samples
        .iter()
        .map(|(image, trimap)| {
            let mut image = image.clone();
            for (p, &t) in image.data.chunks_exact_mut(3).zip(&trimap.data) {
                if t == 1 {
                    p.copy_from_slice(&[250, 0, 250]);
                }
            }
            (image, trimap.clone())
        })
        .collect();
    assert!(colour_only_pet_iou(&easy) > 0.9);
}
