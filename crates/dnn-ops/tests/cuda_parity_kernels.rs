#![cfg(feature = "cuda")]
//! Parity of the CUDA backend's own kernels (`cuda/*.cu`) with the CPU reference: elementwise
//! ops and reductions, dropout masks, concat/split/pad/crop, bilinear resampling and its
//! backward, the losses and their gradients, the Gaussian pixel-weight map, optimizer updates
//! over several steps and the confusion matrix; bad labels and shapes give the CPU's typed
//! errors, and reductions are bit-identical from run to run.

use dnn_ops::backend::*;
use dnn_ops::cuda::{CudaBackend, test_backend};
use dnn_ops::testing::{assert_close, random_tensor};
use dnn_ops::{
    AdagradStep, AdamStep, CpuBackend, GaussianCenter, GaussianWeights, OpError, RmsPropStep,
    SgdStep, Tensor,
};
use magma_tensor::SeededRng;

const TOL: f64 = 1e-4;

fn gpu() -> Option<&'static CudaBackend> {
    let be = test_backend();
    if be.is_none() {
        eprintln!("no CUDA device: CUDA parity test skipped");
    }
    be
}

/// Shapes of rank 1 to 4 with odd sizes, plus one large enough for many reduction blocks.
const SHAPES: &[&[usize]] = &[
    &[7],
    &[3, 5],
    &[2, 3, 17],
    &[1, 1, 1, 1],
    &[2, 3, 5, 7],
    &[3, 5, 33, 31],
    &[4, 16, 97, 101],
];

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The same error from both backends (compared by message: NaN labels are not `==`).
#[track_caller]
fn same_error<T: std::fmt::Debug, U: std::fmt::Debug>(
    what: &str,
    gpu: Result<T, OpError>,
    cpu: Result<U, OpError>,
) {
    let (g, c) = (gpu.unwrap_err(), cpu.unwrap_err());
    assert_eq!(
        std::mem::discriminant(&g),
        std::mem::discriminant(&c),
        "{what}: {g} vs {c}"
    );
    assert_eq!(g.to_string(), c.to_string(), "{what}");
}

/// Integer labels `[N, ...]` in `0..c`, about one in `ignore_every` set to 255 (when given).
fn labels(shape: &[usize], c: usize, ignore_every: Option<usize>, rng: &mut SeededRng) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| match ignore_every {
            Some(k) if rng.below(k) == 0 => 255.0,
            _ => rng.below(c) as f32,
        })
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn elementwise_ops_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(1);
    for &shape in SHAPES {
        let a = random_tensor(shape, &mut rng, 0.0);
        let b = random_tensor(shape, &mut rng, 0.0);
        let name = |op: &str| format!("{op} {shape:?}");
        assert_close(
            &name("add"),
            &gpu.add(&a, &b).unwrap(),
            &cpu.add(&a, &b).unwrap(),
            TOL,
        );
        assert_close(
            &name("sub"),
            &gpu.sub(&a, &b).unwrap(),
            &cpu.sub(&a, &b).unwrap(),
            TOL,
        );
        assert_close(
            &name("mul"),
            &gpu.mul(&a, &b).unwrap(),
            &cpu.mul(&a, &b).unwrap(),
            TOL,
        );
        assert_close(
            &name("affine"),
            &gpu.affine(&a, -1.5, 0.25).unwrap(),
            &cpu.affine(&a, -1.5, 0.25).unwrap(),
            TOL,
        );
        let s = gpu.sum_all(&a).unwrap();
        assert_eq!(s.shape(), cpu.sum_all(&a).unwrap().shape());
        assert_close(&name("sum_all"), &s, &cpu.sum_all(&a).unwrap(), TOL);
        assert_eq!(
            bits(&s),
            bits(&gpu.sum_all(&a).unwrap()),
            "sum_all deterministic"
        );
        if shape.len() >= 2 {
            let c = shape[1];
            let bias = random_tensor(&[c], &mut rng, 0.0);
            assert_close(
                &name("add_channel_bias"),
                &gpu.add_channel_bias(&a, &bias).unwrap(),
                &cpu.add_channel_bias(&a, &bias).unwrap(),
                TOL,
            );
            let s = gpu.sum_per_channel(&a).unwrap();
            assert_close(
                &name("sum_per_channel"),
                &s,
                &cpu.sum_per_channel(&a).unwrap(),
                TOL,
            );
            assert_eq!(
                bits(&s),
                bits(&gpu.sum_per_channel(&a).unwrap()),
                "sum_per_channel deterministic"
            );
        }
        // Operands on the device already (the usual case inside a training step).
        let (da, db) = (gpu.full(shape, 0.5).unwrap(), gpu.add(&a, &b).unwrap());
        assert_close(
            &name("device operands"),
            &gpu.mul(&da, &db).unwrap(),
            &cpu.mul(&Tensor::full(shape, 0.5), &cpu.add(&a, &b).unwrap())
                .unwrap(),
            TOL,
        );
        assert_close(
            &name("full"),
            &gpu.full(shape, 3.25).unwrap(),
            &cpu.full(shape, 3.25).unwrap(),
            TOL,
        );
        let v = Tensor::scalar(-2.5);
        let dv = gpu.full(&[1], -2.5).unwrap();
        let want = cpu.broadcast_scalar(&v, shape).unwrap();
        assert_close(
            &name("broadcast_scalar"),
            &gpu.broadcast_scalar(&v, shape).unwrap(),
            &want,
            TOL,
        );
        assert_close(
            &name("broadcast_scalar dev"),
            &gpu.broadcast_scalar(&dv, shape).unwrap(),
            &want,
            TOL,
        );
    }
    // A sum over many blocks is bit-identical across runs and close to the f64 CPU sum.
    let big = random_tensor(&[3, 1_000_003], &mut rng, 0.0);
    let s1 = gpu.sum_all(&big).unwrap();
    for _ in 0..3 {
        assert_eq!(bits(&s1), bits(&gpu.sum_all(&big).unwrap()));
    }
    assert_close("sum_all big", &s1, &cpu.sum_all(&big).unwrap(), TOL);
    // Typed errors.
    let (a, b) = (Tensor::zeros(&[2, 3]), Tensor::zeros(&[3, 2]));
    same_error("add shapes", gpu.add(&a, &b), cpu.add(&a, &b));
    same_error("mul shapes", gpu.mul(&a, &b), cpu.mul(&a, &b));
    let bias = Tensor::zeros(&[2]);
    same_error(
        "bias shape",
        gpu.add_channel_bias(&a, &bias),
        cpu.add_channel_bias(&a, &bias),
    );
    let v = Tensor::zeros(&[2]);
    same_error(
        "broadcast of two values",
        gpu.broadcast_scalar(&v, &[3]),
        cpu.broadcast_scalar(&v, &[3]),
    );
    same_error(
        "sum_per_channel rank 1",
        gpu.sum_per_channel(&Tensor::zeros(&[4])),
        cpu.sum_per_channel(&Tensor::zeros(&[4])),
    );
}

