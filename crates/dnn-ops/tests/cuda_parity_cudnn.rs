#![cfg(feature = "cuda")]
//! Parity of the cuDNN-backed ops of the CUDA backend (convolutions and the hand-bound
//! transposed convolution, pooling, activations, batch norm, softmax, matmul) with the CPU
//! reference: forward and backward on random inputs of odd sizes, strides, paddings and
//! dilations, within 1e-4 relative error; the same typed errors on bad shapes; and the
//! convolution algorithm cache.

use dnn_ops::backend::*;
use dnn_ops::testing::{assert_close, distinct_tensor, random_tensor};
use dnn_ops::{
    Activation, BatchNormAttrs, Conv2dAttrs, ConvTranspose2dAttrs, CpuBackend, CudaBackend,
    OpError, Pool2dAttrs, Precision, Tensor,
};
use magma_tensor::SeededRng;

const TOL: f64 = 1e-4;

fn backend() -> Option<&'static CudaBackend> {
    let be = dnn_ops::cuda::test_backend();
    if be.is_none() {
        eprintln!("skipped: no CUDA device");
    }
    be
}

fn rand(shape: &[usize], rng: &mut SeededRng) -> Tensor {
    random_tensor(shape, rng, 0.05)
}

fn shape4(t: &Tensor) -> [usize; 4] {
    t.shape().try_into().expect("rank 4")
}

/// Both backends refuse with the same typed error.
#[track_caller]
fn same_error<T: std::fmt::Debug, U: std::fmt::Debug>(
    what: &str,
    gpu: dnn_ops::Result<T>,
    cpu: dnn_ops::Result<U>,
) {
    let cpu = cpu.expect_err(&format!("{what}: the CPU accepted it"));
    let gpu = gpu.expect_err(&format!("{what}: the GPU accepted it"));
    assert_eq!(gpu, cpu, "{what}: different errors");
}

/// The tolerance of bf16 mixed precision: operands rounded to 8 significant bits, fp32
/// accumulation (TF32 keeps 11 bits and passes 1e-2 too).
const BF16_TOL: f64 = 1e-2;

/// A backend of its own in `precision`, NHWC or not (the shared one stays fp32 NCHW).
fn backend_in(precision: Precision, nhwc: bool) -> Option<CudaBackend> {
    backend()?;
    Some(
        CudaBackend::new(0)
            .unwrap()
            .with_precision(precision)
            .with_conv_nhwc(nhwc),
    )
}

#[test]
fn conv2d_forward_and_backward_match_cpu() {
    let Some(gpu) = backend() else { return };
    check_conv2d(gpu, TOL);
}

#[test]
fn conv2d_in_nhwc_fp32_matches_cpu() {
    let Some(gpu) = backend_in(Precision::Fp32, true) else {
        return;
    };
    check_conv2d(&gpu, TOL);
}

#[test]
fn conv2d_in_bf16_stays_close() {
    let Some(gpu) = backend_in(Precision::Bf16, false) else {
        return;
    };
    check_conv2d(&gpu, BF16_TOL);
}

#[test]
fn conv_transpose2d_forward_and_backward_match_cpu() {
    let Some(gpu) = backend() else { return };
    check_conv_transpose2d(gpu, TOL);
}

#[test]
fn conv_transpose2d_in_nhwc_fp32_matches_cpu() {
    let Some(gpu) = backend_in(Precision::Fp32, true) else {
        return;
    };
    check_conv_transpose2d(&gpu, TOL);
}

#[test]
fn conv_transpose2d_in_bf16_stays_close() {
    let Some(gpu) = backend_in(Precision::Bf16, false) else {
        return;
    };
    check_conv_transpose2d(&gpu, BF16_TOL);
}

/// Forward (with and without bias), data and filter gradients of six convolutions against the
/// CPU within `tol`.
fn check_conv2d(gpu: &CudaBackend, tol: f64) {
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(11);
    let cases: [([usize; 4], [usize; 4], Conv2dAttrs); 6] = [
        (
            [2, 3, 9, 7],
            [4, 3, 3, 3],
            Conv2dAttrs::new().with_padding([1, 1]),
        ),
        (
            [1, 2, 11, 10],
            [3, 2, 3, 3],
            Conv2dAttrs::new().with_stride([2, 2]).with_padding([1, 1]),
        ),
        (
            [2, 4, 13, 9],
            [5, 4, 3, 3],
            Conv2dAttrs::new()
                .with_dilation([2, 2])
                .with_padding([2, 2]),
        ),
        ([3, 5, 8, 8], [6, 5, 1, 1], Conv2dAttrs::new()),
        (
            [1, 3, 7, 12],
            [2, 3, 5, 3],
            Conv2dAttrs::new()
                .with_stride([2, 1])
                .with_padding([2, 0])
                .with_dilation([1, 2]),
        ),
        (
            [2, 16, 17, 15],
            [8, 16, 3, 3],
            Conv2dAttrs::new().with_stride([2, 2]),
        ),
    ];
    for (xs, ws, attrs) in cases {
        let name = format!("x {xs:?} w {ws:?} {attrs:?}");
        let x = rand(&xs, &mut rng);
        let w = rand(&ws, &mut rng);
        let b = rand(&[ws[0]], &mut rng);
        for bias in [None, Some(&b)] {
            let y_gpu = gpu.conv2d(&x, &w, bias, &attrs).unwrap();
            let y_cpu = cpu.conv2d(&x, &w, bias, &attrs).unwrap();
            assert_close(&format!("conv2d {name}"), &y_gpu, &y_cpu, tol);
        }
        let y_shape = shape4(&cpu.conv2d(&x, &w, None, &attrs).unwrap());
        let dy = rand(&y_shape, &mut rng);
        assert_close(
            &format!("conv2d_backward_data {name}"),
            &gpu.conv2d_backward_data(&dy, &w, xs, &attrs).unwrap(),
            &cpu.conv2d_backward_data(&dy, &w, xs, &attrs).unwrap(),
            tol,
        );
        assert_close(
            &format!("conv2d_backward_filter {name}"),
            &gpu.conv2d_backward_filter(&x, &dy, ws, &attrs).unwrap(),
            &cpu.conv2d_backward_filter(&x, &dy, ws, &attrs).unwrap(),
            tol,
        );
        // Both gradients at once (one conversion of dy shared), and only one of them.
        let [dx, dw] = gpu
            .conv2d_backward(&x, &w, &dy, &attrs, [true, true])
            .unwrap();
        let [dx_c, dw_c] = cpu
            .conv2d_backward(&x, &w, &dy, &attrs, [true, true])
            .unwrap();
        assert_close(
            &format!("conv2d_backward dx {name}"),
            &dx.unwrap(),
            &dx_c.unwrap(),
            tol,
        );
        assert_close(
            &format!("conv2d_backward dw {name}"),
            &dw.unwrap(),
            &dw_c.unwrap(),
            tol,
        );
        let [dx, dw] = gpu
            .conv2d_backward(&x, &w, &dy, &attrs, [false, true])
            .unwrap();
        assert!(
            dx.is_none() && dw.is_some(),
            "{name}: only dw was asked for"
        );
    }
}

