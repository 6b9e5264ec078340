//! The CPU's Gaussian pixel-weight map (moved here from `dnn-layers`) and its counter-based
//! dropout.

use dnn_ops::backend::*;
use dnn_ops::testing::random_tensor;
use dnn_ops::{CpuBackend, GaussianCenter, GaussianWeights, OpError, Tensor};
use magma_tensor::SeededRng;

/// The map as `dnn-layers` computed it before the move (kept verbatim as the reference).
fn old_pixel_weights(p: &GaussianWeights, labels: &Tensor) -> Vec<f32> {
    let &[n, h, w] = labels.shape() else {
        panic!("rank 3")
    };
    let l = labels.to_vec().unwrap();
    let sigma = p.sigma_scale * h.min(w) as f32;
    let inv = 1.0 / (2.0 * sigma * sigma);
    let mut out = vec![0.0f32; l.len()];
    for s in 0..n {
        let plane = &l[s * h * w..(s + 1) * h * w];
        let (mut sx, mut sy, mut count) = (0.0f64, 0.0f64, 0usize);
        if p.center == GaussianCenter::Centroid {
            for (i, &v) in plane.iter().enumerate() {
                if v >= 0.0
                    && p.foreground_classes.contains(&(v as usize))
                    && p.ignore_index != Some(v as i64)
                {
                    sx += (i % w) as f64;
                    sy += (i / w) as f64;
                    count += 1;
                }
            }
        }
        let (mx, my) = if count > 0 {
            ((sx / count as f64) as f32, (sy / count as f64) as f32)
        } else {
            ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0)
        };
        for (i, o) in out[s * h * w..(s + 1) * h * w].iter_mut().enumerate() {
            let (dx, dy) = ((i % w) as f32 - mx, (i / w) as f32 - my);
            *o = 1.0 + p.alpha * (-(dx * dx + dy * dy) * inv).exp();
        }
    }
    out
}

#[test]
fn gaussian_map_follows_the_formula_on_a_hand_computed_case() {
    // 1 sample, 8×10, class 0 occupies rows 1..=3, cols 6..=8 → centroid (x 7, y 2).
    let (h, w) = (8, 10);
    let mut l = vec![1.0f32; h * w];
    for y in 1..=3 {
        for x in 6..=8 {
            l[y * w + x] = 0.0;
        }
    }
    l[0] = 2.0;
    let labels = Tensor::from_vec(l, &[1, h, w]).unwrap();
    let p = GaussianWeights {
        alpha: 2.0,
        ..Default::default()
    };
    let wts = CpuBackend::new()
        .gaussian_pixel_weights(&labels, &p)
        .unwrap();
    assert_eq!(wts.shape(), &[1, h, w]);
    // σ = 0.25·8 = 2, 2σ² = 8: w = 1 + 2·exp(−d²/8).
    for (y, x, want) in [
        (2usize, 7usize, 3.0f32),
        (2, 9, 1.0 + 2.0 * (-0.5f32).exp()),
        (0, 0, 1.0 + 2.0 * (-53.0f32 / 8.0).exp()),
        (5, 3, 1.0 + 2.0 * (-25.0f32 / 8.0).exp()),
    ] {
        let got = wts.get(&[0, y, x]).unwrap();
        assert!((got - want).abs() < 1e-6, "({y},{x}): {got} vs {want}");
    }
    // No foreground: centred on ((W−1)/2, (H−1)/2) = (4.5, 3.5), like ImageCenter.
    let empty = Tensor::full(&[1, h, w], 1.0);
    let centre = CpuBackend::new()
        .gaussian_pixel_weights(&empty, &p)
        .unwrap();
    let fixed = CpuBackend::new()
        .gaussian_pixel_weights(
            &labels,
            &GaussianWeights {
                center: GaussianCenter::ImageCenter,
                ..p.clone()
            },
        )
        .unwrap();
    assert_eq!(centre.to_vec().unwrap(), fixed.to_vec().unwrap());
    let want = 1.0 + 2.0 * (-(0.25f32 + 0.25) / 8.0).exp();
    assert!((centre.get(&[0, 3, 4]).unwrap() - want).abs() < 1e-6);
}