#[test]
fn dropout_masks_are_identical_to_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(2);
    for &shape in SHAPES {
        let x = random_tensor(shape, &mut rng, 0.0);
        for (p, seed) in [(0.0, 1), (0.1, 7), (0.5, 42), (0.9, u64::MAX)] {
            let (gy, gm) = gpu.dropout(&x, p, seed).unwrap();
            let (cy, cm) = cpu.dropout(&x, p, seed).unwrap();
            assert_eq!(bits(&gm), bits(&cm), "mask {shape:?} p {p} seed {seed}");
            assert_eq!(bits(&gy), bits(&cy), "output {shape:?} p {p} seed {seed}");
        }
    }
    let x = Tensor::zeros(&[4]);
    for p in [1.0, -0.1, f32::NAN] {
        same_error("dropout p", gpu.dropout(&x, p, 0), cpu.dropout(&x, p, 0));
    }
}

#[test]
fn concat_split_pad_crop_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(3);
    let base = [2usize, 3, 5, 7];
    for dim in 0..4 {
        let sizes = [1usize, 4, 2];
        let parts: Vec<Tensor> = sizes
            .iter()
            .map(|&s| {
                let mut shape = base;
                shape[dim] = s;
                random_tensor(&shape, &mut rng, 0.0)
            })
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let g = gpu.concat(&refs, dim).unwrap();
        let c = cpu.concat(&refs, dim).unwrap();
        assert_eq!(g.shape(), c.shape());
        assert_eq!(bits(&g), bits(&c), "concat dim {dim}");
        let gs = gpu.split(&g, dim, &sizes).unwrap();
        let cs = cpu.split(&c, dim, &sizes).unwrap();
        assert_eq!(gs.len(), cs.len());
        for (k, (a, b)) in gs.iter().zip(&cs).enumerate() {
            assert_eq!(a.shape(), b.shape());
            assert_eq!(bits(a), bits(b), "split dim {dim} part {k}");
            assert_eq!(bits(a), bits(&parts[k]), "split undoes concat");
        }
        // A zero-sized part.
        let gs = gpu.split(&g, dim, &[0, c.shape()[dim]]).unwrap();
        assert_eq!(gs[0].numel(), 0);
        assert_eq!(bits(&gs[1]), bits(&c));
    }
    for shape in [[1usize, 1, 1, 1], [2, 3, 5, 7], [3, 4, 33, 17]] {
        let x = random_tensor(&shape, &mut rng, 0.0);
        for pads in [[0, 0, 0, 0], [1, 2, 3, 0], [0, 5, 1, 1]] {
            let g = gpu.pad2d(&x, pads).unwrap();
            let c = cpu.pad2d(&x, pads).unwrap();
            assert_eq!(g.shape(), c.shape());
            assert_eq!(bits(&g), bits(&c), "pad2d {shape:?} {pads:?}");
            let back = gpu.crop2d(&g, pads).unwrap();
            assert_eq!(bits(&back), bits(&x), "crop2d undoes pad2d");
        }
        if shape[2] > 3 && shape[3] > 3 {
            let pads = [1, 2, 0, 3];
            let g = gpu.crop2d(&x, pads).unwrap();
            let c = cpu.crop2d(&x, pads).unwrap();
            assert_eq!(g.shape(), c.shape());
            assert_eq!(bits(&g), bits(&c), "crop2d {shape:?}");
        }
    }
    let x = Tensor::zeros(&[2, 3, 4, 4]);
    let y = Tensor::zeros(&[2, 2, 4, 4]);
    same_error(
        "concat mismatch",
        gpu.concat(&[&x, &y], 0),
        cpu.concat(&[&x, &y], 0),
    );
    same_error("concat dim", gpu.concat(&[&x], 4), cpu.concat(&[&x], 4));
    same_error("concat empty", gpu.concat(&[], 0), cpu.concat(&[], 0));
    same_error(
        "split sizes",
        gpu.split(&x, 1, &[1, 1]),
        cpu.split(&x, 1, &[1, 1]),
    );
    same_error(
        "crop all",
        gpu.crop2d(&x, [2, 2, 0, 0]),
        cpu.crop2d(&x, [2, 2, 0, 0]),
    );
    same_error(
        "pad rank",
        gpu.pad2d(&Tensor::zeros(&[3, 4]), [1, 1, 1, 1]),
        cpu.pad2d(&Tensor::zeros(&[3, 4]), [1, 1, 1, 1]),
    );
}

