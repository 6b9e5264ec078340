//! Contracts of the CPU ops beyond PyTorch parity: typed errors on bad shapes, layout
//! independence, optimizer update rules, and a GEMM path check on odd sizes.

use dnn_ops::backend::*;
use dnn_ops::testing::random_tensor;
use dnn_ops::{AdamStep, Conv2dAttrs, CpuBackend, OpError, Pool2dAttrs, SgdStep, Tensor};
use magma_tensor::{MemoryFormat, SeededRng};

#[test]
fn shape_mistakes_are_typed_errors_not_panics() {
    let be = CpuBackend::new();
    let x = Tensor::zeros(&[1, 3, 8, 8]);
    let w = Tensor::zeros(&[4, 2, 3, 3]);
    assert!(matches!(
        be.conv2d(&x, &w, None, &Conv2dAttrs::new()),
        Err(OpError::Shape { .. })
    ));
    let w = Tensor::zeros(&[4, 3, 9, 9]);
    assert!(matches!(
        be.conv2d(&x, &w, None, &Conv2dAttrs::new()),
        Err(OpError::Attr { .. })
    ));
    assert!(matches!(
        be.conv2d(
            &x,
            &Tensor::zeros(&[4, 3, 3, 3]),
            None,
            &Conv2dAttrs::new().with_stride([0, 1])
        ),
        Err(OpError::Attr { .. })
    ));
    assert!(
        be.conv2d(&Tensor::zeros(&[3, 8, 8]), &w, None, &Conv2dAttrs::new())
            .is_err()
    );
    assert!(matches!(
        be.max_pool2d(&Tensor::zeros(&[1, 1, 1, 1]), &Pool2dAttrs::square(2)),
        Err(OpError::Attr { .. })
    ));
    assert!(matches!(
        be.add(&x, &Tensor::zeros(&[1, 3, 8, 7])),
        Err(OpError::Shape { .. })
    ));
    assert!(
        be.matmul(
            &Tensor::zeros(&[2, 3]),
            &Tensor::zeros(&[2, 3]),
            false,
            false
        )
        .is_err()
    );
    assert!(be.concat(&[&x, &Tensor::zeros(&[1, 3, 4, 8])], 1).is_err());
    assert!(be.split(&x, 1, &[1, 1]).is_err());
    assert!(be.dropout(&x, 1.0, 0).is_err());
}

#[test]
fn cross_entropy_rejects_bad_labels_and_all_ignored_batches() {
    let be = CpuBackend::new();
    let logits = Tensor::zeros(&[1, 3, 2, 2]);
    let bad = Tensor::from_vec(vec![0.0, 1.0, 3.0, 2.0], &[1, 2, 2]).unwrap();
    match be.cross_entropy(&logits, &bad, None, None) {
        Err(OpError::BadLabel {
            index,
            value,
            classes,
            ..
        }) => assert_eq!((index, value, classes), (2, 3.0, 3)),
        other => panic!("expected BadLabel, got {other:?}"),
    }
    let frac = Tensor::from_vec(vec![0.0, 1.5, 1.0, 2.0], &[1, 2, 2]).unwrap();
    assert!(matches!(
        be.cross_entropy(&logits, &frac, None, None),
        Err(OpError::BadLabel { .. })
    ));
    let ignored = Tensor::full(&[1, 2, 2], 255.0);
    assert!(matches!(
        be.cross_entropy(&logits, &ignored, None, Some(255)),
        Err(OpError::AllIgnored { .. })
    ));
    // Uniform logits: the loss is ln(3) whatever the labels.
    let ok = Tensor::from_vec(vec![0.0, 1.0, 2.0, 255.0], &[1, 2, 2]).unwrap();
    let (loss, _) = be.cross_entropy(&logits, &ok, None, Some(255)).unwrap();
    assert!((loss.item().unwrap() - 3f32.ln()).abs() < 1e-6);
}

#[test]
fn channels_last_inputs_give_the_same_results() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(1);
    let x = random_tensor(&[2, 3, 6, 5], &mut rng, 0.01);
    let w = random_tensor(&[4, 3, 3, 3], &mut rng, 0.01);
    let nhwc = x.to_memory_format(MemoryFormat::ChannelsLast).unwrap();
    let attrs = Conv2dAttrs::new().with_padding([1, 1]);
    let a = be.conv2d(&x, &w, None, &attrs).unwrap();
    let b = be.conv2d(&nhwc, &w, None, &attrs).unwrap();
    assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
    assert_eq!(
        be.max_pool2d(&x, &Pool2dAttrs::square(2))
            .unwrap()
            .to_vec()
            .unwrap(),
        be.max_pool2d(&nhwc, &Pool2dAttrs::square(2))
            .unwrap()
            .to_vec()
            .unwrap()
    );
}

