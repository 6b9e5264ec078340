//! Layers, losses, optimizers and the model API on small problems with known answers.

use std::collections::HashSet;

use dnn_layers::layers::*;
use dnn_layers::loss::{CrossEntropyLoss, MseLoss};
use dnn_layers::optim::{Adagrad, Adam, Optimizer, RmsProp, Sgd};
use dnn_layers::{FitConfig, LayerError, Mode, Model, Module, TensorDataset};
use dnn_ops::testing::{GradCheck, random_tensor};
use dnn_ops::{CpuBackend, Graph, Tensor};
use magma_tensor::SeededRng;

fn lenet_like(rng: &mut SeededRng) -> Sequential {
    Sequential::new()
        .with(Input::new(&[1, 12, 12]))
        .with(
            Conv2dConfig::new(1, 4, [3, 3])
                .with_same_padding()
                .init("conv1", rng)
                .unwrap(),
        )
        .with(BatchNormConfig::new(4).init("bn1").unwrap())
        .with(ActivationLayer::relu())
        .with(Pool::max(2))
        .with(Flatten)
        .with(LinearConfig::new(4 * 6 * 6, 16).init("fc1", rng).unwrap())
        .with(ActivationLayer::relu())
        .with(Dropout::new(0.1, rng).unwrap())
        .with(LinearConfig::new(16, 3).init("fc2", rng).unwrap())
        .with(Output::Softmax)
}

/// Three classes of 12×12 images: a horizontal bar, a vertical bar, or a dot, with noise.
fn shapes_dataset(n: usize, rng: &mut SeededRng) -> TensorDataset {
    let mut x = vec![0.0f32; n * 144];
    let mut y = vec![0.0f32; n];
    for i in 0..n {
        let class = i % 3;
        y[i] = class as f32;
        let (r, c) = (2 + rng.below(8), 2 + rng.below(8));
        for k in 0..144 {
            x[i * 144 + k] = rng.normal(0.0, 0.2);
        }
        for d in 0..4 {
            let (rr, cc) = match class {
                0 => (r, (c + d).min(11)),
                1 => ((r + d).min(11), c),
                _ => (r, c),
            };
            x[i * 144 + rr * 12 + cc] += 2.0;
        }
    }
    TensorDataset::new(
        Tensor::from_vec(x, &[n, 1, 12, 12]).unwrap(),
        Tensor::from_vec(y, &[n]).unwrap(),
    )
    .unwrap()
}

#[test]
fn parameter_names_are_unique_paths_and_shapes_propagate() {
    let mut rng = SeededRng::new(0);
    let net = lenet_like(&mut rng);
    let mut names = Vec::new();
    net.visit_parameters(&mut |p| names.push(p.name().to_string()));
    let unique: HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
    assert!(
        names.contains(&"conv1/weight".to_string()) && names.contains(&"bn1/gamma".to_string())
    );
    assert_eq!(net.output_shape(&[5, 1, 12, 12]), Some(vec![5, 3]));
    assert_eq!(
        net.parameter_count(),
        4 * 9 + 4 + 8 + 144 * 16 + 16 + 16 * 3 + 3
    );
    let summary = net.summary(&[5, 1, 12, 12]);
    assert!(summary.contains("[5, 16]") && summary.contains("total trainable parameters"));
}

#[test]
fn input_layer_rejects_wrong_sample_shapes() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(0);
    let mut net = lenet_like(&mut rng);
    let g = Graph::inference(&be);
    let x = g.input(Tensor::zeros(&[2, 3, 12, 12]));
    assert!(matches!(
        net.forward(&g, x, Mode::Eval),
        Err(LayerError::Config { .. })
    ));
}