#[test]
fn bilinear_resampling_and_its_backward_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(4);
    let cases: &[([usize; 4], [usize; 2])] = &[
        ([1, 1, 1, 1], [3, 4]),
        ([2, 3, 5, 7], [10, 14]),
        ([2, 3, 5, 7], [11, 13]),
        ([1, 2, 17, 19], [8, 5]),
        ([2, 2, 4, 4], [1, 1]),
        ([1, 3, 9, 6], [9, 6]),
        ([2, 4, 32, 32], [64, 64]),
        ([1, 2, 7, 3], [50, 2]),
        ([1, 1, 64, 48], [7, 61]),
    ];
    for &(shape, out_hw) in cases {
        let x = random_tensor(&shape, &mut rng, 0.0);
        let g = gpu.upsample_bilinear(&x, out_hw).unwrap();
        let c = cpu.upsample_bilinear(&x, out_hw).unwrap();
        assert_eq!(g.shape(), c.shape());
        assert_close(&format!("upsample {shape:?} -> {out_hw:?}"), &g, &c, TOL);
        let dy = random_tensor(c.shape(), &mut rng, 0.0);
        let gd = gpu.upsample_bilinear_backward(&dy, shape).unwrap();
        let cd = cpu.upsample_bilinear_backward(&dy, shape).unwrap();
        assert_close(
            &format!("upsample backward {shape:?} -> {out_hw:?}"),
            &gd,
            &cd,
            TOL,
        );
        assert_eq!(
            bits(&gd),
            bits(&gpu.upsample_bilinear_backward(&dy, shape).unwrap()),
            "backward deterministic"
        );
    }
    let x = Tensor::zeros(&[1, 1, 4, 4]);
    same_error(
        "upsample to zero",
        gpu.upsample_bilinear(&x, [0, 3]),
        cpu.upsample_bilinear(&x, [0, 3]),
    );
    same_error(
        "backward channels",
        gpu.upsample_bilinear_backward(&x, [1, 2, 2, 2]),
        cpu.upsample_bilinear_backward(&x, [1, 2, 2, 2]),
    );
}

#[test]
fn losses_and_their_gradients_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(5);
    let cases: &[&[usize]] = &[
        &[5, 3],
        &[1, 1, 1, 1],
        &[2, 3, 5, 7],
        &[3, 4, 33, 31],
        &[2, 21, 64, 48],
    ];
    for &shape in cases {
        let c = shape[1];
        let logits = random_tensor(shape, &mut rng, 0.0)
            .map(|v| 3.0 * v)
            .unwrap();
        let mut lshape = vec![shape[0]];
        lshape.extend_from_slice(&shape[2..]);
        for ignore in [None, Some(255i64)] {
            let lab = labels(&lshape, c, ignore.map(|_| 4), &mut rng);
            if lab.to_vec().unwrap().iter().all(|&v| v == 255.0) {
                continue;
            }
            let what = |op: &str| format!("{op} {shape:?} ignore {ignore:?}");
            // Plain and class-weighted cross-entropy.
            let cw = Tensor::from_vec((0..c).map(|k| 0.5 + k as f32).collect(), &[c]).unwrap();
            for weights in [None, Some(&cw)] {
                let (gl, gg) = gpu.cross_entropy(&logits, &lab, weights, ignore).unwrap();
                let (cl, cg) = cpu.cross_entropy(&logits, &lab, weights, ignore).unwrap();
                assert_eq!(gl.shape(), cl.shape());
                assert_close(&what("ce loss"), &gl, &cl, TOL);
                assert_close(&what("ce grad"), &gg, &cg, TOL);
                let (gl2, gg2) = gpu.cross_entropy(&logits, &lab, weights, ignore).unwrap();
                assert_eq!(bits(&gl), bits(&gl2), "ce loss deterministic");
                assert_eq!(bits(&gg), bits(&gg2), "ce grad deterministic");
            }
            // Pixel-weighted cross-entropy, weights on the host and on the device.
            let pw = random_tensor(&lshape, &mut rng, 0.0)
                .map(|v| v.abs() + 0.1)
                .unwrap();
            let (cl, cg) = cpu
                .pixel_weighted_cross_entropy(&logits, &lab, &pw, ignore)
                .unwrap();
            for pw in [pw.clone(), gpu.affine(&pw, 1.0, 0.0).unwrap()] {
                let (gl, gg) = gpu
                    .pixel_weighted_cross_entropy(&logits, &lab, &pw, ignore)
                    .unwrap();
                assert_close(&what("pixel ce loss"), &gl, &cl, TOL);
                assert_close(&what("pixel ce grad"), &gg, &cg, TOL);
                let (gl2, _) = gpu
                    .pixel_weighted_cross_entropy(&logits, &lab, &pw, ignore)
                    .unwrap();
                assert_eq!(bits(&gl), bits(&gl2), "pixel ce deterministic");
            }
            // Soft Dice, labels on the host and on the device.
            let dev_lab = gpu.affine(&lab, 1.0, 0.0).unwrap();
            for eps in [1.0, 1e-3] {
                let (cl, cg) = cpu.soft_dice(&logits, &lab, eps, ignore).unwrap();
                for l in [&lab, &dev_lab] {
                    let (gl, gg) = gpu.soft_dice(&logits, l, eps, ignore).unwrap();
                    assert_close(&what("dice loss"), &gl, &cl, TOL);
                    assert_close(&what("dice grad"), &gg, &cg, TOL);
                    let (gl2, gg2) = gpu.soft_dice(&logits, l, eps, ignore).unwrap();
                    assert_eq!(bits(&gl), bits(&gl2), "dice loss deterministic");
                    assert_eq!(bits(&gg), bits(&gg2), "dice grad deterministic");
                }
            }
        }
    }
}