/// Forward (with and without bias), data and filter gradients of five transposed convolutions
/// against the CPU within `tol`.
fn check_conv_transpose2d(gpu: &CudaBackend, tol: f64) {
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(12);
    let cases: [(&str, [usize; 4], [usize; 4], ConvTranspose2dAttrs); 5] = [
        (
            "k2s2",
            [2, 4, 5, 6],
            [4, 3, 2, 2],
            ConvTranspose2dAttrs::new().with_stride([2, 2]),
        ),
        (
            "k3s2p1op1",
            [2, 5, 7, 4],
            [5, 3, 3, 3],
            ConvTranspose2dAttrs::new()
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_output_padding([1, 1]),
        ),
        (
            "k3s1p1",
            [1, 3, 9, 11],
            [3, 4, 3, 3],
            ConvTranspose2dAttrs::new().with_padding([1, 1]),
        ),
        (
            "k3s2 dilation 2",
            [2, 2, 5, 5],
            [2, 3, 3, 3],
            ConvTranspose2dAttrs::new()
                .with_stride([2, 2])
                .with_dilation([2, 2])
                .with_output_padding([1, 0]),
        ),
        (
            "k2s2 wide",
            [2, 32, 8, 9],
            [32, 16, 2, 2],
            ConvTranspose2dAttrs::new().with_stride([2, 2]),
        ),
    ];
    for (name, xs, ws, attrs) in cases {
        let x = rand(&xs, &mut rng);
        let w = rand(&ws, &mut rng);
        let b = rand(&[ws[1]], &mut rng);
        for bias in [None, Some(&b)] {
            assert_close(
                &format!("conv_transpose2d {name}"),
                &gpu.conv_transpose2d(&x, &w, bias, &attrs).unwrap(),
                &cpu.conv_transpose2d(&x, &w, bias, &attrs).unwrap(),
                tol,
            );
        }
        let y_shape = shape4(&cpu.conv_transpose2d(&x, &w, None, &attrs).unwrap());
        let dy = rand(&y_shape, &mut rng);
        assert_close(
            &format!("conv_transpose2d_backward_data {name}"),
            &gpu.conv_transpose2d_backward_data(&dy, &w, &attrs).unwrap(),
            &cpu.conv_transpose2d_backward_data(&dy, &w, &attrs).unwrap(),
            tol,
        );
        assert_close(
            &format!("conv_transpose2d_backward_filter {name}"),
            &gpu.conv_transpose2d_backward_filter(&x, &dy, ws, &attrs)
                .unwrap(),
            &cpu.conv_transpose2d_backward_filter(&x, &dy, ws, &attrs)
                .unwrap(),
            tol,
        );
        let [dx, dw] = gpu
            .conv_transpose2d_backward(&x, &w, &dy, &attrs, [true, true])
            .unwrap();
        let [dx_c, dw_c] = cpu
            .conv_transpose2d_backward(&x, &w, &dy, &attrs, [true, true])
            .unwrap();
        assert_close(
            &format!("conv_transpose2d_backward dx {name}"),
            &dx.unwrap(),
            &dx_c.unwrap(),
            tol,
        );
        assert_close(
            &format!("conv_transpose2d_backward dw {name}"),
            &dw.unwrap(),
            &dw_c.unwrap(),
            tol,
        );
        let [dx, dw] = gpu
            .conv_transpose2d_backward(&x, &w, &dy, &attrs, [true, false])
            .unwrap();
        assert!(
            dx.is_some() && dw.is_none(),
            "{name}: only dx was asked for"
        );
    }
}

#[test]
fn conv_algorithm_cache_is_hit_on_a_repeat_call() {
    if backend().is_none() {
        return;
    }
    // A backend of its own, so that other tests running in parallel do not move the counts.
    let gpu = CudaBackend::new(0).unwrap();
    let mut rng = SeededRng::new(13);
    // Five input channels: a problem cuDNN serves in every layout (the few-channel kernels take
    // at most four).
    let x = rand(&[2, 5, 10, 9], &mut rng);
    let w = rand(&[4, 5, 3, 3], &mut rng);
    let attrs = Conv2dAttrs::new().with_padding([1, 1]);
    let before = gpu.conv_algo_stats().unwrap();
    assert_eq!((before.cached, before.searches, before.hits), (0, 0, 0));
    let first = gpu.conv2d(&x, &w, None, &attrs).unwrap();
    let after_first = gpu.conv_algo_stats().unwrap();
    assert_eq!(
        (after_first.cached, after_first.searches, after_first.hits),
        (1, 1, 0)
    );
    let second = gpu.conv2d(&x, &w, None, &attrs).unwrap();
    let after_second = gpu.conv_algo_stats().unwrap();
    assert_eq!(
        (
            after_second.cached,
            after_second.searches,
            after_second.hits
        ),
        (1, 1, 1)
    );
    assert_eq!(first.to_vec().unwrap(), second.to_vec().unwrap());
    // Another problem (backward data of the same shapes) is a new search.
    let dy = rand(&[2, 4, 10, 9], &mut rng);
    gpu.conv2d_backward_data(&dy, &w, [2, 5, 10, 9], &attrs)
        .unwrap();
    let after_third = gpu.conv_algo_stats().unwrap();
    assert_eq!((after_third.cached, after_third.searches), (2, 2));
}

#[test]
fn tf32_convolutions_stay_close_in_both_layouts() {
    for nhwc in [false, true] {
        let Some(gpu) = backend_in(Precision::Tf32, nhwc) else {
            return;
        };
        check_conv2d(&gpu, BF16_TOL);
        check_conv_transpose2d(&gpu, BF16_TOL);
    }
}

#[test]
fn pooling_forward_and_backward_match_cpu() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(21);
    let cases: [([usize; 4], Pool2dAttrs); 5] = [
        ([2, 3, 8, 8], Pool2dAttrs::square(2)),
        ([1, 2, 9, 7], Pool2dAttrs::square(2)),
        (
            [2, 2, 11, 10],
            Pool2dAttrs::square(3)
                .with_stride([2, 2])
                .with_padding([1, 1]),
        ),
        (
            [1, 3, 7, 9],
            Pool2dAttrs {
                kernel: [3, 2],
                stride: [1, 2],
                padding: [1, 0],
                count_include_pad: true,
            },
        ),
        (
            [3, 1, 6, 5],
            Pool2dAttrs::square(4)
                .with_stride([1, 3])
                .with_padding([2, 1]),
        ),
    ];
    for (xs, attrs) in cases {
        let name = format!("x {xs:?} {attrs:?}");
        let x = distinct_tensor(&xs, &mut rng, 0.01);
        let y_gpu = gpu.max_pool2d(&x, &attrs).unwrap();
        let y_cpu = cpu.max_pool2d(&x, &attrs).unwrap();
        assert_close(&format!("max_pool2d {name}"), &y_gpu, &y_cpu, TOL);
        let dy = rand(y_cpu.shape(), &mut rng);
        assert_close(
            &format!("max_pool2d_backward {name}"),
            &gpu.max_pool2d_backward(&x, &y_gpu, &dy, &attrs).unwrap(),
            &cpu.max_pool2d_backward(&x, &y_cpu, &dy, &attrs).unwrap(),
            TOL,
        );
        for include in [true, false] {
            let attrs = attrs.with_count_include_pad(include);
            let name = format!("{name} count_include_pad {include}");
            let x = rand(&xs, &mut rng);
            assert_close(
                &format!("avg_pool2d {name}"),
                &gpu.avg_pool2d(&x, &attrs).unwrap(),
                &cpu.avg_pool2d(&x, &attrs).unwrap(),
                TOL,
            );
            assert_close(
                &format!("avg_pool2d_backward {name}"),
                &gpu.avg_pool2d_backward(&dy, xs, &attrs).unwrap(),
                &cpu.avg_pool2d_backward(&dy, xs, &attrs).unwrap(),
                TOL,
            );
        }
    }
}

#[test]
fn max_pool_ties_and_nan_route_like_the_cpu() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(22);
    // Every window full of ties: the gradient goes to the first element of each window.
    let attrs = Pool2dAttrs::square(3)
        .with_stride([2, 2])
        .with_padding([1, 1]);
    let x = Tensor::from_vec(
        (0..2 * 9 * 8).map(|i| (i % 3) as f32).collect(),
        &[1, 2, 9, 8],
    )
    .unwrap();
    let y = cpu.max_pool2d(&x, &attrs).unwrap();
    let dy = rand(y.shape(), &mut rng);
    let dx_gpu = gpu.max_pool2d_backward(&x, &y, &dy, &attrs).unwrap();
    let dx_cpu = cpu.max_pool2d_backward(&x, &y, &dy, &attrs).unwrap();
    assert_eq!(dx_gpu.to_vec().unwrap(), dx_cpu.to_vec().unwrap());
    let ones = Tensor::ones(&[2, 1, 4, 6]);
    let attrs = Pool2dAttrs::square(2);
    let dy = rand(&[2, 1, 2, 3], &mut rng);
    let y = cpu.max_pool2d(&ones, &attrs).unwrap();
    assert_eq!(
        gpu.max_pool2d_backward(&ones, &y, &dy, &attrs)
            .unwrap()
            .to_vec()
            .unwrap(),
        cpu.max_pool2d_backward(&ones, &y, &dy, &attrs)
            .unwrap()
            .to_vec()
            .unwrap()
    );
    // A NaN is the maximum of its window, forward and backward.
    let mut v = distinct_tensor(&[1, 1, 4, 4], &mut rng, 0.5)
        .to_vec()
        .unwrap();
    v[5] = f32::NAN;
    let x = Tensor::from_vec(v, &[1, 1, 4, 4]).unwrap();
    let y_gpu = gpu.max_pool2d(&x, &attrs).unwrap().to_vec().unwrap();
    let y_cpu = cpu.max_pool2d(&x, &attrs).unwrap().to_vec().unwrap();
    assert!(y_gpu[0].is_nan() && y_cpu[0].is_nan());
    assert_eq!(y_gpu[1..], y_cpu[1..]);
    let dy = rand(&[1, 1, 2, 2], &mut rng);
    let y = cpu.max_pool2d(&x, &attrs).unwrap();
    assert_eq!(
        gpu.max_pool2d_backward(&x, &y, &dy, &attrs)
            .unwrap()
            .to_vec()
            .unwrap(),
        cpu.max_pool2d_backward(&x, &y, &dy, &attrs)
            .unwrap()
            .to_vec()
            .unwrap()
    );
}

