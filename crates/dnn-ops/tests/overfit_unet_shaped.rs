//! End to end: a 2-level U-Net-shaped graph (conv-BN-ReLU, max-pool, transposed-conv upsampling,
//! a channel-concat skip, a 1×1 head, pixel-wise cross-entropy, Adam) overfits one batch.

use dnn_ops::backend::{OptimizerOps, RunningStats};
use dnn_ops::{
    AdamStep, BatchNormAttrs, Conv2dAttrs, ConvTranspose2dAttrs, CpuBackend, Graph, Parameter,
    Pool2dAttrs, Tensor, Var,
};
use magma_tensor::{Initializer, SeededRng};

struct Net {
    params: Vec<Parameter>,
    running: Vec<RunningStats>,
}

const CONVS: [(&str, usize, usize, usize); 5] = [
    // name, in, out, kernel
    ("enc1", 3, 8, 3),
    ("enc2", 8, 16, 3),
    ("dec1", 16, 8, 3),
    ("head", 8, 3, 1),
    ("up", 16, 8, 2), // transposed conv: weight [in, out, 2, 2]
];

impl Net {
    fn new(rng: &mut SeededRng) -> Self {
        let mut params = Vec::new();
        for (name, i, o, k) in CONVS {
            let shape = if name == "up" {
                [i, o, k, k]
            } else {
                [o, i, k, k]
            };
            params.push(Parameter::new(
                format!("{name}/weight"),
                Initializer::HeNormal.init(&shape, rng).unwrap(),
            ));
            params.push(Parameter::new(format!("{name}/bias"), Tensor::zeros(&[o])));
        }
        for (name, c) in [("enc1", 8), ("enc2", 16)] {
            params.push(Parameter::new(
                format!("{name}/bn/gamma"),
                Tensor::ones(&[c]),
            ));
            params.push(Parameter::new(
                format!("{name}/bn/beta"),
                Tensor::zeros(&[c]),
            ));
        }
        let running = vec![RunningStats::new(8), RunningStats::new(16)];
        Self { params, running }
    }

    fn forward(&mut self, g: &Graph, x: Var) -> dnn_ops::Result<Var> {
        let p: Vec<Var> = self.params.iter().map(|p| g.param(p)).collect();
        let same = Conv2dAttrs::new().with_padding([1, 1]);
        let bn = BatchNormAttrs::default();
        let [s1, s2] = &mut self.running[..] else {
            unreachable!()
        };
        let e1 = g.conv2d(x, p[0], Some(p[1]), same)?;
        let e1 = g.relu(g.batch_norm(e1, p[10], p[11], s1, bn, true)?)?;
        let down = g.max_pool2d(e1, Pool2dAttrs::square(2))?;
        let e2 = g.conv2d(down, p[2], Some(p[3]), same)?;
        let e2 = g.relu(g.batch_norm(e2, p[12], p[13], s2, bn, true)?)?;
        let up = g.conv_transpose2d(
            e2,
            p[8],
            Some(p[9]),
            ConvTranspose2dAttrs::new().with_stride([2, 2]),
        )?;
        let skip = g.concat(&[e1, up], 1)?;
        let d1 = g.relu(g.conv2d(skip, p[4], Some(p[5]), same)?)?;
        g.conv2d(d1, p[6], Some(p[7]), Conv2dAttrs::new())
    }
}

/// Images with a bright square (class 1) bordered by a ring (class 2) on noise (class 0).
fn batch(rng: &mut SeededRng) -> (Tensor, Tensor) {
    let (n, s) = (2, 16);
    let mut img = vec![0.0f32; n * 3 * s * s];
    let mut lab = vec![0.0f32; n * s * s];
    for b in 0..n {
        let (cy, cx) = (4 + rng.below(8), 4 + rng.below(8));
        for y in 0..s {
            for x in 0..s {
                let d = (y as isize - cy as isize)
                    .abs()
                    .max((x as isize - cx as isize).abs());
                let class = if d <= 2 {
                    1
                } else if d == 3 {
                    2
                } else {
                    0
                };
                lab[(b * s + y) * s + x] = class as f32;
                for c in 0..3 {
                    let base = [0.0, 1.0, 0.5][class] * (1.0 + c as f32 * 0.2);
                    img[((b * 3 + c) * s + y) * s + x] = base + rng.normal(0.0, 0.1);
                }
            }
        }
    }
    (
        Tensor::from_vec(img, &[n, 3, s, s]).unwrap(),
        Tensor::from_vec(lab, &[n, s, s]).unwrap(),
    )
}

#[test]
fn a_two_level_unet_overfits_one_batch() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(2024);
    let mut net = Net::new(&mut rng);
    let (images, labels) = batch(&mut rng);
    let mut moments: Vec<(Tensor, Tensor)> = net
        .params
        .iter()
        .map(|p| (p.value().zeros_like(), p.value().zeros_like()))
        .collect();
    let mut losses = Vec::new();
    for step in 1..=80u64 {
        let grads = {
            let g = Graph::new(&be);
            let x = g.input(images.clone());
            let logits = net.forward(&g, x).unwrap();
            assert_eq!(g.shape(logits), vec![2, 3, 16, 16], "4-D pixel-wise output");
            let loss = g.cross_entropy(logits, &labels, None, None).unwrap();
            losses.push(g.value(loss).item().unwrap());
            g.backward(loss).unwrap()
        };
        for (p, (m, v)) in net.params.iter_mut().zip(moments.iter_mut()) {
            let grad = grads
                .param(p.id())
                .unwrap_or_else(|| panic!("{} got no gradient", p.name()))
                .clone();
            let s = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                decoupled_weight_decay: false,
                step,
            };
            be.adam_step(p.value_mut(), &grad, m, v, &s).unwrap();
        }
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(last < first / 10.0, "loss fell from {first} to {last} only");
}
