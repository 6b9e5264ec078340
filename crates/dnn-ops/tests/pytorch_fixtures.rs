//! Every CPU op against values computed by PyTorch (`fixtures/generate.py` made them; see
//! `fixtures/README.md`). Forward outputs and all input gradients are compared.

use std::collections::HashMap;
use std::path::PathBuf;

use dnn_ops::backend::*;
use dnn_ops::{BatchNormAttrs, Conv2dAttrs, ConvTranspose2dAttrs, CpuBackend, Pool2dAttrs, Tensor};
use serde::Deserialize;

#[derive(Deserialize)]
struct RawTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Deserialize)]
struct Fixture {
    name: String,
    attrs: serde_json::Value,
    tensors: HashMap<String, RawTensor>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn t(&self, key: &str) -> Tensor {
        let raw = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.name));
        Tensor::from_vec(raw.data.clone(), &raw.shape).unwrap()
    }

    fn pair(&self, key: &str) -> [usize; 2] {
        let v = &self.attrs[key];
        [
            v[0].as_u64().unwrap() as usize,
            v[1].as_u64().unwrap() as usize,
        ]
    }

    /// Asserts `got` matches the fixture tensor `key` within `tol` (absolute + relative).
    fn check(&self, key: &str, got: &Tensor, tol: f32) {
        let want = self.t(key);
        assert_eq!(got.shape(), want.shape(), "{}: shape of {key}", self.name);
        let (g, w) = (got.to_vec().unwrap(), want.to_vec().unwrap());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{}: {key}[{i}] = {a}, PyTorch says {b}",
                self.name
            );
        }
    }
}

const TOL: f32 = 2e-5;

fn conv_attrs(f: &Fixture) -> Conv2dAttrs {
    Conv2dAttrs::new()
        .with_stride(f.pair("stride"))
        .with_padding(f.pair("padding"))
        .with_dilation(f.pair("dilation"))
}

fn shape4(t: &Tensor) -> [usize; 4] {
    t.shape().try_into().unwrap()
}

#[test]
fn conv2d_matches_pytorch() {
    let be = CpuBackend::new();
    for name in [
        "conv2d_3x3_s1_p1",
        "conv2d_3x3_s2_p0_d2",
        "conv2d_1x1",
        "conv2d_rect",
    ] {
        let f = Fixture::load(name);
        let (x, w, b, dy) = (f.t("x"), f.t("w"), f.t("b"), f.t("dy"));
        let a = conv_attrs(&f);
        f.check("y", &be.conv2d(&x, &w, Some(&b), &a).unwrap(), TOL);
        f.check(
            "dx",
            &be.conv2d_backward_data(&dy, &w, shape4(&x), &a).unwrap(),
            TOL,
        );
        f.check(
            "dw",
            &be.conv2d_backward_filter(&x, &dy, shape4(&w), &a).unwrap(),
            TOL,
        );
        f.check("db", &be.sum_per_channel(&dy).unwrap(), TOL);
    }
}

#[test]
fn conv_transpose2d_matches_pytorch() {
    let be = CpuBackend::new();
    for name in [
        "conv_transpose2d_k2_s2",
        "conv_transpose2d_k3_s2_p1_op1",
        "conv_transpose2d_k3_s1_p1",
        "conv_transpose2d_k3_s2_d2",
    ] {
        let f = Fixture::load(name);
        let (x, w, b, dy) = (f.t("x"), f.t("w"), f.t("b"), f.t("dy"));
        let a = ConvTranspose2dAttrs::new()
            .with_stride(f.pair("stride"))
            .with_padding(f.pair("padding"))
            .with_output_padding(f.pair("output_padding"))
            .with_dilation(f.pair("dilation"));
        f.check(
            "y",
            &be.conv_transpose2d(&x, &w, Some(&b), &a).unwrap(),
            TOL,
        );
        f.check(
            "dx",
            &be.conv_transpose2d_backward_data(&dy, &w, &a).unwrap(),
            TOL,
        );
        f.check(
            "dw",
            &be.conv_transpose2d_backward_filter(&x, &dy, shape4(&w), &a)
                .unwrap(),
            TOL,
        );
        f.check("db", &be.sum_per_channel(&dy).unwrap(), TOL);
    }
}

fn pool_attrs(f: &Fixture) -> Pool2dAttrs {
    Pool2dAttrs {
        kernel: f.pair("kernel"),
        stride: f.pair("stride"),
        padding: f.pair("padding"),
        count_include_pad: f
            .attrs
            .get("count_include_pad")
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
    }
}