#[test]
fn activations_forward_and_backward_match_cpu() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(31);
    for shape in [vec![3, 5, 7, 9], vec![13, 11], vec![1]] {
        for kind in [
            Activation::Relu,
            Activation::LeakyRelu {
                negative_slope: 0.1,
            },
            Activation::Sigmoid,
            Activation::Tanh,
        ] {
            let name = format!("{kind:?} {shape:?}");
            let x = rand(&shape, &mut rng);
            let y_gpu = gpu.activation(&x, kind).unwrap();
            let y_cpu = cpu.activation(&x, kind).unwrap();
            assert_close(&format!("activation {name}"), &y_gpu, &y_cpu, TOL);
            let dy = rand(&shape, &mut rng);
            assert_close(
                &format!("activation_backward {name}"),
                &gpu.activation_backward(&x, &y_gpu, &dy, kind).unwrap(),
                &cpu.activation_backward(&x, &y_cpu, &dy, kind).unwrap(),
                TOL,
            );
        }
    }
}

#[test]
fn batch_norm_train_eval_and_backward_match_cpu() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(41);
    for shape in [
        vec![4, 3, 5, 7],
        vec![8, 6],
        vec![2, 3, 4, 5, 3],
        vec![1, 5, 9, 1],
    ] {
        let c = shape[1];
        let name = format!("{shape:?}");
        let attrs = BatchNormAttrs {
            momentum: 0.3,
            eps: 1e-3,
        };
        let x = rand(&shape, &mut rng);
        let gamma = rand(&[c], &mut rng);
        let beta = rand(&[c], &mut rng);
        let mean0 = rand(&[c], &mut rng);
        let var0 = Tensor::from_vec(
            rand(&[c], &mut rng)
                .to_vec()
                .unwrap()
                .iter()
                .map(|v| v.abs() + 0.5)
                .collect(),
            &[c],
        )
        .unwrap();

        let (mut rm_g, mut rv_g) = (mean0.clone(), var0.clone());
        let (mut rm_c, mut rv_c) = (mean0.clone(), var0.clone());
        let (y_g, saved_g) = gpu
            .batch_norm_train(&x, &gamma, &beta, &mut rm_g, &mut rv_g, &attrs)
            .unwrap();
        let (y_c, saved_c) = cpu
            .batch_norm_train(&x, &gamma, &beta, &mut rm_c, &mut rv_c, &attrs)
            .unwrap();
        assert_close(&format!("bn train y {name}"), &y_g, &y_c, TOL);
        assert_close(
            &format!("bn train mean {name}"),
            &saved_g.mean,
            &saved_c.mean,
            TOL,
        );
        assert_close(
            &format!("bn train inv_std {name}"),
            &saved_g.inv_std,
            &saved_c.inv_std,
            TOL,
        );
        assert_close(&format!("bn running mean {name}"), &rm_g, &rm_c, TOL);
        assert_close(&format!("bn running var {name}"), &rv_g, &rv_c, TOL);

        let dy = rand(&shape, &mut rng);
        let (dx_g, dg_g, db_g) = gpu
            .batch_norm_backward(&x, &dy, &gamma, &saved_c, true)
            .unwrap();
        let (dx_c, dg_c, db_c) = cpu
            .batch_norm_backward(&x, &dy, &gamma, &saved_c, true)
            .unwrap();
        assert_close(&format!("bn backward dx {name}"), &dx_g, &dx_c, TOL);
        assert_close(&format!("bn backward dgamma {name}"), &dg_g, &dg_c, TOL);
        assert_close(&format!("bn backward dbeta {name}"), &db_g, &db_c, TOL);

        let (y_g, saved_g) = gpu
            .batch_norm_eval(&x, &gamma, &beta, &mean0, &var0, &attrs)
            .unwrap();
        let (y_c, saved_c) = cpu
            .batch_norm_eval(&x, &gamma, &beta, &mean0, &var0, &attrs)
            .unwrap();
        assert_close(&format!("bn eval y {name}"), &y_g, &y_c, TOL);
        assert_close(
            &format!("bn eval mean {name}"),
            &saved_g.mean,
            &saved_c.mean,
            TOL,
        );
        assert_close(
            &format!("bn eval inv_std {name}"),
            &saved_g.inv_std,
            &saved_c.inv_std,
            TOL,
        );
        let (dx_g, dg_g, db_g) = gpu
            .batch_norm_backward(&x, &dy, &gamma, &saved_g, false)
            .unwrap();
        let (dx_c, dg_c, db_c) = cpu
            .batch_norm_backward(&x, &dy, &gamma, &saved_c, false)
            .unwrap();
        assert_close(&format!("bn frozen dx {name}"), &dx_g, &dx_c, TOL);
        assert_close(&format!("bn frozen dgamma {name}"), &dg_g, &dg_c, TOL);
        assert_close(&format!("bn frozen dbeta {name}"), &db_g, &db_c, TOL);
    }
}

#[test]
fn softmax_and_log_softmax_match_cpu() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(51);
    for shape in [
        vec![2, 5, 3, 4],
        vec![7, 10],
        vec![1, 3, 2, 2, 3],
        vec![3, 1, 5],
    ] {
        let name = format!("{shape:?}");
        let x = rand(&shape, &mut rng);
        let dy = rand(&shape, &mut rng);
        let y_g = gpu.softmax(&x).unwrap();
        let y_c = cpu.softmax(&x).unwrap();
        assert_close(&format!("softmax {name}"), &y_g, &y_c, TOL);
        assert_close(
            &format!("softmax_backward {name}"),
            &gpu.softmax_backward(&y_g, &dy).unwrap(),
            &cpu.softmax_backward(&y_c, &dy).unwrap(),
            TOL,
        );
        let y_g = gpu.log_softmax(&x).unwrap();
        let y_c = cpu.log_softmax(&x).unwrap();
        assert_close(&format!("log_softmax {name}"), &y_g, &y_c, TOL);
        assert_close(
            &format!("log_softmax_backward {name}"),
            &gpu.log_softmax_backward(&y_g, &dy).unwrap(),
            &cpu.log_softmax_backward(&y_c, &dy).unwrap(),
            TOL,
        );
    }
}

#[test]
fn matmul_with_every_transpose_matches_cpu() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(61);
    for (m, k, n) in [
        (37, 53, 29),
        (1, 1, 1),
        (130, 70, 65),
        (64, 16, 64),
        (3, 200, 2),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = rand(&if ta { [k, m] } else { [m, k] }, &mut rng);
            let b = rand(&if tb { [n, k] } else { [k, n] }, &mut rng);
            assert_close(
                &format!("matmul {m}x{k}x{n} ta {ta} tb {tb}"),
                &gpu.matmul(&a, &b, ta, tb).unwrap(),
                &cpu.matmul(&a, &b, ta, tb).unwrap(),
                TOL,
            );
        }
    }
}