#[test]
fn gaussian_map_gives_the_same_values_as_before_the_move() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(11);
    for shape in [[1usize, 1, 1], [2, 8, 10], [3, 31, 17], [2, 64, 64]] {
        let n: usize = shape.iter().product();
        let labels = Tensor::from_vec(
            (0..n)
                .map(|_| match rng.below(6) {
                    5 => 255.0,
                    k => (k % 3) as f32,
                })
                .collect(),
            &shape,
        )
        .unwrap();
        for p in [
            GaussianWeights::default(),
            GaussianWeights {
                alpha: 0.5,
                sigma_scale: 0.4,
                foreground_classes: vec![1, 2],
                ignore_index: Some(255),
                ..Default::default()
            },
            GaussianWeights {
                foreground_classes: vec![255],
                ignore_index: Some(255),
                ..Default::default()
            },
            GaussianWeights {
                center: GaussianCenter::ImageCenter,
                ..Default::default()
            },
        ] {
            let new = be
                .gaussian_pixel_weights(&labels, &p)
                .unwrap()
                .to_vec()
                .unwrap();
            assert_eq!(new, old_pixel_weights(&p, &labels), "{shape:?} {p:?}");
        }
    }
}

#[test]
fn gaussian_map_refuses_bad_parameters_with_typed_errors() {
    let be = CpuBackend::new();
    let labels = Tensor::zeros(&[1, 4, 4]);
    for p in [
        GaussianWeights {
            alpha: -1.0,
            ..Default::default()
        },
        GaussianWeights {
            sigma_scale: 0.0,
            ..Default::default()
        },
        GaussianWeights {
            alpha: f32::NAN,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            be.gaussian_pixel_weights(&labels, &p),
            Err(OpError::Attr { .. })
        ));
    }
    assert!(matches!(
        be.gaussian_pixel_weights(&Tensor::zeros(&[4, 4]), &GaussianWeights::default()),
        Err(OpError::Shape { .. })
    ));
    let empty = be
        .gaussian_pixel_weights(&Tensor::zeros(&[0, 4, 4]), &GaussianWeights::default())
        .unwrap();
    assert_eq!(empty.shape(), &[0, 4, 4]);
}

#[test]
fn dropout_mask_is_zero_or_the_inverse_keep_rate_and_a_function_of_the_seed() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(12);
    let x = random_tensor(&[4, 25_000], &mut rng, 0.01);
    for p in [0.0f32, 0.1, 0.3, 0.75] {
        let (y, mask) = be.dropout(&x, p, 99).unwrap();
        let keep = 1.0 / (1.0 - p);
        let m = mask.to_vec().unwrap();
        assert!(m.iter().all(|&v| v == 0.0 || v == keep), "p {p}");
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - (1.0 - p as f64)).abs() < 0.01, "p {p}: kept {kept}");
        for ((&yv, &xv), &mv) in y.to_vec().unwrap().iter().zip(&x.to_vec().unwrap()).zip(&m) {
            assert_eq!(yv, xv * mv);
        }
        // Deterministic by seed, different across seeds (for p > 0).
        let (_, again) = be.dropout(&x, p, 99).unwrap();
        assert_eq!(again.to_vec().unwrap(), m);
        if p > 0.0 {
            let (_, other) = be.dropout(&x, p, 100).unwrap();
            assert_ne!(other.to_vec().unwrap(), m);
        }
    }
    // The mask depends on the element index alone: a prefix of a longer tensor has the same mask.
    let (_, long) = be.dropout(&Tensor::ones(&[1000]), 0.5, 7).unwrap();
    let (_, short) = be.dropout(&Tensor::ones(&[10, 10]), 0.5, 7).unwrap();
    assert_eq!(long.to_vec().unwrap()[..100], short.to_vec().unwrap()[..]);
    for p in [1.0, -0.1, f32::NAN] {
        assert!(matches!(
            be.dropout(&x, p, 0),
            Err(OpError::Attr { op: "dropout", .. })
        ));
    }
}