#[test]
fn pooling_matches_pytorch() {
    let be = CpuBackend::new();
    for name in ["max_pool2d_k2_s2", "max_pool2d_k3_s2_p1"] {
        let f = Fixture::load(name);
        let (x, dy, a) = (f.t("x"), f.t("dy"), pool_attrs(&f));
        let y = be.max_pool2d(&x, &a).unwrap();
        f.check("y", &y, TOL);
        f.check("dx", &be.max_pool2d_backward(&x, &y, &dy, &a).unwrap(), TOL);
    }
    for name in [
        "avg_pool2d_k2_s2",
        "avg_pool2d_k3_s1_p1",
        "avg_pool2d_k3_s2_p1_exclude",
    ] {
        let f = Fixture::load(name);
        let (x, dy, a) = (f.t("x"), f.t("dy"), pool_attrs(&f));
        f.check("y", &be.avg_pool2d(&x, &a).unwrap(), TOL);
        f.check(
            "dx",
            &be.avg_pool2d_backward(&dy, shape4(&x), &a).unwrap(),
            TOL,
        );
    }
}

#[test]
fn batch_norm_matches_pytorch_in_training_and_evaluation() {
    let be = CpuBackend::new();
    for name in ["batch_norm_train", "batch_norm_eval"] {
        let f = Fixture::load(name);
        let training = f.attrs["training"].as_bool().unwrap();
        let attrs = BatchNormAttrs {
            momentum: f.attrs["momentum"].as_f64().unwrap() as f32,
            eps: f.attrs["eps"].as_f64().unwrap() as f32,
        };
        let (x, gamma, beta, dy) = (f.t("x"), f.t("gamma"), f.t("beta"), f.t("dy"));
        let (mut rm, mut rv) = (f.t("running_mean"), f.t("running_var"));
        let (y, saved) = if training {
            be.batch_norm_train(&x, &gamma, &beta, &mut rm, &mut rv, &attrs)
                .unwrap()
        } else {
            be.batch_norm_eval(&x, &gamma, &beta, &rm, &rv, &attrs)
                .unwrap()
        };
        f.check("y", &y, 1e-4);
        f.check("running_mean_after", &rm, 1e-5);
        f.check("running_var_after", &rv, 1e-5);
        let (dx, dg, db) = be
            .batch_norm_backward(&x, &dy, &gamma, &saved, training)
            .unwrap();
        f.check("dx", &dx, 1e-4);
        f.check("dgamma", &dg, 1e-4);
        f.check("dbeta", &db, 1e-4);
    }
}

#[test]
fn bilinear_upsampling_matches_pytorch() {
    let be = CpuBackend::new();
    for name in [
        "upsample_bilinear_x2",
        "upsample_bilinear_odd",
        "upsample_bilinear_down",
    ] {
        let f = Fixture::load(name);
        let (x, dy) = (f.t("x"), f.t("dy"));
        f.check(
            "y",
            &be.upsample_bilinear(&x, f.pair("out_size")).unwrap(),
            TOL,
        );
        f.check(
            "dx",
            &be.upsample_bilinear_backward(&dy, shape4(&x)).unwrap(),
            TOL,
        );
    }
}

#[test]
fn softmax_and_log_softmax_match_pytorch() {
    let be = CpuBackend::new();
    let f = Fixture::load("log_softmax_channels");
    let y = be.log_softmax(&f.t("x")).unwrap();
    f.check("y", &y, TOL);
    f.check("dx", &be.log_softmax_backward(&y, &f.t("dy")).unwrap(), TOL);
    let f = Fixture::load("softmax_channels");
    let y = be.softmax(&f.t("x")).unwrap();
    f.check("y", &y, TOL);
    f.check("dx", &be.softmax_backward(&y, &f.t("dy")).unwrap(), TOL);
}

#[test]
fn cross_entropy_matches_pytorch_with_weights_and_ignore_index() {
    let be = CpuBackend::new();
    for name in ["cross_entropy_plain", "cross_entropy_weighted_ignore"] {
        let f = Fixture::load(name);
        let weight = f.attrs["has_weight"]
            .as_bool()
            .unwrap()
            .then(|| f.t("weight"));
        let ignore = f.attrs["ignore_index"].as_i64();
        let (loss, grad) = be
            .cross_entropy(&f.t("logits"), &f.t("target"), weight.as_ref(), ignore)
            .unwrap();
        f.check("loss", &loss, TOL);
        f.check("dlogits", &grad, TOL);
    }
}

#[test]
fn linear_matches_pytorch() {
    let be = CpuBackend::new();
    let f = Fixture::load("linear");
    let (x, w, b, dy) = (f.t("x"), f.t("w"), f.t("b"), f.t("dy"));
    let y = be
        .add_channel_bias(&be.matmul(&x, &w, false, true).unwrap(), &b)
        .unwrap();
    f.check("y", &y, TOL);
    f.check("dx", &be.matmul(&dy, &w, false, false).unwrap(), TOL);
    f.check("dw", &be.matmul(&dy, &x, true, false).unwrap(), TOL);
    f.check("db", &be.sum_per_channel(&dy).unwrap(), TOL);
}
