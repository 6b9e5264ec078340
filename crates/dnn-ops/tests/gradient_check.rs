//! Finite-difference gradient checks of every differentiable op, through the autodiff graph,
//! with random shapes and random (never zero) inputs, on every backend (`test_device!`: the CPU,
//! and CUDA with the feature and a GPU).

use dnn_ops::backend::RunningStats;
use dnn_ops::testing::{GradCheck, distinct_tensor, random_tensor};
use dnn_ops::{
    Activation, Backend, BatchNormAttrs, Conv2dAttrs, ConvTranspose2dAttrs, Pool2dAttrs, Tensor,
};
use magma_tensor::SeededRng;

fn check(
    be: &dyn Backend,
    inputs: &[Tensor],
    f: impl Fn(&dnn_ops::Graph, &[dnn_ops::Var]) -> dnn_ops::Result<dnn_ops::Var>,
) {
    let worst = GradCheck::default()
        .run(be, inputs, f)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(worst.is_finite());
}

fn dim(rng: &mut SeededRng, lo: usize, hi: usize) -> usize {
    lo + rng.below(hi - lo + 1)
}

dnn_ops::test_device!(fn conv2d_gradients(be) {
    let mut rng = SeededRng::new(1);
    for attrs in [
        Conv2dAttrs::new().with_padding([1, 1]),
        Conv2dAttrs::new().with_stride([2, 1]).with_padding([0, 1]),
        Conv2dAttrs::new()
            .with_dilation([2, 2])
            .with_padding([2, 1]),
        Conv2dAttrs::new(),
    ] {
        let (n, c, o) = (
            dim(&mut rng, 1, 3),
            dim(&mut rng, 1, 3),
            dim(&mut rng, 1, 4),
        );
        let (h, w) = (dim(&mut rng, 5, 8), dim(&mut rng, 5, 8));
        let k = if attrs == Conv2dAttrs::new() { 1 } else { 3 };
        let inputs = [
            random_tensor(&[n, c, h, w], &mut rng, 0.05),
            random_tensor(&[o, c, k, k], &mut rng, 0.05),
            random_tensor(&[o], &mut rng, 0.05),
        ];
        check(be, &inputs, |g, v| g.conv2d(v[0], v[1], Some(v[2]), attrs));
    }
});

dnn_ops::test_device!(fn conv_transpose2d_gradients(be) {
    let mut rng = SeededRng::new(2);
    for (k, attrs) in [
        (2, ConvTranspose2dAttrs::new().with_stride([2, 2])),
        (
            3,
            ConvTranspose2dAttrs::new()
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_output_padding([1, 1]),
        ),
        (3, ConvTranspose2dAttrs::new().with_padding([1, 1])),
        (
            3,
            ConvTranspose2dAttrs::new()
                .with_stride([2, 1])
                .with_dilation([1, 2]),
        ),
    ] {
        let (n, c, o) = (
            dim(&mut rng, 1, 2),
            dim(&mut rng, 1, 3),
            dim(&mut rng, 1, 3),
        );
        let (h, w) = (dim(&mut rng, 2, 5), dim(&mut rng, 2, 5));
        let inputs = [
            random_tensor(&[n, c, h, w], &mut rng, 0.05),
            random_tensor(&[c, o, k, k], &mut rng, 0.05),
            random_tensor(&[o], &mut rng, 0.05),
        ];
        check(be, &inputs, |g, v| {
            g.conv_transpose2d(v[0], v[1], Some(v[2]), attrs)
        });
    }
});

dnn_ops::test_device!(fn pooling_gradients(be) {
    let mut rng = SeededRng::new(3);
    for attrs in [
        Pool2dAttrs::square(2),
        Pool2dAttrs::square(3)
            .with_stride([2, 2])
            .with_padding([1, 1]),
        Pool2dAttrs::square(3)
            .with_stride([1, 2])
            .with_padding([1, 0])
            .with_count_include_pad(false),
    ] {
        let shape = [
            dim(&mut rng, 1, 2),
            dim(&mut rng, 1, 3),
            dim(&mut rng, 4, 7),
            dim(&mut rng, 4, 7),
        ];
        // Values 0.05 apart so that ±eps never changes which element is the maximum.
        let x = distinct_tensor(&shape, &mut rng, 0.05);
        check(be, std::slice::from_ref(&x), |g, v| {
            g.max_pool2d(v[0], attrs)
        });
        let x = random_tensor(&shape, &mut rng, 0.05);
        check(be, &[x], |g, v| g.avg_pool2d(v[0], attrs));
    }
});

dnn_ops::test_device!(fn activation_gradients(be) {
    let mut rng = SeededRng::new(4);
    for kind in [
        Activation::Relu,
        Activation::LeakyRelu {
            negative_slope: 0.1,
        },
        Activation::Sigmoid,
        Activation::Tanh,
    ] {
        let shape = [
            dim(&mut rng, 1, 3),
            dim(&mut rng, 1, 4),
            dim(&mut rng, 1, 5),
        ];
        // At least 2·eps away from the kink at zero.
        let x = random_tensor(&shape, &mut rng, 0.05);
        check(be, &[x], |g, v| g.activation(v[0], kind));
    }
});