#[test]
fn bad_labels_and_shapes_give_the_cpu_errors() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let logits = Tensor::zeros(&[2, 3, 2, 2]);
    let good =
        Tensor::from_vec(vec![0.0, 1.0, 2.0, 1.0, 0.0, 2.0, 1.0, 255.0], &[2, 2, 2]).unwrap();
    let mut bad_labels = Vec::new();
    for (i, v) in [
        (3usize, 3.0f32),
        (5, -1.0),
        (1, 0.5),
        (6, f32::NAN),
        (7, f32::INFINITY),
    ] {
        let mut l = good.to_vec().unwrap();
        l[i] = v;
        bad_labels.push(Tensor::from_vec(l, &[2, 2, 2]).unwrap());
    }
    bad_labels.push(Tensor::full(&[2, 2, 2], 255.0)); // all ignored
    bad_labels.push(Tensor::zeros(&[2, 4])); // wrong shape
    bad_labels.push(Tensor::zeros(&[2, 2, 3])); // wrong shape
    let pw = Tensor::ones(&[2, 2, 2]);
    for lab in &bad_labels {
        let on_dev = gpu.affine(lab, 1.0, 0.0).unwrap();
        for l in [lab, &on_dev] {
            same_error(
                "ce",
                gpu.cross_entropy(&logits, l, None, Some(255)),
                cpu.cross_entropy(&logits, lab, None, Some(255)),
            );
            same_error(
                "pixel ce",
                gpu.pixel_weighted_cross_entropy(&logits, l, &pw, Some(255)),
                cpu.pixel_weighted_cross_entropy(&logits, lab, &pw, Some(255)),
            );
            same_error(
                "dice",
                gpu.soft_dice(&logits, l, 1.0, Some(255)),
                cpu.soft_dice(&logits, lab, 1.0, Some(255)),
            );
            if lab.shape() == good.shape() && lab.to_vec().unwrap().iter().any(|&v| v != 255.0) {
                same_error(
                    "confusion",
                    gpu.confusion_matrix(&logits, l, Some(255)),
                    cpu.confusion_matrix(&logits, lab, Some(255)),
                );
            }
        }
    }
    // A label of 255 without an ignore index is out of range.
    same_error(
        "no ignore",
        gpu.cross_entropy(&logits, &good, None, None),
        cpu.cross_entropy(&logits, &good, None, None),
    );
    same_error(
        "confusion no ignore",
        gpu.confusion_matrix(&logits, &good, None),
        cpu.confusion_matrix(&logits, &good, None),
    );
    // Class weights of the wrong shape, or weighing nothing.
    let cw = Tensor::ones(&[2]);
    same_error(
        "class weights shape",
        gpu.cross_entropy(&logits, &good, Some(&cw), Some(255)),
        cpu.cross_entropy(&logits, &good, Some(&cw), Some(255)),
    );
    let cw = Tensor::zeros(&[3]);
    same_error(
        "class weights zero",
        gpu.cross_entropy(&logits, &good, Some(&cw), Some(255)),
        cpu.cross_entropy(&logits, &good, Some(&cw), Some(255)),
    );
    // Pixel weights: wrong shape, negative, NaN, all counted ones zero.
    let mut bad_weights = vec![Tensor::ones(&[2, 4])];
    for (i, v) in [(2usize, -1.0f32), (4, f32::NAN), (7, -0.5)] {
        let mut w = vec![1.0f32; 8];
        w[i] = v;
        w[1] = if i == 4 { -3.0 } else { 1.0 };
        bad_weights.push(Tensor::from_vec(w, &[2, 2, 2]).unwrap());
    }
    let mut only_ignored = vec![0.0f32; 8];
    only_ignored[7] = 2.0;
    bad_weights.push(Tensor::from_vec(only_ignored, &[2, 2, 2]).unwrap());
    for w in &bad_weights {
        let on_dev = gpu.affine(w, 1.0, 0.0).unwrap();
        for dw in [w, &on_dev] {
            same_error(
                "pixel weights",
                gpu.pixel_weighted_cross_entropy(&logits, &good, dw, Some(255)),
                cpu.pixel_weighted_cross_entropy(&logits, &good, w, Some(255)),
            );
        }
    }
    for eps in [0.0, -1.0, f32::NAN] {
        same_error(
            "dice eps",
            gpu.soft_dice(&logits, &good, eps, Some(255)),
            cpu.soft_dice(&logits, &good, eps, Some(255)),
        );
    }
    same_error(
        "logits rank",
        gpu.cross_entropy(&Tensor::zeros(&[3]), &good, None, None),
        cpu.cross_entropy(&Tensor::zeros(&[3]), &good, None, None),
    );
    // The Gaussian map's checks.
    let p = GaussianWeights::default();
    same_error(
        "gaussian rank",
        gpu.gaussian_pixel_weights(&Tensor::zeros(&[2, 3]), &p),
        cpu.gaussian_pixel_weights(&Tensor::zeros(&[2, 3]), &p),
    );
    for params in [
        GaussianWeights {
            alpha: -1.0,
            ..p.clone()
        },
        GaussianWeights {
            sigma_scale: 0.0,
            ..p.clone()
        },
        GaussianWeights {
            sigma_scale: f32::INFINITY,
            ..p.clone()
        },
    ] {
        same_error(
            "gaussian params",
            gpu.gaussian_pixel_weights(&good, &params),
            cpu.gaussian_pixel_weights(&good, &params),
        );
    }
}