#[test]
fn bad_shapes_give_the_cpu_typed_errors() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let z = Tensor::zeros;
    let conv = Conv2dAttrs::new();
    // Convolutions.
    let x = z(&[1, 3, 8, 8]);
    same_error(
        "conv2d channels",
        gpu.conv2d(&x, &z(&[4, 2, 3, 3]), None, &conv),
        cpu.conv2d(&x, &z(&[4, 2, 3, 3]), None, &conv),
    );
    same_error(
        "conv2d kernel too large",
        gpu.conv2d(&x, &z(&[4, 3, 9, 9]), None, &conv),
        cpu.conv2d(&x, &z(&[4, 3, 9, 9]), None, &conv),
    );
    let stride0 = Conv2dAttrs::new().with_stride([0, 1]);
    same_error(
        "conv2d stride 0",
        gpu.conv2d(&x, &z(&[4, 3, 3, 3]), None, &stride0),
        cpu.conv2d(&x, &z(&[4, 3, 3, 3]), None, &stride0),
    );
    same_error(
        "conv2d bias",
        gpu.conv2d(&x, &z(&[4, 3, 3, 3]), Some(&z(&[3])), &conv),
        cpu.conv2d(&x, &z(&[4, 3, 3, 3]), Some(&z(&[3])), &conv),
    );
    same_error(
        "conv2d rank",
        gpu.conv2d(&z(&[3, 8, 8]), &z(&[4, 3, 3, 3]), None, &conv),
        cpu.conv2d(&z(&[3, 8, 8]), &z(&[4, 3, 3, 3]), None, &conv),
    );
    same_error(
        "conv2d_backward_data dy",
        gpu.conv2d_backward_data(&z(&[1, 4, 5, 5]), &z(&[4, 3, 3, 3]), [1, 3, 8, 8], &conv),
        cpu.conv2d_backward_data(&z(&[1, 4, 5, 5]), &z(&[4, 3, 3, 3]), [1, 3, 8, 8], &conv),
    );
    same_error(
        "conv2d_backward_filter dy",
        gpu.conv2d_backward_filter(&x, &z(&[1, 5, 6, 6]), [4, 3, 3, 3], &conv),
        cpu.conv2d_backward_filter(&x, &z(&[1, 5, 6, 6]), [4, 3, 3, 3], &conv),
    );
    let t = ConvTranspose2dAttrs::new().with_stride([2, 2]);
    same_error(
        "conv_transpose2d channels",
        gpu.conv_transpose2d(&x, &z(&[2, 4, 2, 2]), None, &t),
        cpu.conv_transpose2d(&x, &z(&[2, 4, 2, 2]), None, &t),
    );
    let bad_op = t.with_output_padding([2, 0]);
    same_error(
        "conv_transpose2d output_padding",
        gpu.conv_transpose2d(&x, &z(&[3, 4, 2, 2]), None, &bad_op),
        cpu.conv_transpose2d(&x, &z(&[3, 4, 2, 2]), None, &bad_op),
    );
    // output_padding ≥ stride but < dilation: the CPU refuses it in the data gradient.
    let dil = ConvTranspose2dAttrs::new()
        .with_dilation([2, 2])
        .with_output_padding([1, 1]);
    same_error(
        "conv_transpose2d output_padding vs stride",
        gpu.conv_transpose2d(&x, &z(&[3, 4, 3, 3]), None, &dil),
        cpu.conv_transpose2d(&x, &z(&[3, 4, 3, 3]), None, &dil),
    );
    same_error(
        "conv_transpose2d bias",
        gpu.conv_transpose2d(&x, &z(&[3, 4, 2, 2]), Some(&z(&[3])), &t),
        cpu.conv_transpose2d(&x, &z(&[3, 4, 2, 2]), Some(&z(&[3])), &t),
    );
    // Pooling.
    let p2 = Pool2dAttrs::square(2);
    same_error(
        "max_pool2d too small",
        gpu.max_pool2d(&z(&[1, 1, 1, 1]), &p2),
        cpu.max_pool2d(&z(&[1, 1, 1, 1]), &p2),
    );
    let bad_pad = Pool2dAttrs::square(2).with_padding([2, 2]);
    same_error(
        "avg_pool2d padding",
        gpu.avg_pool2d(&x, &bad_pad),
        cpu.avg_pool2d(&x, &bad_pad),
    );
    same_error(
        "max_pool2d_backward dy",
        gpu.max_pool2d_backward(&x, &z(&[1, 3, 4, 4]), &z(&[1, 3, 4, 5]), &p2),
        cpu.max_pool2d_backward(&x, &z(&[1, 3, 4, 4]), &z(&[1, 3, 4, 5]), &p2),
    );
    same_error(
        "avg_pool2d_backward dy",
        gpu.avg_pool2d_backward(&z(&[1, 3, 3, 4]), [1, 3, 8, 8], &p2),
        cpu.avg_pool2d_backward(&z(&[1, 3, 3, 4]), [1, 3, 8, 8], &p2),
    );
    // Activations, softmax, matmul.
    same_error(
        "activation_backward",
        gpu.activation_backward(&z(&[2, 3]), &z(&[2, 3]), &z(&[3, 2]), Activation::Tanh),
        cpu.activation_backward(&z(&[2, 3]), &z(&[2, 3]), &z(&[3, 2]), Activation::Tanh),
    );
    same_error("softmax rank", gpu.softmax(&z(&[5])), cpu.softmax(&z(&[5])));
    same_error(
        "log_softmax_backward",
        gpu.log_softmax_backward(&z(&[2, 3]), &z(&[2, 4])),
        cpu.log_softmax_backward(&z(&[2, 3]), &z(&[2, 4])),
    );
    same_error(
        "matmul inner",
        gpu.matmul(&z(&[2, 3]), &z(&[4, 5]), false, false),
        cpu.matmul(&z(&[2, 3]), &z(&[4, 5]), false, false),
    );
    same_error(
        "matmul rank",
        gpu.matmul(&z(&[2, 3, 1]), &z(&[3, 5]), false, false),
        cpu.matmul(&z(&[2, 3, 1]), &z(&[3, 5]), false, false),
    );
    // Batch norm.
    let bn = BatchNormAttrs::default();
    let (g3, b3) = (z(&[3]), z(&[3]));
    let (mut m_g, mut v_g) = (z(&[3]), Tensor::ones(&[3]));
    let (mut m_c, mut v_c) = (z(&[3]), Tensor::ones(&[3]));
    same_error(
        "batch_norm_train gamma",
        gpu.batch_norm_train(&x, &z(&[2]), &b3, &mut m_g, &mut v_g, &bn),
        cpu.batch_norm_train(&x, &z(&[2]), &b3, &mut m_c, &mut v_c, &bn),
    );
    same_error(
        "batch_norm_train one value per channel",
        gpu.batch_norm_train(&z(&[1, 3, 1, 1]), &g3, &b3, &mut m_g, &mut v_g, &bn),
        cpu.batch_norm_train(&z(&[1, 3, 1, 1]), &g3, &b3, &mut m_c, &mut v_c, &bn),
    );
    same_error(
        "batch_norm_eval rank",
        gpu.batch_norm_eval(&z(&[3]), &g3, &b3, &m_g, &v_g, &bn),
        cpu.batch_norm_eval(&z(&[3]), &g3, &b3, &m_c, &v_c, &bn),
    );
    let saved = BatchNormSaved {
        mean: z(&[3]),
        inv_std: Tensor::ones(&[3]),
        relu_mask: None,
    };
    same_error(
        "batch_norm_backward dy",
        gpu.batch_norm_backward(&x, &z(&[1, 3, 8, 7]), &g3, &saved, true),
        cpu.batch_norm_backward(&x, &z(&[1, 3, 8, 7]), &g3, &saved, true),
    );
    let short = BatchNormSaved {
        mean: z(&[2]),
        inv_std: Tensor::ones(&[3]),
        relu_mask: None,
    };
    same_error(
        "batch_norm_backward saved",
        gpu.batch_norm_backward(&x, &x, &g3, &short, false),
        cpu.batch_norm_backward(&x, &x, &g3, &short, false),
    );
    assert!(matches!(
        gpu.conv2d(&x, &z(&[4, 2, 3, 3]), None, &conv),
        Err(OpError::Shape { .. })
    ));
}

#[test]
fn empty_batches_give_empty_results() {
    let Some(gpu) = backend() else { return };
    let cpu = CpuBackend::new();
    let x = Tensor::zeros(&[0, 3, 8, 8]);
    let w = Tensor::zeros(&[4, 3, 3, 3]);
    let attrs = Conv2dAttrs::new();
    assert_eq!(
        gpu.conv2d(&x, &w, None, &attrs).unwrap().shape(),
        cpu.conv2d(&x, &w, None, &attrs).unwrap().shape()
    );
    let dw = gpu
        .conv2d_backward_filter(&x, &Tensor::zeros(&[0, 4, 6, 6]), [4, 3, 3, 3], &attrs)
        .unwrap();
    assert_eq!(dw.to_vec().unwrap(), vec![0.0; 4 * 27]);
    assert_eq!(
        gpu.max_pool2d(&x, &Pool2dAttrs::square(2)).unwrap().shape(),
        &[0, 3, 4, 4]
    );
    assert_eq!(gpu.softmax(&x).unwrap().shape(), x.shape());
    assert_eq!(
        gpu.matmul(
            &Tensor::zeros(&[3, 0]),
            &Tensor::zeros(&[0, 2]),
            false,
            false
        )
        .unwrap()
        .to_vec()
        .unwrap(),
        vec![0.0; 6]
    );
}