#[test]
fn every_optimizer_trains_a_small_cnn_to_high_accuracy() {
    let optimizers: Vec<(Box<dyn Optimizer>, f32)> = vec![
        (Box::new(Adam::new(3e-3)), 0.9),
        (Box::new(Adam::adamw(3e-3, 0.01)), 0.9),
        (
            Box::new(Sgd::new(0.05).with_momentum(0.9).with_nesterov(true)),
            0.95,
        ),
        (Box::new(RmsProp::new(3e-3)), 0.85),
        (Box::new(Adagrad::new(0.05)), 0.9),
    ];
    for (opt, want) in optimizers {
        let mut rng = SeededRng::new(7);
        let train = shapes_dataset(240, &mut rng);
        let test = shapes_dataset(90, &mut rng);
        let name = opt.describe();
        let mut model = Model::new(
            lenet_like(&mut rng),
            CrossEntropyLoss::new(),
            BoxedOptimizer(opt),
            CpuBackend::new(),
        );
        let cfg = FitConfig {
            epochs: 20,
            batch_size: 16,
            progress: false,
            verbose: false,
            ..Default::default()
        };
        let history = model.fit(&train, Some(&test), &cfg).unwrap();
        let first = history.epochs[0].train.loss;
        let last = history.epochs.last().unwrap();
        assert!(
            last.train.loss < first,
            "{name}: loss did not fall ({first} → {})",
            last.train.loss
        );
        let acc = last.validation.unwrap().accuracy.unwrap();
        assert!(acc >= want, "{name}: validation accuracy {acc} < {want}");
        let probs = model
            .predict(
                &dnn_layers::gather_rows(&Tensor::zeros(&[4, 1, 12, 12]), &[0, 1]).unwrap(),
                8,
            )
            .unwrap();
        let p = probs.to_vec().unwrap();
        assert_eq!(probs.shape(), &[2, 3]);
        assert!(
            (p[0] + p[1] + p[2] - 1.0).abs() < 1e-5,
            "Output::Softmax gives probabilities when predicting"
        );
    }
}

/// Lets a boxed optimizer be handed to `Model::new`.
struct BoxedOptimizer(Box<dyn Optimizer>);