#[test]
fn matmul_matches_a_naive_product_on_odd_sizes_and_transposes() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(2);
    for (m, k, n) in [(1, 1, 1), (7, 13, 5), (65, 33, 70), (3, 200, 2)] {
        let a = random_tensor(&[m, k], &mut rng, 0.0);
        let b = random_tensor(&[k, n], &mut rng, 0.0);
        let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        let naive: Vec<f32> = (0..m * n)
            .map(|i| {
                (0..k)
                    .map(|p| av[i / n * k + p] as f64 * bv[p * n + i % n] as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        let got = be.matmul(&a, &b, false, false).unwrap().to_vec().unwrap();
        let at = a.permute(&[1, 0]).unwrap().contiguous().unwrap();
        let bt = b.permute(&[1, 0]).unwrap().contiguous().unwrap();
        let got_t = be.matmul(&at, &bt, true, true).unwrap().to_vec().unwrap();
        for i in 0..m * n {
            assert!(
                (got[i] - naive[i]).abs() < 1e-4 * (1.0 + naive[i].abs()),
                "({m},{k},{n})[{i}]"
            );
            assert!((got_t[i] - naive[i]).abs() < 1e-4 * (1.0 + naive[i].abs()));
        }
    }
}

/// Adam written out in f64, step by step, as in Kingma & Ba (and PyTorch's `torch.optim.Adam`).
fn adam_reference(p: f64, grads: &[f64], lr: f64, wd: f64, decoupled: bool) -> f64 {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let (mut p, mut m, mut v) = (p, 0.0, 0.0);
    for (t, &g0) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        let mut g = g0;
        if decoupled {
            p *= 1.0 - lr * wd;
        } else {
            g += wd * p;
        }
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let mhat = m / (1.0 - b1.powi(t));
        let vhat = v / (1.0 - b2.powi(t));
        p -= lr * mhat / (vhat.sqrt() + eps);
    }
    p
}

#[test]
fn adam_and_adamw_follow_the_published_update() {
    let be = CpuBackend::new();
    let grads = [0.5, -1.0, 0.25, 2.0, -0.1];
    for decoupled in [false, true] {
        let mut p = Tensor::from_vec(vec![1.5], &[1]).unwrap();
        let (mut m, mut v) = (Tensor::zeros(&[1]), Tensor::zeros(&[1]));
        for (i, &g) in grads.iter().enumerate() {
            let step = AdamStep {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.1,
                decoupled_weight_decay: decoupled,
                step: i as u64 + 1,
            };
            be.adam_step(
                &mut p,
                &Tensor::from_vec(vec![g as f32], &[1]).unwrap(),
                &mut m,
                &mut v,
                &step,
            )
            .unwrap();
        }
        let want = adam_reference(1.5, &grads, 0.01, 0.1, decoupled);
        assert!(
            (p.item().unwrap() as f64 - want).abs() < 1e-6,
            "decoupled={decoupled}: {} vs {want}",
            p.item().unwrap()
        );
    }
}

#[test]
fn sgd_momentum_and_nesterov_follow_pytorch_rules() {
    let be = CpuBackend::new();
    let grads = [1.0f32, -0.5, 0.25];
    for nesterov in [false, true] {
        let mut p = Tensor::from_vec(vec![2.0], &[1]).unwrap();
        let mut buf = Tensor::zeros(&[1]);
        let (mut pr, mut br) = (2.0f64, 0.0f64);
        for &g in &grads {
            let step = SgdStep {
                lr: 0.1,
                momentum: 0.9,
                nesterov,
                weight_decay: 0.01,
            };
            be.sgd_step(
                &mut p,
                &Tensor::from_vec(vec![g], &[1]).unwrap(),
                &mut buf,
                &step,
            )
            .unwrap();
            let d = g as f64 + 0.01 * pr;
            br = 0.9 * br + d;
            pr -= 0.1 * if nesterov { d + 0.9 * br } else { br };
        }
        assert!((p.item().unwrap() as f64 - pr).abs() < 1e-6);
    }
}

#[test]
fn adagrad_and_rmsprop_follow_pytorch_rules() {
    use dnn_ops::{AdagradStep, RmsPropStep};
    let be = CpuBackend::new();
    let grads = [0.7f64, -0.2, 1.3, 0.05];
    // Adagrad (torch.optim.Adagrad, lr_decay 0, initial accumulator 0).
    let mut p = Tensor::from_vec(vec![1.0], &[1]).unwrap();
    let mut acc = Tensor::zeros(&[1]);
    let (mut pr, mut ar) = (1.0f64, 0.0f64);
    for &g in &grads {
        let s = AdagradStep {
            lr: 0.1,
            eps: 1e-10,
            weight_decay: 0.01,
        };
        be.adagrad_step(
            &mut p,
            &Tensor::from_vec(vec![g as f32], &[1]).unwrap(),
            &mut acc,
            &s,
        )
        .unwrap();
        let g = g + 0.01 * pr;
        ar += g * g;
        pr -= 0.1 * g / (ar.sqrt() + 1e-10);
    }
    assert!(
        (p.item().unwrap() as f64 - pr).abs() < 1e-6,
        "adagrad {} vs {pr}",
        p.item().unwrap()
    );
    // RMSProp (torch.optim.RMSprop, centered = false), with and without momentum.
    for momentum in [0.0f64, 0.9] {
        let mut p = Tensor::from_vec(vec![1.0], &[1]).unwrap();
        let (mut sq, mut buf) = (Tensor::zeros(&[1]), Tensor::zeros(&[1]));
        let (mut pr, mut sr, mut br) = (1.0f64, 0.0f64, 0.0f64);
        for &g in &grads {
            let s = RmsPropStep {
                lr: 0.01,
                alpha: 0.99,
                eps: 1e-8,
                momentum: momentum as f32,
                weight_decay: 0.0,
            };
            be.rmsprop_step(
                &mut p,
                &Tensor::from_vec(vec![g as f32], &[1]).unwrap(),
                &mut sq,
                &mut buf,
                &s,
            )
            .unwrap();
            sr = 0.99 * sr + 0.01 * g * g;
            let step = g / (sr.sqrt() + 1e-8);
            if momentum > 0.0 {
                br = momentum * br + step;
                pr -= 0.01 * br;
            } else {
                pr -= 0.01 * step;
            }
        }
        assert!(
            (p.item().unwrap() as f64 - pr).abs() < 1e-5,
            "rmsprop m={momentum}: {} vs {pr}",
            p.item().unwrap()
        );
    }
}

#[test]
fn pixel_weights_reduce_to_class_weights_and_perfect_predictions_have_zero_dice_loss() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(5);
    let logits = random_tensor(&[2, 3, 3, 4], &mut rng, 0.0);
    let labels: Vec<f32> = (0..24).map(|i| (i % 3) as f32).collect();
    let class_w = [0.5f32, 2.0, 1.5];
    let pixel_w: Vec<f32> = labels.iter().map(|&l| class_w[l as usize]).collect();
    let labels = Tensor::from_vec(labels, &[2, 3, 4]).unwrap();
    let (a, ga) = be
        .cross_entropy(
            &logits,
            &labels,
            Some(&Tensor::from_vec(class_w.to_vec(), &[3]).unwrap()),
            None,
        )
        .unwrap();
    let (b, gb) = be
        .pixel_weighted_cross_entropy(
            &logits,
            &labels,
            &Tensor::from_vec(pixel_w, &[2, 3, 4]).unwrap(),
            None,
        )
        .unwrap();
    assert!((a.item().unwrap() - b.item().unwrap()).abs() < 1e-6);
    assert!(ga.max_abs_diff(&gb).unwrap() < 1e-7);
    // Logits that put (almost) all mass on the right class: Dice loss ≈ 0; uniform: known value.
    let l = labels.to_vec().unwrap();
    let mut sharp = vec![0.0f32; 72];
    for (i, &k) in l.iter().enumerate() {
        let (n, p) = (i / 12, i % 12);
        sharp[(n * 3 + k as usize) * 12 + p] = 30.0;
    }
    let (loss, _) = be
        .soft_dice(
            &Tensor::from_vec(sharp, &[2, 3, 3, 4]).unwrap(),
            &labels,
            1e-6,
            None,
        )
        .unwrap();
    assert!(loss.item().unwrap() < 1e-5);
    // Uniform logits: p = 1/3 everywhere, 8 pixels per class: dice_c = (2·8/3)/(8 + 8) = 1/3.
    let (loss, _) = be
        .soft_dice(&Tensor::zeros(&[2, 3, 3, 4]), &labels, 1e-9, None)
        .unwrap();
    assert!((loss.item().unwrap() - 2.0 / 3.0).abs() < 1e-5);
}