/// One NHWC mode of the backend: the activations between the convolutions are NHWC tensors of
/// `dtype`; `round` is the relative error of one rounding of an activation to that type, `chain`
/// the tolerances of the conv → BN → ReLU → conv test (forward values, gradients).
struct NhwcMode {
    name: &'static str,
    precision: Precision,
    conv_nhwc: bool,
    dtype: magma_tensor::DType,
    round: f64,
    chain: [f64; 2],
}

/// bf16 mixed precision, TF32 (NHWC by default) and fp32 with the NHWC switch.
fn nhwc_modes() -> [NhwcMode; 3] {
    use magma_tensor::DType;
    [
        NhwcMode {
            name: "bf16",
            precision: Precision::Bf16,
            conv_nhwc: false,
            dtype: DType::BF16,
            round: 1e-2,
            // Forward values round ~6 times to bf16 (0.4 % each); the gradients also pass
            // through the cancellation of the batch-norm backward, which amplifies them.
            chain: [2e-2, 8e-2],
        },
        NhwcMode {
            name: "tf32",
            precision: Precision::Tf32,
            conv_nhwc: true,
            dtype: DType::F32,
            round: 1e-5,
            // TF32 keeps 11 significant bits in the convolutions' products only.
            chain: [2e-2, 8e-2],
        },
        NhwcMode {
            name: "fp32 nhwc",
            precision: Precision::Fp32,
            conv_nhwc: true,
            dtype: DType::F32,
            round: 1e-5,
            chain: [TOL, TOL],
        },
    ]
}

/// `t` is an NHWC activation of `dtype`.
#[track_caller]
fn assert_nhwc(t: &Tensor, dtype: magma_tensor::DType, what: &str) {
    assert_eq!(t.dtype(), dtype, "{what}: element type");
    assert_eq!(
        t.memory_format(),
        Some(magma_tensor::MemoryFormat::ChannelsLast),
        "{what}: layout"
    );
}

/// The input of an NHWC-mode op as the backend's own convolution hands it over: a 1×1 identity
/// convolution returns `t` as an NHWC activation of the mode's type (rounded once).
fn as_activation(gpu: &CudaBackend, t: &Tensor, dtype: magma_tensor::DType) -> Tensor {
    let c = t.shape()[1];
    let mut eye = vec![0.0; c * c];
    (0..c).for_each(|i| eye[i * c + i] = 1.0);
    let eye = Tensor::from_vec(eye, &[c, c, 1, 1]).unwrap();
    let y = gpu.conv2d(t, &eye, None, &Conv2dAttrs::new()).unwrap();
    assert_nhwc(&y, dtype, "identity convolution");
    y
}

/// In each NHWC mode the activations of conv → batch norm → ReLU → conv stay NHWC tensors of the
/// mode's type, forward and backward, and every value (read in logical order) stays close to the
/// CPU's fp32 chain.
#[test]
fn nhwc_activations_flow_through_conv_bn_relu_conv_and_back() {
    for mode in nhwc_modes() {
        let Some(gpu) = backend_in(mode.precision, mode.conv_nhwc) else {
            return;
        };
        check_conv_bn_relu_chain(&gpu, &mode);
    }
}

fn check_conv_bn_relu_chain(gpu: &CudaBackend, mode: &NhwcMode) {
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(31);
    let x = rand(&[2, 8, 10, 12], &mut rng);
    let (w1, w2) = (
        rand(&[16, 8, 3, 3], &mut rng),
        rand(&[8, 16, 3, 3], &mut rng),
    );
    let gamma = rand(&[16], &mut rng).map(|v| 1.0 + v).unwrap();
    let beta = rand(&[16], &mut rng);
    let attrs = Conv2dAttrs::new().with_padding([1, 1]);
    let bn = BatchNormAttrs::default();
    let chain = |be: &dyn dnn_ops::Backend, expect_nhwc: bool| {
        let (mut rm, mut rv) = (Tensor::zeros(&[16]), Tensor::ones(&[16]));
        let y1 = be.conv2d(&x, &w1, None, &attrs).unwrap();
        let (z1, saved) = be
            .batch_norm_train(&y1, &gamma, &beta, &mut rm, &mut rv, &bn)
            .unwrap();
        let a1 = be.activation(&z1, Activation::Relu).unwrap();
        let y2 = be.conv2d(&a1, &w2, None, &attrs).unwrap();
        if expect_nhwc {
            for (name, t) in [("conv", &y1), ("bn", &z1), ("relu", &a1), ("conv 2", &y2)] {
                assert_nhwc(t, mode.dtype, &format!("{} {name} output", mode.name));
            }
        }
        let dy2 = random_tensor(y2.shape(), &mut SeededRng::new(5), 1.0);
        let [da1, dw2] = be
            .conv2d_backward(&a1, &w2, &dy2, &attrs, [true, true])
            .unwrap();
        let da1 = da1.unwrap();
        let dz1 = be
            .activation_backward(&z1, &a1, &da1, Activation::Relu)
            .unwrap();
        let (dy1, dg, db) = be
            .batch_norm_backward(&y1, &dz1, &gamma, &saved, true)
            .unwrap();
        if expect_nhwc {
            for (name, t) in [("conv dx", &da1), ("relu dx", &dz1), ("bn dx", &dy1)] {
                assert_nhwc(t, mode.dtype, &format!("{} {name}", mode.name));
            }
        }
        let [dx, dw1] = be
            .conv2d_backward(&x, &w1, &dy1, &attrs, [true, true])
            .unwrap();
        let dx = dx.unwrap();
        assert_eq!(
            dx.dtype(),
            magma_tensor::DType::F32,
            "the input's gradient is fp32"
        );
        [y2, dx, dw1.unwrap(), dw2.unwrap(), dg, db, rm, rv]
    };
    let got = chain(gpu, true);
    let want = chain(&cpu, false);
    let names = [
        "y2",
        "dx",
        "dw1",
        "dw2",
        "dgamma",
        "dbeta",
        "running mean",
        "running var",
    ];
    let [fwd, grad] = mode.chain;
    let tolerances = [fwd, grad, grad, fwd, grad, grad, fwd, fwd];
    for (((name, g), w), tol) in names.iter().zip(&got).zip(&want).zip(tolerances) {
        let err = dnn_ops::testing::relative_error(g, w).unwrap();
        println!("{} chain {name}: relative error {err:.2e}", mode.name);
        assert!(
            err < tol,
            "{} chain {name}: relative error {err:.2e} > {tol:.0e}",
            mode.name
        );
    }
}

/// The NHWC batch norm (our kernels, bf16 and fp32) on the values of an NHWC activation matches
/// the CPU's fp32 batch norm of the same values up to the rounding of its outputs, for channel
/// counts that do not fill a 32-channel tile and row counts spanning several reduction chunks;
/// fused with a ReLU it is bit for bit the two ops in a row.
#[test]
fn nhwc_batch_norm_matches_the_cpu_on_the_same_values() {
    for mode in nhwc_modes() {
        let Some(gpu) = backend_in(mode.precision, mode.conv_nhwc) else {
            return;
        };
        check_nhwc_batch_norm(&gpu, &mode);
    }
}