#[test]
fn gaussian_pixel_weights_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(6);
    for shape in [
        [1usize, 1, 1],
        [2, 8, 10],
        [3, 37, 23],
        [4, 128, 96],
        [2, 300, 301],
    ] {
        let mut lab = labels(&shape, 3, Some(5), &mut rng);
        // One sample without any foreground: centred on the image.
        let mut v = lab.to_vec().unwrap();
        let hw = shape[1] * shape[2];
        for x in &mut v[..hw] {
            if *x == 0.0 || *x == 2.0 {
                *x = 1.0;
            }
        }
        lab = Tensor::from_vec(v, &shape).unwrap();
        for params in [
            GaussianWeights::default(),
            GaussianWeights {
                alpha: 2.5,
                sigma_scale: 0.1,
                foreground_classes: vec![2, 0, 2],
                ignore_index: Some(255),
                ..Default::default()
            },
            GaussianWeights {
                center: GaussianCenter::ImageCenter,
                ..Default::default()
            },
            GaussianWeights {
                foreground_classes: vec![],
                ..Default::default()
            },
            GaussianWeights {
                foreground_classes: vec![255],
                ignore_index: Some(255),
                ..Default::default()
            },
        ] {
            let g = gpu.gaussian_pixel_weights(&lab, &params).unwrap();
            let c = cpu.gaussian_pixel_weights(&lab, &params).unwrap();
            assert_eq!(g.shape(), c.shape());
            assert_close(&format!("gaussian {shape:?} {params:?}"), &g, &c, TOL);
            let on_dev = gpu.affine(&lab, 1.0, 0.0).unwrap();
            let g2 = gpu.gaussian_pixel_weights(&on_dev, &params).unwrap();
            assert_eq!(bits(&g), bits(&g2), "gaussian deterministic");
        }
    }
}