/// A forgotten intermediate value frees its memory once consumed (only the tape held it), keeps
/// its shape, still passes its gradient, is skipped by the non-finite search, and reading it is
/// a loud programming error.
#[test]
fn forgotten_values_are_released_but_gradients_flow() {
    let be = CpuBackend::new();
    let g = dnn_ops::Graph::new(&be);
    let x = g.leaf(Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3]).unwrap());
    let doubled = g.add(x, x).unwrap();
    // (An addition's backward keeps no value, so the tape alone held `doubled`.)
    let total = g.add(doubled, x).unwrap();
    let held = g.value(doubled);
    g.forget(doubled);
    // The tape no longer holds it: the clone above is the only reference left.
    assert_eq!(held.storage_handles(), 1);
    assert_eq!(g.shape(doubled), vec![3]);
    assert_eq!(g.first_non_finite().unwrap(), None);
    let seed = Tensor::ones(&[3]);
    let grads = g.backward_with(total, seed).unwrap();
    // d(2x + x)/dx = 3.
    assert_eq!(grads.wrt(x).unwrap().to_vec().unwrap(), vec![3.0; 3]);
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.value(doubled)));
    assert!(read.is_err(), "reading a forgotten value must panic");
}

/// The reverse pass gives the forward pass's memory back as it goes: an intermediate value held
/// by nothing but the tape and its consumers' backward functions is freed, the output the pass
/// started from and the leaves stay readable, and a second pass over the same graph is an error
/// (its saved values are gone).
#[test]
fn the_reverse_pass_releases_intermediate_values() {
    let be = CpuBackend::new();
    let g = dnn_ops::Graph::new(&be);
    let x = g.leaf(Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3]).unwrap());
    let squared = g.mul(x, x).unwrap();
    let total = g.sum(squared).unwrap();
    let held = g.value(squared);
    // The tape holds the product (the sum's backward keeps no value), and so does the clone.
    assert_eq!(held.storage_handles(), 2);
    let grads = g.backward(total).unwrap();
    assert_eq!(
        held.storage_handles(),
        1,
        "only the clone taken above is left"
    );
    assert_eq!(
        grads.wrt(x).unwrap().to_vec().unwrap(),
        vec![2.0, -4.0, 6.0]
    );
    assert_eq!(g.value(total).item().unwrap(), 14.0);
    assert_eq!(g.value(x).to_vec().unwrap(), vec![1.0, -2.0, 3.0]);
    let again = g.backward(total).unwrap_err().to_string();
    assert!(again.contains("backward already ran"), "{again}");
}

