//! The CPU batch norm (alone and fused with ReLU) against its definition computed in f64 by
//! plain loops: planes longer than one summation block with ragged tails, a single value per
//! plane, and inputs far from zero (where a one-pass Σx² − (Σx)² variance would cancel).

use dnn_ops::backend::{BatchNormSaved, FusedOps, NormOps};
use dnn_ops::{BatchNormAttrs, CpuBackend, Tensor};
use magma_tensor::SeededRng;

/// y, mean, biased variance, and the backward pass's (dx, dgamma, dbeta), in f64.
struct Reference {
    y: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

fn reference(
    x: &[f32],
    shape: [usize; 4],
    gamma: &[f32],
    beta: &[f32],
    dy: &[f32],
    eps: f64,
    relu: bool,
) -> Reference {
    let [n, c, h, w] = shape;
    let inner = h * w;
    let m = (n * inner) as f64;
    let at = |b: usize, ch: usize, i: usize| (b * c + ch) * inner + i;
    let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        for b in 0..n {
            for i in 0..inner {
                mean[ch] += f64::from(x[at(b, ch, i)]) / m;
            }
        }
        for b in 0..n {
            for i in 0..inner {
                var[ch] += (f64::from(x[at(b, ch, i)]) - mean[ch]).powi(2) / m;
            }
        }
    }
    let mut y = vec![0.0; x.len()];
    let mut dz = vec![0.0; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let inv_std = 1.0 / (var[ch] + eps).sqrt();
        for b in 0..n {
            for i in 0..inner {
                let k = at(b, ch, i);
                let xhat = (f64::from(x[k]) - mean[ch]) * inv_std;
                let z = f64::from(gamma[ch]) * xhat + f64::from(beta[ch]);
                y[k] = if relu { z.max(0.0) } else { z };
                dz[k] = if relu && z <= 0.0 {
                    0.0
                } else {
                    f64::from(dy[k])
                };
                dgamma[ch] += dz[k] * xhat;
                dbeta[ch] += dz[k];
            }
        }
    }
    let mut dx = vec![0.0; x.len()];
    for ch in 0..c {
        let inv_std = 1.0 / (var[ch] + eps).sqrt();
        for b in 0..n {
            for i in 0..inner {
                let k = at(b, ch, i);
                let xhat = (f64::from(x[k]) - mean[ch]) * inv_std;
                dx[k] = f64::from(gamma[ch])
                    * inv_std
                    * (dz[k] - dbeta[ch] / m - xhat * dgamma[ch] / m);
            }
        }
    }
    Reference {
        y,
        mean,
        var,
        dx,
        dgamma,
        dbeta,
    }
}

fn assert_close(what: &str, got: &Tensor, want: &[f64], tol: f64) {
    let got = got.to_vec().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |s, v| s.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol * scale,
            "{what}[{i}]: {g} vs {w} (tolerance {tol} × {scale})"
        );
    }
}

fn values(len: usize, rng: &mut SeededRng, offset: f32) -> Vec<f32> {
    (0..len).map(|_| offset + rng.uniform(-1.0, 1.0)).collect()
}

#[test]
fn batch_norm_and_fused_relu_match_their_definition() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(11);
    let attrs = BatchNormAttrs::default();
    // (shape, offset of x, tolerance): 1073-value planes are four 256-value blocks and a tail
    // of 49 (three 16-lane chunks and one value); one value per plane; values near 1000.
    for (shape, offset, tol) in [
        ([3, 5, 37, 29], 0.0, 1e-5),
        ([7, 4, 1, 1], 0.5, 1e-5),
        ([2, 3, 19, 17], 1000.0, 2e-4),
    ] {
        let [_, c, _, _] = shape;
        let len: usize = shape.iter().product();
        let x = values(len, &mut rng, offset);
        let dy = values(len, &mut rng, 0.0);
        let gamma = values(c, &mut rng, 1.0);
        let beta = values(c, &mut rng, 0.0);
        let t = |v: &[f32], s: &[usize]| Tensor::from_vec(v.to_vec(), s).unwrap();
        let (xt, dyt, gt, bt) = (
            t(&x, &shape),
            t(&dy, &shape),
            t(&gamma, &[c]),
            t(&beta, &[c]),
        );
        for relu in [false, true] {
            let want = reference(&x, shape, &gamma, &beta, &dy, f64::from(attrs.eps), relu);
            let what = format!("{shape:?} offset {offset} relu {relu}");
            let (mut rm, mut rv) = (Tensor::zeros(&[c]), Tensor::ones(&[c]));
            let (y, saved) = if relu {
                be.batch_norm_relu_train(&xt, &gt, &bt, &mut rm, &mut rv, &attrs)
            } else {
                be.batch_norm_train(&xt, &gt, &bt, &mut rm, &mut rv, &attrs)
            }
            .unwrap();
            assert_close(&format!("y, {what}"), &y, &want.y, tol);
            assert_close(&format!("mean, {what}"), &saved.mean, &want.mean, tol);
            let m = (len / c) as f64;
            let mom = f64::from(attrs.momentum);
            let running_var: Vec<f64> = want
                .var
                .iter()
                .map(|v| (1.0 - mom) + mom * v * m / (m - 1.0))
                .collect();
            assert_close(&format!("running var, {what}"), &rv, &running_var, tol);
            let (dx, dgamma, dbeta) = if relu {
                be.batch_norm_relu_backward(&xt, &y, &dyt, &gt, &saved)
            } else {
                be.batch_norm_backward(&xt, &dyt, &gt, &saved, true)
            }
            .unwrap();
            assert_close(&format!("dx, {what}"), &dx, &want.dx, tol * 10.0);
            assert_close(&format!("dgamma, {what}"), &dgamma, &want.dgamma, tol);
            assert_close(&format!("dbeta, {what}"), &dbeta, &want.dbeta, tol);
        }
    }
}