#[test]
fn optimizer_updates_match_the_cpu_over_several_steps() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(7);
    for shape in [vec![1usize], vec![3, 5], vec![17, 3, 3, 3], vec![64, 1000]] {
        let p0 = random_tensor(&shape, &mut rng, 0.0);
        let grads: Vec<Tensor> = (0..5)
            .map(|_| random_tensor(&shape, &mut rng, 0.0))
            .collect();
        let z = || Tensor::zeros(&shape);
        for (wd, decoupled) in [(0.0, false), (0.01, false), (0.05, true)] {
            let (mut gp, mut gm, mut gv) = (p0.clone(), z(), z());
            let (mut cp, mut cm, mut cv) = (p0.clone(), z(), z());
            for (t, g) in grads.iter().enumerate() {
                let step = AdamStep {
                    lr: 1e-2,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: wd,
                    decoupled_weight_decay: decoupled,
                    step: t as u64 + 1,
                };
                gpu.adam_step(&mut gp, g, &mut gm, &mut gv, &step).unwrap();
                cpu.adam_step(&mut cp, g, &mut cm, &mut cv, &step).unwrap();
            }
            let what = format!("adam {shape:?} wd {wd} decoupled {decoupled}");
            assert_close(&what, &gp, &cp, TOL);
            assert_close(&what, &gm, &cm, TOL);
            assert_close(&what, &gv, &cv, TOL);
        }
        for (momentum, nesterov, wd) in [(0.0, false, 0.0), (0.9, false, 1e-3), (0.9, true, 0.0)] {
            let (mut gp, mut gb) = (p0.clone(), z());
            let (mut cp, mut cb) = (p0.clone(), z());
            let step = SgdStep {
                lr: 0.05,
                momentum,
                nesterov,
                weight_decay: wd,
            };
            for g in &grads {
                gpu.sgd_step(&mut gp, g, &mut gb, &step).unwrap();
                cpu.sgd_step(&mut cp, g, &mut cb, &step).unwrap();
            }
            let what = format!("sgd {shape:?} momentum {momentum} nesterov {nesterov}");
            assert_close(&what, &gp, &cp, TOL);
            assert_close(&what, &gb, &cb, TOL);
        }
        for wd in [0.0, 0.01] {
            let (mut gp, mut ga) = (p0.clone(), z());
            let (mut cp, mut ca) = (p0.clone(), z());
            let step = AdagradStep {
                lr: 0.1,
                eps: 1e-10,
                weight_decay: wd,
            };
            for g in &grads {
                gpu.adagrad_step(&mut gp, g, &mut ga, &step).unwrap();
                cpu.adagrad_step(&mut cp, g, &mut ca, &step).unwrap();
            }
            assert_close(&format!("adagrad {shape:?}"), &gp, &cp, TOL);
            assert_close(&format!("adagrad sum {shape:?}"), &ga, &ca, TOL);
        }
        for (momentum, wd) in [(0.0, 0.0), (0.9, 0.01)] {
            let (mut gp, mut gs, mut gb) = (p0.clone(), z(), z());
            let (mut cp, mut cs, mut cb) = (p0.clone(), z(), z());
            let step = RmsPropStep {
                lr: 0.01,
                alpha: 0.99,
                eps: 1e-8,
                momentum,
                weight_decay: wd,
            };
            for g in &grads {
                gpu.rmsprop_step(&mut gp, g, &mut gs, &mut gb, &step)
                    .unwrap();
                cpu.rmsprop_step(&mut cp, g, &mut cs, &mut cb, &step)
                    .unwrap();
            }
            let what = format!("rmsprop {shape:?} momentum {momentum}");
            assert_close(&what, &gp, &cp, TOL);
            assert_close(&what, &gs, &cs, TOL);
            assert_close(&what, &gb, &cb, TOL);
        }
    }
    // The state migrated to the device, and the CPU's errors.
    let mut p = Tensor::zeros(&[3]);
    let (mut m, mut v) = (Tensor::zeros(&[3]), Tensor::zeros(&[3]));
    let step = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled_weight_decay: false,
        step: 1,
    };
    gpu.adam_step(&mut p, &Tensor::ones(&[3]), &mut m, &mut v, &step)
        .unwrap();
    assert!(p.device_ptr().is_ok() && m.device_ptr().is_ok() && v.device_ptr().is_ok());
    let (mut cp, mut cm, mut cv) = (
        Tensor::zeros(&[3]),
        Tensor::zeros(&[3]),
        Tensor::zeros(&[3]),
    );
    let step0 = AdamStep { step: 0, ..step };
    same_error(
        "adam step 0",
        gpu.adam_step(&mut p, &Tensor::ones(&[3]), &mut m, &mut v, &step0),
        cpu.adam_step(&mut cp, &Tensor::ones(&[3]), &mut cm, &mut cv, &step0),
    );
    same_error(
        "adam shapes",
        gpu.adam_step(&mut p, &Tensor::ones(&[4]), &mut m, &mut v, &step),
        cpu.adam_step(&mut cp, &Tensor::ones(&[4]), &mut cm, &mut cv, &step),
    );
}

#[test]
fn confusion_matrix_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(8);
    for shape in [
        vec![7usize, 4],
        vec![1, 1, 1, 1],
        vec![2, 3, 5, 7],
        vec![4, 21, 64, 48],
    ] {
        // Small integers: many ties, which go to the first maximum.
        let logits = random_tensor(&shape, &mut rng, 0.0)
            .map(|v| (v * 1.5).round())
            .unwrap();
        let c = shape[1];
        let mut lshape = vec![shape[0]];
        lshape.extend_from_slice(&shape[2..]);
        for ignore in [None, Some(255i64)] {
            let lab = labels(&lshape, c, ignore.map(|_| 3), &mut rng);
            let g = gpu.confusion_matrix(&logits, &lab, ignore).unwrap();
            let cpu_counts = cpu.confusion_matrix(&logits, &lab, ignore).unwrap();
            assert_eq!(g, cpu_counts, "confusion {shape:?} ignore {ignore:?}");
            let on_dev = gpu.affine(&logits, 1.0, 0.0).unwrap();
            assert_eq!(
                gpu.confusion_matrix(&on_dev, &lab, ignore).unwrap(),
                cpu_counts
            );
        }
    }
}

/// The multi-tensor Adam (one kernel over every parameter) gives bit for bit the values of one
/// `adam_step` per tensor, over tensors of very different sizes (one element to a whole
/// 4.7 M-weight layer) and an empty one, and refuses bad operands with the CPU's error.
/// Adam's operands over `state` (`[param, m, v]` per tensor) and `grads`, tensor by tensor.
fn adam_operands<'a>(
    state: &'a mut [[Tensor; 3]],
    grads: &'a [Tensor],
) -> Vec<dnn_ops::backend::AdamOperands<'a>> {
    state
        .iter_mut()
        .zip(grads)
        .map(|([p, m, v], grad)| dnn_ops::backend::AdamOperands {
            param: p,
            grad,
            m,
            v,
        })
        .collect()
}