dnn_ops::test_device!(fn batch_norm_gradients_in_training_and_evaluation(be) {
    let mut rng = SeededRng::new(5);
    for training in [true, false] {
        let c = dim(&mut rng, 1, 3);
        let shape = [
            dim(&mut rng, 2, 3),
            c,
            dim(&mut rng, 2, 4),
            dim(&mut rng, 2, 4),
        ];
        let inputs = [
            random_tensor(&shape, &mut rng, 0.05),
            random_tensor(&[c], &mut rng, 0.3),
            random_tensor(&[c], &mut rng, 0.05),
        ];
        let rm = random_tensor(&[c], &mut rng, 0.05);
        let rv = random_tensor(&[c], &mut rng, 0.05)
            .map(|v| v.abs() + 0.5)
            .unwrap();
        check(be, &inputs, |g, v| {
            let mut stats = RunningStats {
                mean: rm.clone(),
                var: rv.clone(),
            };
            g.batch_norm(
                v[0],
                v[1],
                v[2],
                &mut stats,
                BatchNormAttrs::default(),
                training,
            )
        });
    }
});

dnn_ops::test_device!(fn batch_norm_relu_gradients_in_training_and_evaluation(be) {
    // Inputs whose normalised values keep at least 0.2 away from the ReLU's kink (every channel
    // holds a permutation of the same six values, mean 0), so the finite differences never
    // straddle it; both sides of it occur in every channel.
    let (n, c, h, w) = (2, 3, 2, 3);
    let pattern = [-2.5f32, -1.5, -0.5, 0.5, 1.5, 2.5];
    let mut x = Vec::with_capacity(n * c * h * w);
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                x.push(pattern[(p * (ch + 1) + 5 * i) % 6]);
            }
        }
    }
    let inputs = [
        Tensor::from_vec(x, &[n, c, h, w]).unwrap(),
        Tensor::from_vec(vec![1.0, 1.1, 1.2], &[c]).unwrap(),
        Tensor::from_vec(vec![0.6, 0.6, 0.6], &[c]).unwrap(),
    ];
    for training in [true, false] {
        check(be, &inputs, |g, v| {
            let mut stats = RunningStats {
                mean: Tensor::zeros(&[c]),
                var: Tensor::full(&[c], 2.9),
            };
            g.batch_norm_relu(
                v[0],
                v[1],
                v[2],
                &mut stats,
                BatchNormAttrs::default(),
                training,
            )
        });
    }
});

dnn_ops::test_device!(fn softmax_and_log_softmax_gradients(be) {
    let mut rng = SeededRng::new(6);
    let shape = [
        dim(&mut rng, 1, 3),
        dim(&mut rng, 2, 5),
        dim(&mut rng, 1, 4),
        dim(&mut rng, 1, 4),
    ];
    let x = random_tensor(&shape, &mut rng, 0.05);
    check(be, std::slice::from_ref(&x), |g, v| g.softmax(v[0]));
    check(be, &[x], |g, v| g.log_softmax(v[0]));
});

dnn_ops::test_device!(fn concat_split_pad_crop_reshape_gradients(be) {
    let mut rng = SeededRng::new(7);
    let (n, h, w) = (
        dim(&mut rng, 1, 2),
        dim(&mut rng, 2, 4),
        dim(&mut rng, 2, 4),
    );
    let a = random_tensor(&[n, 2, h, w], &mut rng, 0.05);
    let b = random_tensor(&[n, 3, h, w], &mut rng, 0.05);
    // The weights make each part's gradient distinct.
    check(be, &[a.clone(), b.clone()], |g, v| {
        let cat = g.concat(&[v[0], v[1]], 1)?;
        let parts = g.split(cat, 1, &[1, 3, 1])?;
        let mixed = g.concat(&[parts[2], g.scale(parts[0], 3.0)?, parts[1]], 1)?;
        g.mul(mixed, mixed)
    });
    check(be, std::slice::from_ref(&a), |g, v| {
        let p = g.pad2d(v[0], [1, 0, 2, 1])?;
        let c = g.crop2d(p, [0, 1, 1, 1])?;
        g.reshape(c, &[n, 2 * h * (w + 1)])
    });
});

dnn_ops::test_device!(fn bilinear_upsampling_gradients(be) {
    let mut rng = SeededRng::new(8);
    for out in [[8, 10], [5, 3], [7, 7]] {
        let x = random_tensor(
            &[
                dim(&mut rng, 1, 2),
                dim(&mut rng, 1, 2),
                dim(&mut rng, 3, 5),
                dim(&mut rng, 3, 5),
            ],
            &mut rng,
            0.05,
        );
        check(be, &[x], |g, v| g.upsample_bilinear(v[0], out));
    }
});