fn check_nhwc_batch_norm(gpu: &CudaBackend, mode: &NhwcMode) {
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(41);
    for (shape, seed) in [
        ([3, 40, 33, 35], 1u64),
        ([2, 5, 7, 9], 2),
        ([1, 64, 64, 64], 3),
        // Two eight-channel groups in flight per thread in the bf16 backward (more groups than
        // its bounded grid has threads).
        ([4, 64, 96, 96], 4),
    ] {
        let c = shape[1];
        let as_act = |t: &Tensor| as_activation(gpu, t, mode.dtype);
        let x = as_act(
            &random_tensor(&shape, &mut rng, 0.0)
                .map(|v| 3.0 * v + 1.5)
                .unwrap(),
        );
        let dy = as_act(&random_tensor(&shape, &mut rng, 0.0));
        let (x_host, dy_host) = (x.to_host().unwrap(), dy.to_host().unwrap());
        let gamma = random_tensor(&[c], &mut SeededRng::new(seed), 0.1);
        let beta = random_tensor(&[c], &mut SeededRng::new(seed + 9), 0.0);
        let attrs = BatchNormAttrs {
            momentum: 0.3,
            eps: 1e-3,
        };
        let name = format!("{} {shape:?}", mode.name);
        let (mut rm_g, mut rv_g) = (Tensor::zeros(&[c]), Tensor::ones(&[c]));
        let (mut rm_c, mut rv_c) = (Tensor::zeros(&[c]), Tensor::ones(&[c]));
        let (y_g, saved_g) = gpu
            .batch_norm_train(&x, &gamma, &beta, &mut rm_g, &mut rv_g, &attrs)
            .unwrap();
        let (y_c, saved_c) = cpu
            .batch_norm_train(&x_host, &gamma, &beta, &mut rm_c, &mut rv_c, &attrs)
            .unwrap();
        assert_nhwc(&y_g, mode.dtype, &name);
        assert_close(&format!("bn y {name}"), &y_g, &y_c, mode.round);
        assert_close(
            &format!("bn mean {name}"),
            &saved_g.mean,
            &saved_c.mean,
            1e-5,
        );
        assert_close(
            &format!("bn inv_std {name}"),
            &saved_g.inv_std,
            &saved_c.inv_std,
            1e-5,
        );
        assert_close(&format!("bn running mean {name}"), &rm_g, &rm_c, 1e-5);
        assert_close(&format!("bn running var {name}"), &rv_g, &rv_c, 1e-5);
        let (dx_g, dg_g, db_g) = gpu
            .batch_norm_backward(&x, &dy, &gamma, &saved_g, true)
            .unwrap();
        let (dx_c, dg_c, db_c) = cpu
            .batch_norm_backward(&x_host, &dy_host, &gamma, &saved_c, true)
            .unwrap();
        assert_nhwc(&dx_g, mode.dtype, &name);
        assert_close(&format!("bn dx {name}"), &dx_g, &dx_c, mode.round.max(1e-4));
        assert_close(&format!("bn dgamma {name}"), &dg_g, &dg_c, 1e-4);
        assert_close(&format!("bn dbeta {name}"), &db_g, &db_c, 1e-4);

        // Fused with a ReLU: bit for bit the two ops in a row on the GPU, forward and backward.
        let (mut rm_f, mut rv_f) = (Tensor::zeros(&[c]), Tensor::ones(&[c]));
        let (yf, saved_f) = gpu
            .batch_norm_relu_train(&x, &gamma, &beta, &mut rm_f, &mut rv_f, &attrs)
            .unwrap();
        assert_nhwc(&yf, mode.dtype, &format!("{name} fused"));
        let y_relu = gpu.activation(&y_g, Activation::Relu).unwrap();
        assert_eq!(
            yf.to_vec().unwrap(),
            y_relu.to_vec().unwrap(),
            "bn+relu y {name}"
        );
        assert_eq!(rm_f.to_vec().unwrap(), rm_g.to_vec().unwrap(), "{name}");
        let (dxf, dgf, dbf) = gpu
            .batch_norm_relu_backward(&x, &yf, &dy, &gamma, &saved_f)
            .unwrap();
        let dz = gpu
            .activation_backward(&y_relu, &y_relu, &dy, Activation::Relu)
            .unwrap();
        let (dx_u, dg_u, db_u) = gpu
            .batch_norm_backward(&x, &dz, &gamma, &saved_g, true)
            .unwrap();
        assert_eq!(
            dxf.to_vec().unwrap(),
            dx_u.to_vec().unwrap(),
            "bn+relu dx {name}"
        );
        assert_eq!(
            dgf.to_vec().unwrap(),
            dg_u.to_vec().unwrap(),
            "bn+relu dgamma {name}"
        );
        assert_eq!(
            dbf.to_vec().unwrap(),
            db_u.to_vec().unwrap(),
            "bn+relu dbeta {name}"
        );
        // And the CPU's composition of the same values.
        let (dx_cf, _, _) = cpu
            .batch_norm_relu_backward(&x_host, &yf.to_host().unwrap(), &dy_host, &gamma, &saved_c)
            .unwrap();
        assert_close(
            &format!("bn+relu dx vs cpu {name}"),
            &dxf,
            &dx_cf,
            mode.round.max(1e-4),
        );
        if mode.dtype == magma_tensor::DType::F32 {
            // fp32 recomputes the ReLU's mask from x with the forward's coefficients.
            let (scale, shift) = saved_f.relu_mask.clone().expect("fp32 keeps the mask");
            // Per-channel vectors given as views at an odd offset (no 16-byte accesses
            // possible): the same bits through the pair kernels.
            let offset_view = |t: &Tensor| {
                let host = t.to_vec().unwrap();
                let mut padded = vec![0.0];
                padded.extend(host);
                let dev = gpu
                    .add(
                        &Tensor::from_vec(padded, &[c + 1]).unwrap(),
                        &Tensor::zeros(&[c + 1]),
                    )
                    .unwrap();
                dev.narrow(0, 1, c).unwrap()
            };
            let shifted = dnn_ops::backend::BatchNormSaved {
                mean: offset_view(&saved_f.mean),
                inv_std: offset_view(&saved_f.inv_std),
                relu_mask: Some((offset_view(&scale), offset_view(&shift))),
            };
            let (dx_o, dg_o, _) = gpu
                .batch_norm_relu_backward(&x, &yf, &dy, &gamma, &shifted)
                .unwrap();
            assert_eq!(
                dx_o.to_vec().unwrap(),
                dxf.to_vec().unwrap(),
                "offset views {name}"
            );
            assert_eq!(
                dg_o.to_vec().unwrap(),
                dgf.to_vec().unwrap(),
                "offset views {name}"
            );
            // Coefficients of the wrong length are refused, as other saved vectors are.
            let short = dnn_ops::backend::BatchNormSaved {
                relu_mask: Some((scale.narrow(0, 0, c - 1).unwrap(), shift)),
                ..saved_f.clone()
            };
            assert!(
                gpu.batch_norm_relu_backward(&x, &yf, &dy, &gamma, &short)
                    .is_err(),
                "a short ReLU mask must be refused ({name})"
            );
        }
    }
}

/// The NHWC twins (bf16 and fp32) of max pooling (forward and backward), channel concat and
/// split, the sum of two activations, the channel bias and its gradient (the per-channel sum)
/// keep NHWC activations as they are and match the CPU on the same values: copies exactly,
/// arithmetic up to the one rounding of a result. bf16 with odd channel counts falls back to
/// fp32.
#[test]
fn nhwc_pool_concat_split_add_and_bias_match_the_cpu_on_the_same_values() {
    for mode in nhwc_modes() {
        let Some(gpu) = backend_in(mode.precision, mode.conv_nhwc) else {
            return;
        };
        check_nhwc_shape_ops(&gpu, &mode);
    }
}