#[test]
fn multi_tensor_adam_is_bit_identical_to_one_step_per_tensor() {
    use dnn_ops::backend::AdamOperands;
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(11);
    let shapes: Vec<Vec<usize>> = vec![
        vec![1],
        vec![64],
        vec![0],
        vec![17, 3, 3, 3],
        vec![1024, 512, 3, 3],
        vec![3, 5],
    ];
    let params: Vec<Tensor> = shapes
        .iter()
        .map(|s| random_tensor(s, &mut rng, 0.0))
        .collect();
    for (wd, decoupled) in [(0.0, false), (0.01, false), (0.05, true)] {
        let fresh = || -> Vec<[Tensor; 3]> {
            params
                .iter()
                .map(|p| {
                    [
                        p.clone(),
                        Tensor::zeros(p.shape()),
                        Tensor::zeros(p.shape()),
                    ]
                })
                .collect()
        };
        let (mut many, mut single, mut host) = (fresh(), fresh(), fresh());
        for t in 1..=3u64 {
            let step = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
                decoupled_weight_decay: decoupled,
                step: t,
            };
            let grads: Vec<Tensor> = shapes
                .iter()
                .map(|s| random_tensor(s, &mut rng, 0.0))
                .collect();
            let mut operands = adam_operands(&mut many, &grads);
            gpu.adam_step_many(&mut operands, &step).unwrap();
            for (([p, m, v], [cp, cm, cv]), g) in single.iter_mut().zip(host.iter_mut()).zip(&grads)
            {
                gpu.adam_step(p, g, m, v, &step).unwrap();
                cpu.adam_step(cp, g, cm, cv, &step).unwrap();
            }
        }
        for (i, ((a, b), c)) in many.iter().zip(&single).zip(&host).enumerate() {
            for k in 0..3 {
                let what = format!(
                    "tensor {i} {:?} slot {k} wd {wd} decoupled {decoupled}",
                    shapes[i]
                );
                assert_eq!(bits(&a[k]), bits(&b[k]), "{what}: multi vs single");
                assert_close(&what, &a[k], &c[k], TOL);
            }
        }
    }
    // A gradient of the wrong shape: the CPU's error.
    let step = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled_weight_decay: false,
        step: 1,
    };
    let [mut p, mut m, mut v] = [
        Tensor::zeros(&[3]),
        Tensor::zeros(&[3]),
        Tensor::zeros(&[3]),
    ];
    let [mut cp, mut cm, mut cv] = [
        Tensor::zeros(&[3]),
        Tensor::zeros(&[3]),
        Tensor::zeros(&[3]),
    ];
    let bad = Tensor::ones(&[4]);
    same_error(
        "adam_step_many shapes",
        gpu.adam_step_many(
            &mut [AdamOperands {
                param: &mut p,
                grad: &bad,
                m: &mut m,
                v: &mut v,
            }],
            &step,
        ),
        cpu.adam_step_many(
            &mut [AdamOperands {
                param: &mut cp,
                grad: &bad,
                m: &mut cm,
                v: &mut cv,
            }],
            &step,
        ),
    );
}

#[test]
fn upload_moves_a_host_tensor_to_the_device_ahead_of_use() {
    let Some(be) = gpu() else { return };
    let mut rng = SeededRng::new(41);
    let host = random_tensor(&[3, 3, 33, 31], &mut rng, 0.0);
    let on_device = Backend::upload(be, &host).unwrap();
    assert!(
        matches!(on_device.storage(), magma_tensor::Storage::Device(_)),
        "upload left the tensor on the host"
    );
    assert_eq!(on_device.shape(), host.shape());
    // Changing the host tensor afterwards does not change the queued copy.
    let expected = host.to_vec().unwrap();
    drop(host);
    assert_eq!(on_device.to_vec().unwrap(), expected);
    // Already on the device: shared, not copied; the CPU backend keeps host tensors as they are.
    let again = Backend::upload(be, &on_device).unwrap();
    assert_eq!(again.to_vec().unwrap(), expected);
    let cpu_host = random_tensor(&[2, 5], &mut rng, 0.0);
    let kept = Backend::upload(&CpuBackend, &cpu_host).unwrap();
    assert!(!matches!(kept.storage(), magma_tensor::Storage::Device(_)));
    assert_eq!(kept.to_vec().unwrap(), cpu_host.to_vec().unwrap());
    // Used by an op like any device tensor.
    let sum = be.sum_all(&on_device).unwrap().item().unwrap() as f64;
    let want: f64 = expected.iter().map(|&v| v as f64).sum();
    assert!(
        (sum - want).abs() < 1e-3 * want.abs().max(1.0),
        "{sum} vs {want}"
    );
}

