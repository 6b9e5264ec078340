//! Preprocessing: resizing rules, joint augmentation, determinism and normalisation.

use std::collections::BTreeSet;

use dnn_data::{
    Augment, DataError, Interpolation, Mask, Preprocess, ResizeMode, RgbImage, SegmentationSample,
    prepare, resize_mask_nearest, resize_rgb, resize_sample,
};
use magma_tensor::SeededRng;

/// A `w × h` sample with varied pixels and a mask of `labels` in vertical bands.
fn sample(w: usize, h: usize, labels: &[u8]) -> SegmentationSample {
    let image = RgbImage {
        width: w,
        height: h,
        data: (0..w * h * 3)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect(),
    };
    let mask = Mask {
        width: w,
        height: h,
        data: (0..w * h)
            .map(|i| labels[(i % w) * labels.len() / w])
            .collect(),
    };
    SegmentationSample {
        name: "s".into(),
        image,
        mask,
    }
}

fn values(mask: &[u8]) -> BTreeSet<u8> {
    mask.iter().copied().collect()
}

#[test]
fn normalisation_is_exact_per_channel_and_channels_first() {
    let s = sample(4, 3, &[1, 2]);
    let mut pre = Preprocess::new([3, 4]);
    pre.mean = [0.1, 0.5, 0.9];
    pre.std = [0.2, 0.25, 0.5];
    let out = prepare(&s, &pre, None).unwrap();
    assert_eq!(
        (out.size, out.image.len(), out.mask.len()),
        ([3, 4], 36, 12)
    );
    assert_eq!(out.mask, s.mask.data);
    for c in 0..3 {
        for i in 0..12 {
            let v = f64::from(s.image.data[i * 3 + c]);
            let expected = (v / 255.0 - f64::from(pre.mean[c])) / f64::from(pre.std[c]);
            let got = f64::from(out.image[c * 12 + i]);
            assert!(
                (got - expected).abs() < 1e-6,
                "c {c} i {i}: {got} vs {expected}"
            );
        }
    }
}

#[test]
fn hflip_flips_image_and_mask_together_exactly() {
    let s = sample(7, 5, &[0, 1, 2, 3, 4, 5, 6]);
    let pre = Preprocess::new([5, 7]);
    let plain = prepare(&s, &pre, None).unwrap();
    let (mut flipped, mut kept) = (0, 0);
    for seed in 0..40 {
        let mut rng = SeededRng::new(seed);
        let out = prepare(&s, &pre, Some((&Augment::hflip_only(), &mut rng))).unwrap();
        if out == plain {
            kept += 1;
            continue;
        }
        flipped += 1;
        for y in 0..5 {
            for x in 0..7 {
                assert_eq!(out.mask[y * 7 + x], plain.mask[y * 7 + 6 - x]);
                for c in 0..3 {
                    assert_eq!(
                        out.image[c * 35 + y * 7 + x],
                        plain.image[c * 35 + y * 7 + 6 - x]
                    );
                }
            }
        }
    }
    assert!(flipped > 5 && kept > 5, "flipped {flipped}, kept {kept}");
}