dnn_ops::test_device!(fn elementwise_reduction_and_dropout_gradients(be) {
    let mut rng = SeededRng::new(9);
    let shape = [
        dim(&mut rng, 1, 3),
        dim(&mut rng, 2, 3),
        dim(&mut rng, 1, 3),
        dim(&mut rng, 1, 3),
    ];
    let a = random_tensor(&shape, &mut rng, 0.05);
    let b = random_tensor(&shape, &mut rng, 0.05);
    let bias = random_tensor(&[shape[1]], &mut rng, 0.05);
    check(be, &[a.clone(), b.clone(), bias], |g, v| {
        let s = g.sub(g.mul(v[0], v[1])?, g.scale(v[1], 0.5)?)?;
        let t = g.add(s, g.add_channel_bias(v[0], v[2])?)?;
        g.dropout(t, 0.3, 42)
    });
    check(be, std::slice::from_ref(&a), |g, v| {
        g.mean(g.mul(v[0], v[0])?)
    });
    check(be, &[a], |g, v| g.sum(g.tanh(v[0])?));
});

dnn_ops::test_device!(fn matmul_and_linear_gradients(be) {
    let mut rng = SeededRng::new(10);
    let (m, k, n) = (
        dim(&mut rng, 1, 5),
        dim(&mut rng, 1, 6),
        dim(&mut rng, 1, 5),
    );
    let a = random_tensor(&[m, k], &mut rng, 0.05);
    let b = random_tensor(&[k, n], &mut rng, 0.05);
    check(be, &[a.clone(), b], |g, v| g.matmul(v[0], v[1]));
    let w = random_tensor(&[n, k], &mut rng, 0.05);
    let bias = random_tensor(&[n], &mut rng, 0.05);
    check(be, &[a, w, bias], |g, v| g.linear(v[0], v[1], Some(v[2])));
});

dnn_ops::test_device!(fn cross_entropy_gradients_with_weights_and_ignore_index(be) {
    let mut rng = SeededRng::new(11);
    let (n, c, h, w) = (2, 3, dim(&mut rng, 2, 4), dim(&mut rng, 2, 4));
    let logits = random_tensor(&[n, c, h, w], &mut rng, 0.05);
    let labels: Vec<f32> = (0..n * h * w)
        .map(|i| {
            if i % 5 == 4 {
                255.0
            } else {
                rng.below(c) as f32
            }
        })
        .collect();
    let labels = Tensor::from_vec(labels, &[n, h, w]).unwrap();
    let weights = Tensor::from_vec(vec![0.5, 1.0, 2.0], &[3]).unwrap();
    check(be, std::slice::from_ref(&logits), |g, v| {
        g.cross_entropy(v[0], &labels, Some(&weights), Some(255))
    });
    check(be, &[logits], |g, v| {
        g.cross_entropy(v[0], &labels, None, Some(255))
    });
});

dnn_ops::test_device!(fn a_shared_parameter_and_a_fan_out_sum_their_gradients(be) {
    // y = w·x + w·(w·x): dy/dw = x + 2·w·x elementwise (per element, w scalar-like in each slot).
    let mut rng = SeededRng::new(12);
    let w = dnn_ops::Parameter::new("w", random_tensor(&[4], &mut rng, 0.1));
    let x = random_tensor(&[4], &mut rng, 0.1);
    let g = dnn_ops::Graph::new(be);
    let (w1, w2, xv) = (g.param(&w), g.param(&w), g.input(x.clone()));
    let wx = g.mul(w1, xv).unwrap();
    let y = g.add(wx, g.mul(w2, wx).unwrap()).unwrap();
    let loss = g.sum(y).unwrap();
    let grads = g.backward(loss).unwrap();
    let got = grads.param(w.id()).unwrap().to_vec().unwrap();
    let (wv, xv) = (w.value().to_vec().unwrap(), x.to_vec().unwrap());
    for i in 0..4 {
        let want = xv[i] + 2.0 * wv[i] * xv[i];
        assert!((got[i] - want).abs() < 1e-5, "{i}: {} vs {want}", got[i]);
    }
});

dnn_ops::test_device!(fn pixel_weighted_cross_entropy_and_soft_dice_gradients(be) {
    let mut rng = SeededRng::new(13);
    let (n, c, h, w) = (2, 3, dim(&mut rng, 2, 4), dim(&mut rng, 2, 4));
    let logits = random_tensor(&[n, c, h, w], &mut rng, 0.05);
    let labels: Vec<f32> = (0..n * h * w)
        .map(|i| if i % 7 == 6 { 255.0 } else { (i % c) as f32 })
        .collect();
    let labels = Tensor::from_vec(labels, &[n, h, w]).unwrap();
    let weights = random_tensor(&[n, h, w], &mut rng, 0.1)
        .map(|v| v.abs() + 0.2)
        .unwrap();
    check(be, std::slice::from_ref(&logits), |g, v| {
        g.pixel_weighted_cross_entropy(v[0], &labels, &weights, Some(255))
    });
    check(be, &[logits], |g, v| {
        g.soft_dice(v[0], &labels, 1.0, Some(255))
    });
});