#[test]
fn guarded_multi_tensor_adam_reads_its_guard_on_the_device() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(12);
    let shapes: Vec<Vec<usize>> = vec![vec![5], vec![0], vec![33, 4, 3, 3], vec![2, 7]];
    let params: Vec<Tensor> = shapes
        .iter()
        .map(|s| random_tensor(s, &mut rng, 0.0))
        .collect();
    let fresh = || -> Vec<[Tensor; 3]> {
        params
            .iter()
            .map(|p| {
                [
                    p.clone(),
                    Tensor::zeros(p.shape()),
                    Tensor::zeros(p.shape()),
                ]
            })
            .collect()
    };
    let (mut on_gpu, mut unguarded, mut host) = (fresh(), fresh(), fresh());
    for t in 1..=4u64 {
        let step = AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled_weight_decay: t % 2 == 0,
            step: t,
        };
        let grads: Vec<Tensor> = shapes
            .iter()
            .map(|s| random_tensor(s, &mut rng, 0.0))
            .collect();
        // A NaN, then an infinite guard (computed on the device, never read by the host):
        // nothing changes; then a finite one: the unguarded update, bit for bit.
        for guard in [f32::NAN, f32::INFINITY, 3.5] {
            let guard_on_device = gpu.affine(&Tensor::scalar(guard), 1.0, 0.0).unwrap();
            let before: Vec<Vec<u32>> = on_gpu.iter().flat_map(|s| s.iter().map(bits)).collect();
            let mut ops = adam_operands(&mut on_gpu, &grads);
            gpu.adam_step_many_if_finite(&mut ops, &step, &guard_on_device)
                .unwrap();
            let after: Vec<Vec<u32>> = on_gpu.iter().flat_map(|s| s.iter().map(bits)).collect();
            if !guard.is_finite() {
                assert_eq!(before, after, "guard {guard}, step {t}");
            }
        }
        let mut ops = adam_operands(&mut unguarded, &grads);
        gpu.adam_step_many(&mut ops, &step).unwrap();
        let mut ops = adam_operands(&mut host, &grads);
        cpu.adam_step_many_if_finite(&mut ops, &step, &Tensor::scalar(3.5))
            .unwrap();
    }
    for (i, ((a, b), c)) in on_gpu.iter().zip(&unguarded).zip(&host).enumerate() {
        for k in 0..3 {
            let what = format!("tensor {i} {:?} slot {k}", shapes[i]);
            assert_eq!(bits(&a[k]), bits(&b[k]), "{what}: guarded vs unguarded");
            assert_close(&what, &a[k], &c[k], TOL);
        }
    }
    // A guard of more than one value: the CPU's error.
    let two = Tensor::ones(&[2]);
    let mut state = fresh();
    let mut cpu_state = fresh();
    let grads: Vec<Tensor> = shapes.iter().map(|s| Tensor::ones(s)).collect();
    let step = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled_weight_decay: false,
        step: 1,
    };
    let mut ops = adam_operands(&mut state, &grads);
    let mut cpu_ops = adam_operands(&mut cpu_state, &grads);
    same_error(
        "adam_step_many_if_finite guard",
        gpu.adam_step_many_if_finite(&mut ops, &step, &two),
        cpu.adam_step_many_if_finite(&mut cpu_ops, &step, &two),
    );
}

#[test]
fn values_read_later_arrive_after_the_work_queued_before_them() {
    let Some(gpu) = gpu() else { return };
    let mut rng = SeededRng::new(13);
    // A large sum queued first: the read must see its result, not the buffer's old contents.
    let x = random_tensor(&[4, 16, 97, 101], &mut rng, 0.0);
    let want: f64 = x.to_vec().unwrap().iter().map(|&v| v as f64).sum();
    let mut pending = Vec::new();
    for k in 0..12 {
        let sum = gpu
            .sum_all(&gpu.affine(&x, k as f32, 1.0).unwrap())
            .unwrap();
        let pair = gpu
            .concat(
                &[
                    &sum.reshape(&[1]).unwrap(),
                    &gpu.full(&[1], k as f32).unwrap(),
                ],
                0,
            )
            .unwrap();
        pending.push((k, Backend::read_later(gpu, &pair).unwrap()));
        // Work queued after the read does not change what it reads.
        let _ = gpu.affine(&x, 2.0, 0.0).unwrap();
    }
    // Read out of order, and some never read (dropped): their buffers come back.
    let n = x.numel() as f64;
    for (k, p) in pending.into_iter().rev().filter(|(k, _)| k % 3 != 1) {
        let got = p.wait().unwrap();
        let expect = k as f64 * want + n;
        assert!(
            (got[0] as f64 - expect).abs() <= 1e-3 * expect.abs().max(n),
            "read {k}: {} vs {expect}",
            got[0]
        );
        assert_eq!(got[1], k as f32);
    }
    // More values than a queued read takes fall back to a plain read; host tensors too.
    let big = random_tensor(&[3, 200], &mut rng, 0.0);
    let big_on_device = gpu.affine(&big, 1.0, 0.0).unwrap();
    assert_eq!(
        Backend::read_later(gpu, &big_on_device)
            .unwrap()
            .wait()
            .unwrap(),
        big.to_vec().unwrap()
    );
    let host = Tensor::from_vec(vec![1.5, -2.0], &[2]).unwrap();
    assert_eq!(
        Backend::read_later(gpu, &host).unwrap().wait().unwrap(),
        [1.5, -2.0]
    );
    assert_eq!(
        Backend::read_later(&CpuBackend, &host)
            .unwrap()
            .wait()
            .unwrap(),
        [1.5, -2.0]
    );
}