impl Optimizer for BoxedOptimizer {
    fn step(
        &mut self,
        be: &dyn dnn_ops::Backend,
        m: &mut dyn Module,
        g: &dnn_ops::Gradients,
    ) -> dnn_layers::Result<()> {
        self.0.step(be, m, g)
    }
    fn learning_rate(&self) -> f32 {
        self.0.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.set_learning_rate(lr)
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn state(&self) -> &dnn_layers::optim::SlotState {
        self.0.state()
    }
    fn state_mut(&mut self) -> &mut dnn_layers::optim::SlotState {
        self.0.state_mut()
    }
}

#[test]
fn mse_fits_a_linear_map_and_its_gradient_is_exact() {
    let mut rng = SeededRng::new(3);
    let x = random_tensor(&[64, 3], &mut rng, 0.0);
    let xv = x.to_vec().unwrap();
    let y: Vec<f32> = xv
        .chunks(3)
        .flat_map(|r| [2.0 * r[0] - r[1] + 0.5, r[2] * 3.0])
        .collect();
    let data = TensorDataset::new(x, Tensor::from_vec(y, &[64, 2]).unwrap()).unwrap();
    let net = Sequential::new().with(LinearConfig::new(3, 2).init("fc", &mut rng).unwrap());
    let mut model = Model::new(net, MseLoss, Adam::new(0.05), CpuBackend::new());
    let cfg = FitConfig {
        epochs: 60,
        batch_size: 16,
        progress: false,
        verbose: false,
        ..Default::default()
    };
    let history = model.fit(&data, None, &cfg).unwrap();
    assert!(history.epochs.last().unwrap().train.loss < 1e-3);
    assert!(
        history.epochs[0].train.accuracy.is_none(),
        "no accuracy for regression"
    );

    let be = CpuBackend::new();
    let out = random_tensor(&[4, 3], &mut rng, 0.05);
    let labels = Tensor::from_vec(vec![0.0, 2.0, 1.0, 2.0], &[4]).unwrap();
    GradCheck::default()
        .run(&be, &[out], |g, v| {
            dnn_layers::loss::Loss::compute(&MseLoss, g, v[0], &labels)
                .map_err(|e| dnn_ops::OpError::Graph(e.to_string()))
        })
        .unwrap();
}

#[test]
fn a_nan_input_stops_training_with_the_step_named() {
    let mut rng = SeededRng::new(1);
    let mut x = random_tensor(&[8, 3], &mut rng, 0.0).to_vec().unwrap();
    x[5] = f32::NAN;
    let data =
        TensorDataset::new(Tensor::from_vec(x, &[8, 3]).unwrap(), Tensor::zeros(&[8])).unwrap();
    let net = Sequential::new().with(LinearConfig::new(3, 2).init("fc", &mut rng).unwrap());
    let mut model = Model::new(
        net,
        CrossEntropyLoss::new(),
        Sgd::new(0.1),
        CpuBackend::new(),
    );
    let cfg = FitConfig {
        epochs: 1,
        batch_size: 4,
        shuffle: false,
        progress: false,
        verbose: false,
        ..Default::default()
    };
    match model.fit(&data, None, &cfg) {
        Err(LayerError::NonFiniteLoss { epoch, step, .. }) => assert_eq!((epoch, step), (1, 1)),
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
    let cfg = FitConfig {
        batch_size: 0,
        ..cfg
    };
    assert!(model.fit(&data, None, &cfg).is_err());
}

/// The parameters of `net`, as bits.
fn parameter_bits(net: &Sequential) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    net.visit_parameters(&mut |p| {
        out.push(
            p.value()
                .to_vec()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        )
    });
    out
}

#[test]
fn a_guarded_update_is_made_only_when_the_guard_is_finite() {
    let be = CpuBackend::new();
    let optimizers: Vec<fn() -> Box<dyn Optimizer>> = vec![
        || Box::new(Adam::new(1e-2)),
        || Box::new(Adam::adamw(1e-2, 0.1)),
        || Box::new(Sgd::new(0.05).with_momentum(0.9)),
        || Box::new(RmsProp::new(1e-2)),
        || Box::new(Adagrad::new(0.05)),
    ];
    for make in optimizers {
        let mut rng = SeededRng::new(5);
        let x = random_tensor(&[6, 4], &mut rng, 0.0);
        let y = random_tensor(&[6, 3], &mut rng, 0.0);
        let net = |seed| {
            Sequential::new().with(
                LinearConfig::new(4, 3)
                    .init("fc", &mut SeededRng::new(seed))
                    .unwrap(),
            )
        };
        let (mut plain, mut guarded) = (net(9), net(9));
        let (mut plain_opt, mut guarded_opt) = (make(), make());
        let name = plain_opt.describe();
        let gradients = |m: &mut Sequential| {
            let g = Graph::new(&be);
            let input = g.input(x.clone());
            let out = m.forward(&g, input, Mode::Train).unwrap();
            let l = dnn_layers::loss::Loss::compute(&MseLoss, &g, out, &y).unwrap();
            g.backward(l).unwrap()
        };
        for round in 0..3 {
            // A finite guard: the same update as an unguarded step, bit for bit.
            let grads = gradients(&mut plain);
            plain_opt.step(&be, &mut plain, &grads).unwrap();
            let grads = gradients(&mut guarded);
            guarded_opt
                .step_if_finite(&be, &mut guarded, &grads, &Tensor::scalar(0.25))
                .unwrap();
            assert_eq!(
                parameter_bits(&plain),
                parameter_bits(&guarded),
                "{name}, round {round}"
            );
            assert_eq!(plain_opt.state().step, guarded_opt.state().step);
            // NaN or infinite: nothing changes but the count, which the caller puts back.
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let before = parameter_bits(&guarded);
                let count = guarded_opt.state().step;
                let grads = gradients(&mut guarded);
                guarded_opt
                    .step_if_finite(&be, &mut guarded, &grads, &Tensor::scalar(bad))
                    .unwrap();
                assert_eq!(parameter_bits(&guarded), before, "{name}: guard {bad}");
                assert_eq!(guarded_opt.state().step, count + 1, "{name}: guard {bad}");
                guarded_opt.state_mut().step = count;
            }
        }
        // The moments were not touched either: the next finite steps still agree.
        let grads = gradients(&mut plain);
        plain_opt.step(&be, &mut plain, &grads).unwrap();
        let grads = gradients(&mut guarded);
        guarded_opt
            .step_if_finite(&be, &mut guarded, &grads, &Tensor::scalar(1.0))
            .unwrap();
        assert_eq!(parameter_bits(&plain), parameter_bits(&guarded), "{name}");
    }
}