/// Concatenation and split along every dimension, with a channels-last (strided) operand,
/// place each value where the index arithmetic says, and split undoes concat.
#[test]
fn concat_and_split_place_every_value_along_every_dimension() {
    let be = CpuBackend::new();
    let value = |part: f32, i: [usize; 4]| {
        part * 10000.0 + (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32
    };
    let make = |part: f32, shape: [usize; 4]| {
        let mut data = Vec::new();
        for a in 0..shape[0] {
            for b in 0..shape[1] {
                for c in 0..shape[2] {
                    for d in 0..shape[3] {
                        data.push(value(part, [a, b, c, d]));
                    }
                }
            }
        }
        Tensor::from_vec(data, &shape).unwrap()
    };
    for dim in 0..4 {
        let mut s1 = [2, 3, 4, 5];
        let mut s2 = s1;
        s1[dim] = 2;
        s2[dim] = 3;
        let (a, b) = (make(1.0, s1), make(2.0, s2));
        let b_strided = b.to_memory_format(MemoryFormat::ChannelsLast).unwrap();
        let cat = be.concat(&[&a, &b_strided], dim).unwrap();
        let mut want_shape = s1;
        want_shape[dim] = 5;
        assert_eq!(cat.shape(), want_shape);
        let got = cat.to_vec().unwrap();
        let mut k = 0;
        for i0 in 0..want_shape[0] {
            for i1 in 0..want_shape[1] {
                for i2 in 0..want_shape[2] {
                    for i3 in 0..want_shape[3] {
                        let mut i = [i0, i1, i2, i3];
                        let part = if i[dim] < 2 {
                            1.0
                        } else {
                            i[dim] -= 2;
                            2.0
                        };
                        assert_eq!(
                            got[k],
                            value(part, i),
                            "dim {dim}, index {:?}",
                            [i0, i1, i2, i3]
                        );
                        k += 1;
                    }
                }
            }
        }
        let parts = be.split(&cat, dim, &[2, 3]).unwrap();
        assert_eq!(parts[0].to_vec().unwrap(), a.to_vec().unwrap(), "dim {dim}");
        assert_eq!(parts[1].to_vec().unwrap(), b.to_vec().unwrap(), "dim {dim}");
        assert_eq!(parts[1].shape(), s2);
    }
}