fn check_nhwc_shape_ops(gpu: &CudaBackend, mode: &NhwcMode) {
    let cpu = CpuBackend::new();
    let act_type = mode.dtype;
    let mut rng = SeededRng::new(43);
    let as_act = |t: &Tensor| as_activation(gpu, t, act_type);
    let pools = [
        Pool2dAttrs::square(2),
        Pool2dAttrs::square(3)
            .with_stride([2, 2])
            .with_padding([1, 1]),
        Pool2dAttrs::square(3)
            .with_stride([1, 1])
            .with_padding([1, 1]),
    ];
    for shape in [[2, 6, 9, 11], [1, 40, 16, 16], [1, 24, 9, 7]] {
        // Values on a coarse grid, so that windows hold ties (the first maximum wins).
        let x = as_act(
            &random_tensor(&shape, &mut rng, 0.0)
                .map(|v| (v * 4.0).round())
                .unwrap(),
        );
        let x_host = x.to_host().unwrap();
        for attrs in &pools {
            let name = format!("{} {shape:?} {attrs:?}", mode.name);
            let y = gpu.max_pool2d(&x, attrs).unwrap();
            assert_nhwc(&y, act_type, &format!("max_pool2d {name}"));
            let y_c = cpu.max_pool2d(&x_host, attrs).unwrap();
            assert_eq!(
                y.to_vec().unwrap(),
                y_c.to_vec().unwrap(),
                "max_pool2d {name}"
            );
            let dy = as_act(&random_tensor(y_c.shape(), &mut rng, 0.0));
            let dx = gpu.max_pool2d_backward(&x, &y, &dy, attrs).unwrap();
            assert_nhwc(&dx, act_type, &format!("max_pool2d_backward {name}"));
            let dx_c = cpu
                .max_pool2d_backward(&x_host, &y_c, &dy.to_host().unwrap(), attrs)
                .unwrap();
            assert_close(
                &format!("max_pool2d_backward {name}"),
                &dx,
                &dx_c,
                mode.round,
            );
        }
    }

    let [n, h, w] = [2, 5, 7];
    let a = as_act(&random_tensor(&[n, 6, h, w], &mut rng, 0.0));
    let b = as_act(&random_tensor(&[n, 4, h, w], &mut rng, 0.0));
    let (a_host, b_host) = (a.to_host().unwrap(), b.to_host().unwrap());
    let joined = gpu.concat(&[&a, &b], 1).unwrap();
    assert_nhwc(&joined, act_type, "concat");
    let joined_c = cpu.concat(&[&a_host, &b_host], 1).unwrap();
    assert_eq!(
        joined.to_vec().unwrap(),
        joined_c.to_vec().unwrap(),
        "concat"
    );
    let parts = gpu.split(&joined, 1, &[4, 2, 4]).unwrap();
    let parts_c = cpu.split(&joined_c, 1, &[4, 2, 4]).unwrap();
    for (i, (p, p_c)) in parts.iter().zip(&parts_c).enumerate() {
        assert_nhwc(p, act_type, &format!("split part {i}"));
        assert_eq!(p.to_vec().unwrap(), p_c.to_vec().unwrap(), "split part {i}");
    }
    // An odd channel count: the same values (bf16: through the NCHW fp32 path).
    let odd = as_act(&random_tensor(&[n, 3, h, w], &mut rng, 0.0));
    let mixed = gpu.concat(&[&a, &odd], 1).unwrap();
    assert_eq!(
        mixed.dtype(),
        magma_tensor::DType::F32,
        "concat of an odd part"
    );
    let mixed_c = cpu.concat(&[&a_host, &odd.to_host().unwrap()], 1).unwrap();
    assert_eq!(
        mixed.to_vec().unwrap(),
        mixed_c.to_vec().unwrap(),
        "odd concat"
    );
    let odd_parts = gpu.split(&mixed, 1, &[6, 3]).unwrap();
    assert_eq!(
        odd_parts[1].to_vec().unwrap(),
        odd.to_vec().unwrap(),
        "odd split"
    );

    let a2 = as_act(&random_tensor(&[n, 6, h, w], &mut rng, 0.0));
    let sum = gpu.add(&a, &a2).unwrap();
    assert_nhwc(&sum, act_type, "add");
    let sum_c = cpu.add(&a_host, &a2.to_host().unwrap()).unwrap();
    assert_close("add", &sum, &sum_c, mode.round);
    // An NHWC activation + an NCHW fp32 tensor is computed in NCHW fp32 (for bf16, as
    // autocast's type promotion does).
    let f = random_tensor(&[n, 6, h, w], &mut rng, 0.0);
    let promoted = gpu.add(&a, &f).unwrap();
    assert_eq!(promoted.dtype(), magma_tensor::DType::F32, "NHWC + fp32");
    assert_close(
        "NHWC + fp32",
        &promoted,
        &cpu.add(&a_host, &f).unwrap(),
        1e-6,
    );

    let bias = random_tensor(&[6], &mut rng, 0.0);
    let biased = gpu.add_channel_bias(&a, &bias).unwrap();
    assert_nhwc(&biased, act_type, "add_channel_bias");
    let biased_c = cpu.add_channel_bias(&a_host, &bias).unwrap();
    assert_close("add_channel_bias", &biased, &biased_c, mode.round);
    // Channel counts that fill 16-byte vectors (the kernels' wide path), and a sum whose length
    // leaves a tail after the whole vectors.
    let wide = as_act(&random_tensor(&[2, 24, 5, 3], &mut rng, 0.0));
    let wide_host = wide.to_host().unwrap();
    let wide_bias = random_tensor(&[24], &mut rng, 0.0);
    let biased = gpu.add_channel_bias(&wide, &wide_bias).unwrap();
    assert_nhwc(&biased, act_type, "wide add_channel_bias");
    let biased_c = cpu.add_channel_bias(&wide_host, &wide_bias).unwrap();
    assert_close("wide add_channel_bias", &biased, &biased_c, mode.round);
    let wide2 = as_act(&random_tensor(&[2, 24, 5, 3], &mut rng, 0.0));
    let sum = gpu.add(&wide, &wide2).unwrap();
    let sum_c = cpu.add(&wide_host, &wide2.to_host().unwrap()).unwrap();
    assert_close("wide add", &sum, &sum_c, mode.round);
    let tail = as_act(&random_tensor(&[1, 3, 3, 7], &mut rng, 0.0));
    let sum = gpu.add(&tail, &tail).unwrap();
    let sum_c = cpu
        .add(&tail.to_host().unwrap(), &tail.to_host().unwrap())
        .unwrap();
    assert_close("add with a tail", &sum, &sum_c, mode.round);
    let big = as_act(&random_tensor(&[3, 70, 33, 31], &mut rng, 0.0));
    for t in [&a, &big] {
        let s = gpu.sum_per_channel(t).unwrap();
        let s_c = cpu.sum_per_channel(&t.to_host().unwrap()).unwrap();
        assert_close(
            &format!("sum_per_channel {} {:?}", mode.name, t.shape()),
            &s,
            &s_c,
            1e-5,
        );
    }

    // A convolution with a bias writes an NHWC activation too, the bias added in its type.
    let wgt = random_tensor(&[5, 6, 3, 3], &mut rng, 0.0);
    let cb = random_tensor(&[5], &mut rng, 0.0);
    let attrs = Conv2dAttrs::new().with_padding([1, 1]);
    let y = gpu.conv2d(&a, &wgt, Some(&cb), &attrs).unwrap();
    assert_nhwc(&y, act_type, "conv2d with bias");
    let y_c = cpu.conv2d(&a_host, &wgt, Some(&cb), &attrs).unwrap();
    let tol = if mode.precision == Precision::Fp32 {
        TOL
    } else {
        BF16_TOL
    };
    assert_close("conv2d with bias", &y, &y_c, tol);
}

/// Pointwise convolutions with few output channels (the segmentation head: 1×1, K ≤ 8) on an
/// NHWC activation run on their own kernels in each NHWC mode: the output (bias added) and the
/// input gradient are NHWC activations of the mode's type, and every value matches the CPU's on
/// the same inputs — with the filter as given and as `conv_weight` hands it to the models, for
/// channel counts below, across and above the kernels' 32-channel stages, 16-byte vectors and
/// 256-channel lanes (up to four channel slots a thread), and a batch large enough that the
/// filter gradient folds many chunks of several tiles each.
#[test]
fn small_pointwise_convolutions_match_the_cpu_on_the_same_values() {
    for mode in nhwc_modes() {
        let Some(gpu) = backend_in(mode.precision, mode.conv_nhwc) else {
            return;
        };
        check_small_pointwise(&gpu, &mode);
    }
}