#[test]
fn augmentation_is_deterministic_for_a_seed() {
    let s = sample(60, 45, &[0, 1, 2]);
    let pre = Preprocess::new([32, 32]);
    let run = |seed| {
        let mut rng = SeededRng::new(seed);
        prepare(&s, &pre, Some((&Augment::standard(), &mut rng))).unwrap()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn masks_after_any_augmentation_hold_only_input_labels_and_pad_label() {
    let s = sample(50, 40, &[0, 3, 7, 3]);
    let allowed: BTreeSet<u8> = [0, 3, 7, 200].into();
    let mut strong = Augment::standard();
    strong.max_rotation_deg = 40.0;
    strong.max_scale = 0.4;
    strong.random_resized_crop = Some([0.2, 1.0]);
    let mut saw_pad = false;
    for resize in [
        ResizeMode::Stretch,
        ResizeMode::KeepAspectPad,
        ResizeMode::KeepAspectCrop,
    ] {
        for interpolation in [Interpolation::Bilinear, Interpolation::Area] {
            let mut pre = Preprocess::new([24, 36]);
            pre.resize = resize;
            pre.interpolation = interpolation;
            pre.pad_label = 200;
            for seed in 0..12 {
                let mut rng = SeededRng::new(seed);
                let out = prepare(&s, &pre, Some((&strong, &mut rng))).unwrap();
                let seen = values(&out.mask);
                assert!(seen.is_subset(&allowed), "{resize:?} seed {seed}: {seen:?}");
                saw_pad |= seen.contains(&200);
                assert_eq!(out.image.len(), 3 * 24 * 36);
                assert!(out.image.iter().all(|v| v.is_finite()));
            }
        }
    }
    assert!(saw_pad, "rotation never uncovered a pixel");
}

#[test]
fn colour_jitter_changes_the_image_only() {
    let s = sample(16, 12, &[0, 1]);
    let pre = Preprocess::new([12, 16]);
    let plain = prepare(&s, &pre, None).unwrap();
    let jitter = Augment {
        color_jitter: 0.5,
        ..Augment::none()
    };
    let out = prepare(&s, &pre, Some((&jitter, &mut SeededRng::new(1)))).unwrap();
    assert_eq!(out.mask, plain.mask);
    assert_ne!(out.image, plain.image);
}

#[test]
fn keep_aspect_pad_centres_the_image_and_pads_the_mask() {
    // 20 wide, 10 high into 20 × 20: 5 padded rows above and below.
    let s = sample(20, 10, &[1, 2]);
    let pre = Preprocess::new([20, 20]);
    let pre = Preprocess {
        resize: ResizeMode::KeepAspectPad,
        ..pre
    };
    let out = prepare(&s, &pre, None).unwrap();
    for y in 0..20 {
        let row = &out.mask[y * 20..(y + 1) * 20];
        if (5..15).contains(&y) {
            assert_eq!(row, &s.mask.data[(y - 5) * 20..(y - 4) * 20], "row {y}");
        } else {
            assert!(row.iter().all(|&v| v == 255), "row {y}");
            // The pad colour is the mean: about 0 after normalisation.
            for c in 0..3 {
                assert!(out.image[c * 400 + y * 20].abs() < 0.02);
            }
        }
    }
}

#[test]
fn keep_aspect_crop_takes_the_centre() {
    let s = sample(20, 10, &[0, 1, 2, 3]);
    let pre = Preprocess {
        resize: ResizeMode::KeepAspectCrop,
        ..Preprocess::new([10, 10])
    };
    let out = resize_sample(&s, &pre).unwrap();
    for y in 0..10 {
        assert_eq!(
            &out.mask.data[y * 10..(y + 1) * 10],
            &s.mask.data[y * 20 + 5..y * 20 + 15]
        );
        assert_eq!(
            &out.image.data[y * 30..(y + 1) * 30],
            &s.image.data[(y * 20 + 5) * 3..(y * 20 + 15) * 3]
        );
    }
}

#[test]
fn nearest_mask_resize_samples_pixel_centres() {
    let mask = Mask {
        width: 6,
        height: 4,
        data: (0..24).collect(),
    };
    let half = resize_mask_nearest(&mask, [2, 3]);
    assert_eq!(half.data, [7, 9, 11, 19, 21, 23]);
    let double = resize_mask_nearest(&mask, [8, 12]);
    assert_eq!(&double.data[..12], &[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(values(&double.data), values(&mask.data));
}

#[test]
fn image_resize_keeps_a_flat_colour_flat_with_both_interpolations() {
    let image = RgbImage {
        width: 37,
        height: 23,
        data: [10u8, 200, 90].repeat(37 * 23),
    };
    for interpolation in [Interpolation::Bilinear, Interpolation::Area] {
        for size in [[8, 8], [50, 70]] {
            let out = resize_rgb(&image, size, interpolation).unwrap();
            assert_eq!((out.height, out.width), (size[0], size[1]));
            assert!(
                out.data.chunks_exact(3).all(|p| p == [10, 200, 90]),
                "{interpolation:?} {size:?}"
            );
        }
    }
}

#[test]
fn area_interpolation_averages_when_shrinking() {
    // A 1-pixel checkerboard shrunk 4×: area gives the average grey, bilinear does not.
    let image = RgbImage {
        width: 16,
        height: 16,
        data: (0..256)
            .flat_map(|i| [if (i % 16 + i / 16) % 2 == 0 { 0u8 } else { 200 }; 3])
            .collect(),
    };
    let area = resize_rgb(&image, [4, 4], Interpolation::Area).unwrap();
    assert!(
        area.data.iter().all(|&v| v == 100),
        "{:?}",
        &area.data[..12]
    );
}

#[test]
fn inconsistent_inputs_are_errors_naming_the_sample() {
    let mut s = sample(8, 6, &[0]);
    s.name = "Cat_9".into();
    s.mask.width = 6;
    s.mask.height = 8;
    let err = prepare(&s, &Preprocess::new([4, 4]), None).unwrap_err();
    assert!(
        matches!(&err, DataError::Preprocess { name, .. } if name == "Cat_9"),
        "{err}"
    );
    let ok = sample(8, 6, &[0]);
    let mut pre = Preprocess::new([4, 4]);
    pre.std[1] = 0.0;
    assert!(prepare(&ok, &pre, None).is_err());
    let bad_crop = Augment {
        random_resized_crop: Some([0.0, 1.0]),
        ..Augment::none()
    };
    assert!(
        prepare(
            &ok,
            &Preprocess::new([4, 4]),
            Some((&bad_crop, &mut SeededRng::new(0)))
        )
        .is_err()
    );
    assert!(prepare(&ok, &Preprocess::new([0, 4]), None).is_err());
}