/// The fused op equals the composition of the two ops it replaces.
#[test]
fn fused_batch_norm_relu_equals_the_composition() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(12);
    let attrs = BatchNormAttrs::default();
    let shape = [4, 6, 23, 21];
    let len: usize = shape.iter().product();
    let x = Tensor::from_vec(values(len, &mut rng, 0.2), &shape).unwrap();
    let dy = Tensor::from_vec(values(len, &mut rng, 0.0), &shape).unwrap();
    let gamma = Tensor::from_vec(values(6, &mut rng, 1.0), &[6]).unwrap();
    let beta = Tensor::from_vec(values(6, &mut rng, 0.0), &[6]).unwrap();
    let (mut rm, mut rv) = (Tensor::zeros(&[6]), Tensor::ones(&[6]));
    let (y, saved) = be
        .batch_norm_relu_train(&x, &gamma, &beta, &mut rm, &mut rv, &attrs)
        .unwrap();
    let (mut rm2, mut rv2) = (Tensor::zeros(&[6]), Tensor::ones(&[6]));
    let (y2, saved2) =
        dnn_ops::backend::batch_norm_then_relu(&be, &x, &gamma, &beta, &mut rm2, &mut rv2, &attrs)
            .unwrap();
    assert_eq!(y.to_vec().unwrap(), y2.to_vec().unwrap());
    assert_eq!(saved.mean.to_vec().unwrap(), saved2.mean.to_vec().unwrap());
    assert_eq!(rv.to_vec().unwrap(), rv2.to_vec().unwrap());
    let fused = be
        .batch_norm_relu_backward(&x, &y, &dy, &gamma, &saved)
        .unwrap();
    let composed =
        dnn_ops::backend::relu_then_batch_norm_backward(&be, &x, &y, &dy, &gamma, &saved).unwrap();
    assert_eq!(fused.0.to_vec().unwrap(), composed.0.to_vec().unwrap());
    assert_eq!(fused.1.to_vec().unwrap(), composed.1.to_vec().unwrap());
    assert_eq!(fused.2.to_vec().unwrap(), composed.2.to_vec().unwrap());
    // The training pass keeps its coefficients, and the backward pass's mask from x with them
    // is the mask from y: the same gradients as without them, bit for bit.
    let (scale, shift) = saved
        .relu_mask
        .clone()
        .expect("the fused pass keeps its coefficients");
    let from_y = BatchNormSaved {
        relu_mask: None,
        ..saved.clone()
    };
    let by_y = be
        .batch_norm_relu_backward(&x, &y, &dy, &gamma, &from_y)
        .unwrap();
    assert_eq!(fused.0.to_vec().unwrap(), by_y.0.to_vec().unwrap());
    assert_eq!(fused.1.to_vec().unwrap(), by_y.1.to_vec().unwrap());
    assert_eq!(fused.2.to_vec().unwrap(), by_y.2.to_vec().unwrap());
    // Coefficients of the wrong length are refused, as other saved vectors are.
    let short = BatchNormSaved {
        relu_mask: Some((scale.narrow(0, 0, 5).unwrap(), shift)),
        ..saved.clone()
    };
    assert!(
        be.batch_norm_relu_backward(&x, &y, &dy, &gamma, &short)
            .is_err(),
        "a short ReLU mask must be refused"
    );
    // Evaluation mode, with the running statistics just updated.
    let (ye, _) = be
        .batch_norm_relu_eval(&x, &gamma, &beta, &rm, &rv, &attrs)
        .unwrap();
    let (ze, _) = be
        .batch_norm_eval(&x, &gamma, &beta, &rm, &rv, &attrs)
        .unwrap();
    let relu: Vec<f32> = ze.to_vec().unwrap().iter().map(|v| v.max(0.0)).collect();
    assert_eq!(ye.to_vec().unwrap(), relu);
    assert!(relu.contains(&0.0) && relu.iter().any(|&v| v > 0.0));
}