fn check_small_pointwise(gpu: &CudaBackend, mode: &NhwcMode) {
    use magma_tensor::DType;
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(59);
    // bf16 rounds the filters (as cuDNN reads them in that mode) and the input gradient.
    let tol = if mode.dtype == DType::BF16 { 2e-2 } else { TOL };
    for (i, (x_shape, k)) in [
        ([2, 12, 9, 11], 3),
        ([1, 40, 7, 5], 1),
        ([3, 64, 16, 16], 8),
        ([1, 300, 6, 7], 5),
        ([1, 1000, 3, 5], 2),
        ([1, 1001, 3, 5], 2),
        ([2, 12, 300, 300], 3),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("{} x {x_shape:?} k {k}", mode.name);
        let x = as_activation(gpu, &rand(&x_shape, &mut rng), mode.dtype);
        let x_host = x.to_host().unwrap();
        let w_raw = random_tensor(&[k, x_shape[1], 1, 1], &mut rng, 0.5);
        // Every other case with the filter the models pass (KRSC, bf16 in that mode), whose
        // values the CPU then gets too.
        let (w, w_host) = if i % 2 == 0 {
            (w_raw.clone(), w_raw)
        } else {
            let krsc = gpu.conv_weight(&w_raw).unwrap();
            let host = krsc.to_host().unwrap();
            (krsc, host)
        };
        let bias = random_tensor(&[k], &mut rng, 0.5);
        let attrs = Conv2dAttrs::new();
        let y_g = gpu.conv2d(&x, &w, Some(&bias), &attrs).unwrap();
        let y_c = cpu.conv2d(&x_host, &w_host, Some(&bias), &attrs).unwrap();
        // (One channel is NCHW and NHWC at once: its tensor reports the plain layout.)
        if k > 1 {
            assert_nhwc(&y_g, mode.dtype, &format!("{name} y"));
        }
        assert_eq!(y_g.dtype(), mode.dtype, "{name} y: element type");
        assert_close(&format!("pointwise y {name}"), &y_g, &y_c, tol);
        let w_host = &w_host;

        let dy = rand(y_c.shape(), &mut rng);
        let [dx_g, dw_g] = gpu
            .conv2d_backward(&x, &w, &dy, &attrs, [true, true])
            .unwrap();
        let [dx_c, dw_c] = cpu
            .conv2d_backward(&x_host, w_host, &dy, &attrs, [true, true])
            .unwrap();
        let dx_g = dx_g.unwrap();
        assert_nhwc(&dx_g, mode.dtype, &format!("{name} dx"));
        assert_close(&format!("pointwise dx {name}"), &dx_g, &dx_c.unwrap(), tol);
        let dw_c = dw_c.unwrap();
        assert_close(&format!("pointwise dw {name}"), &dw_g.unwrap(), &dw_c, tol);
        let dw_alone = gpu
            .conv2d_backward_filter(&x, &dy, shape4(&w), &attrs)
            .unwrap();
        assert_close(&format!("pointwise dw alone {name}"), &dw_alone, &dw_c, tol);
        // Only one of the two gradients asked for.
        let [dx_only, none] = gpu
            .conv2d_backward(&x, &w, &dy, &attrs, [true, false])
            .unwrap();
        assert!(
            none.is_none() && dx_only.is_some(),
            "{name}: need respected"
        );
    }
}

/// 3×3 convolutions of few-channel images (the first layer: C ≤ 4, K ∈ {4..16, 32, 64, 128})
/// run on their own kernels in each NHWC mode: the image is read as loaded (NCHW fp32), the
/// output is an NHWC activation of the mode's type, and the output and the filter gradient (from
/// an NHWC output gradient, alone or beside the input gradient; our kernel for fp32 activations,
/// cuDNN's on the padded input in bf16) match the CPU on the same values — several column tiles
/// (one partial), several row tiles, each supported padding, with and without bias.
#[test]
fn few_channel_convolutions_match_the_cpu_on_the_same_values() {
    for mode in nhwc_modes() {
        let Some(gpu) = backend_in(mode.precision, mode.conv_nhwc) else {
            return;
        };
        check_few_channel(&gpu, &mode);
    }
}

fn check_few_channel(gpu: &CudaBackend, mode: &NhwcMode) {
    use magma_tensor::DType;
    let cpu = CpuBackend::new();
    let mut rng = SeededRng::new(67);
    let tol = if mode.dtype == DType::BF16 { 2e-2 } else { TOL };
    for (x_shape, k, padding, with_bias) in [
        ([2, 3, 37, 70], 64, [1, 1], false),
        ([1, 1, 20, 9], 4, [0, 0], true),
        ([2, 4, 18, 130], 128, [2, 1], true),
        ([1, 3, 5, 6], 12, [1, 2], false),
        ([1, 2, 33, 64], 32, [1, 1], true),
        ([1, 3, 17, 65], 16, [1, 0], false),
        ([1, 3, 9, 10], 8, [1, 1], true),
    ] {
        let name = format!("{} x {x_shape:?} k {k} padding {padding:?}", mode.name);
        let attrs = Conv2dAttrs::new().with_padding(padding);
        let x = rand(&x_shape, &mut rng);
        let w_raw = random_tensor(&[k, x_shape[1], 3, 3], &mut rng, 0.2);
        // The filter as the models pass it (KRSC, bf16 in that mode); the CPU gets its values.
        let krsc = gpu.conv_weight(&w_raw).unwrap();
        let w = krsc.to_host().unwrap();
        let bias = with_bias.then(|| random_tensor(&[k], &mut rng, 0.5));
        let y_g = gpu.conv2d(&x, &krsc, bias.as_ref(), &attrs).unwrap();
        let y_c = cpu.conv2d(&x, &w, bias.as_ref(), &attrs).unwrap();
        assert_nhwc(&y_g, mode.dtype, &format!("{name} y"));
        assert_close(&format!("few-channel y {name}"), &y_g, &y_c, tol);

        let dy = as_activation(gpu, &rand(y_c.shape(), &mut rng), mode.dtype);
        let dy_host = dy.to_host().unwrap();
        let [_, dw_c] = cpu
            .conv2d_backward(&x, &w, &dy_host, &attrs, [false, true])
            .unwrap();
        let dw_c = dw_c.unwrap();
        let [none, dw_g] = gpu
            .conv2d_backward(&x, &krsc, &dy, &attrs, [false, true])
            .unwrap();
        assert!(none.is_none(), "{name}: need respected");
        assert_close(
            &format!("few-channel dw {name}"),
            &dw_g.unwrap(),
            &dw_c,
            tol,
        );
        let dw_alone = gpu
            .conv2d_backward_filter(&x, &dy, shape4(&w), &attrs)
            .unwrap();
        assert_close(
            &format!("few-channel dw alone {name}"),
            &dw_alone,
            &dw_c,
            tol,
        );
        // With the input gradient too (cuDNN's, TF32 math in the TF32 mode).
        let [dx_g, dw_both] = gpu
            .conv2d_backward(&x, &krsc, &dy, &attrs, [true, true])
            .unwrap();
        let [dx_c, _] = cpu
            .conv2d_backward(&x, &w, &dy_host, &attrs, [true, false])
            .unwrap();
        let dx_tol = if mode.precision == Precision::Fp32 {
            TOL
        } else {
            2e-2
        };
        assert_close(
            &format!("few-channel dx {name}"),
            &dx_g.unwrap(),
            &dx_c.unwrap(),
            dx_tol,
        );
        assert_close(
            &format!("few-channel dw both {name}"),
            &dw_both.unwrap(),
            &dw_c,
            tol,
        );
    }
}

/// Filters of many channels move between NCHW and KRSC (the layout gathers): a filter made KRSC
/// for the NHWC convolutions keeps every value (rounded once in bf16), and a 3×3 convolution of
/// a 70-channel NHWC activation — its filter converted one way, its filter gradient the other —
/// matches the CPU.
#[test]
fn wide_filters_convert_between_layouts() {
    for mode in nhwc_modes() {
        let Some(gpu) = backend_in(mode.precision, mode.conv_nhwc) else {
            return;
        };
        let cpu = CpuBackend::new();
        let mut rng = SeededRng::new(71);
        let w = random_tensor(&[5, 70, 3, 3], &mut rng, 0.0);
        let krsc = gpu.conv_weight(&w).unwrap();
        assert_nhwc(&krsc, mode.dtype, &format!("{} KRSC filter", mode.name));
        assert_close(
            &format!("{} KRSC filter", mode.name),
            &krsc,
            &w,
            if mode.dtype == magma_tensor::DType::BF16 {
                4e-3
            } else {
                0.0
            },
        );
        let x = as_activation(&gpu, &rand(&[2, 70, 6, 7], &mut rng), mode.dtype);
        let x_host = x.to_host().unwrap();
        let attrs = Conv2dAttrs::new().with_padding([1, 1]);
        let dy = rand(&[2, 5, 6, 7], &mut rng);
        let [_, dw_g] = gpu
            .conv2d_backward(&x, &krsc, &dy, &attrs, [false, true])
            .unwrap();
        let [_, dw_c] = cpu
            .conv2d_backward(&x_host, &w, &dy, &attrs, [false, true])
            .unwrap();
        let tol = if mode.precision == Precision::Fp32 {
            TOL
        } else {
            BF16_TOL
        };
        assert_close(
            &format!("{} wide filter gradient", mode.name),
            &dw_g.unwrap(),
            &dw_c.unwrap(),
            tol,
        );
    }
}
