//! Segmentation pieces: 4-D outputs, the Gaussian-weighted CE, Dice, the confusion-matrix
//! metrics, transposed-conv / bilinear upsampling layers and the residual block.

use dnn_layers::layers::*;
use dnn_layers::loss::{CeDiceLoss, DiceLoss, GaussianCenter, GaussianWeightedCrossEntropy, Loss};
use dnn_layers::metrics::ConfusionMatrix;
use dnn_layers::{Mode, Module};
use dnn_ops::testing::{GradCheck, random_tensor};
use dnn_ops::{CpuBackend, Graph, OpError, Tensor};
use magma_tensor::SeededRng;

#[test]
fn gaussian_weights_follow_the_formula_around_the_pet_centroid() {
    // 1 sample, 8×10, pet (class 0) occupies rows 1..=3, cols 6..=8 → centroid (x 7, y 2).
    let (h, w) = (8, 10);
    let mut labels = vec![1.0f32; h * w];
    for y in 1..=3 {
        for x in 6..=8 {
            labels[y * w + x] = 0.0;
        }
    }
    labels[0] = 2.0; // border pixels do not move the centroid
    let labels = Tensor::from_vec(labels, &[1, h, w]).unwrap();
    let loss = GaussianWeightedCrossEntropy {
        alpha: 2.0,
        sigma_scale: 0.25,
        ..Default::default()
    };
    let wts = loss.pixel_weights(&labels).unwrap();
    let sigma = 0.25 * 8.0f32;
    for (y, x) in [(2usize, 7usize), (0, 0), (7, 9), (5, 3)] {
        let d2 = (x as f32 - 7.0).powi(2) + (y as f32 - 2.0).powi(2);
        let want = 1.0 + 2.0 * (-d2 / (2.0 * sigma * sigma)).exp();
        assert!(
            (wts.get(&[0, y, x]).unwrap() - want).abs() < 1e-6,
            "({y},{x})"
        );
    }
    assert!(
        (wts.get(&[0, 2, 7]).unwrap() - 3.0).abs() < 1e-6,
        "peak 1 + α at the centroid"
    );
    // No pet: centred on the image; ImageCenter mode ignores the pet.
    let empty = Tensor::full(&[1, h, w], 1.0);
    let centre = loss.pixel_weights(&empty).unwrap();
    let fixed = GaussianWeightedCrossEntropy {
        center: GaussianCenter::ImageCenter,
        ..loss.clone()
    }
    .pixel_weights(&labels)
    .unwrap();
    assert_eq!(centre.to_vec().unwrap(), fixed.to_vec().unwrap());
    let c = centre.to_vec().unwrap();
    assert!(
        (c[3 * w + 4] - c[4 * w + 5]).abs() < 1e-6,
        "symmetric about (4.5, 3.5)"
    );
    assert!(
        GaussianWeightedCrossEntropy {
            sigma_scale: 0.0,
            ..Default::default()
        }
        .pixel_weights(&labels)
        .is_err()
    );
}

#[test]
fn segmentation_losses_take_4d_outputs_and_have_exact_gradients() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(3);
    let logits = random_tensor(&[2, 3, 5, 6], &mut rng, 0.05);
    let labels =
        Tensor::from_vec((0..60).map(|i| ((i * 7) % 3) as f32).collect(), &[2, 5, 6]).unwrap();
    let losses: Vec<Box<dyn Loss>> = vec![
        Box::new(GaussianWeightedCrossEntropy::default()),
        Box::new(DiceLoss::default()),
        Box::new(CeDiceLoss::new(None)),
    ];
    for loss in &losses {
        GradCheck::default()
            .run(&be, std::slice::from_ref(&logits), |g, v| {
                loss.compute(g, v[0], &labels)
                    .map_err(|e| OpError::Graph(e.to_string()))
            })
            .unwrap_or_else(|e| panic!("{}: {e}", loss.name()));
    }
    // With α = 0 the Gaussian CE is the plain CE.
    let g = Graph::new(&be);
    let x = g.input(logits.clone());
    let a = GaussianWeightedCrossEntropy {
        alpha: 0.0,
        ..Default::default()
    }
    .compute(&g, x, &labels)
    .unwrap();
    let b = g.cross_entropy(x, &labels, None, None).unwrap();
    assert!((g.value(a).item().unwrap() - g.value(b).item().unwrap()).abs() < 1e-6);
}

#[test]
fn confusion_matrix_metrics_match_hand_counts() {
    // Truth / prediction over 8 pixels, 3 classes.
    let truth = [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 255.0];
    let pred = [0usize, 1, 1, 1, 2, 2, 0, 1];
    let mut logits = vec![0.0f32; 3 * 8];
    for (i, &p) in pred.iter().enumerate() {
        logits[p * 8 + i] = 1.0;
    }
    let out = Tensor::from_vec(logits, &[1, 3, 8]).unwrap();
    let labels = Tensor::from_vec(truth.to_vec(), &[1, 8]).unwrap();
    let mut cm = ConfusionMatrix::new(3);
    cm.add_batch(&out, &labels, Some(255)).unwrap();
    assert_eq!(cm.total(), 7);
    assert!((cm.pixel_accuracy() - 4.0 / 7.0).abs() < 1e-12);
    // class 0: tp 1, truth 2, pred 2 → 1/3; class 1: tp 2, truth 3, pred 3 → 2/4; class 2: tp 1, truth 2, pred 2 → 1/3
    let iou = cm.iou();
    assert!(
        (iou[0] - 1.0 / 3.0).abs() < 1e-12
            && (iou[1] - 0.5).abs() < 1e-12
            && (iou[2] - 1.0 / 3.0).abs() < 1e-12
    );
    assert!((cm.mean_iou() - (1.0 / 3.0 + 0.5 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    assert!((cm.dice()[1] - 4.0 / 6.0).abs() < 1e-12);
    // Foreground {0, 2} vs background {1}: tp = pixels fg→fg = (0→0) + (2→2) + (2→0) = 3,
    // fp = 1→2 = 1, fn = 0→1 = 1 → 3/5.
    assert!((cm.foreground_iou(&[0, 2]) - 0.6).abs() < 1e-12);
    let mut total = ConfusionMatrix::new(3);
    total.merge(&cm);
    total.merge(&cm);
    assert_eq!(total.total(), 14);
    assert!(
        cm.add_batch(
            &out,
            &Tensor::from_vec(vec![5.0; 8], &[1, 8]).unwrap(),
            None
        )
        .is_err()
    );
}

#[test]
fn upsampling_layers_and_the_residual_block_have_the_right_shapes_and_gradients() {
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(4);
    let mut up = ConvTranspose2dConfig::up2(4, 2)
        .init("up", &mut rng)
        .unwrap();
    let mut bil = Upsample::bilinear(2).unwrap();
    let mut res = ResidualBlock::new("res", 4, 6, &mut rng).unwrap();
    let same = ResidualBlock::new("same", 4, 4, &mut rng).unwrap();
    let x = random_tensor(&[2, 4, 3, 5], &mut rng, 0.05);
    let g = Graph::new(&be);
    let v = g.input(x.clone());
    assert_eq!(
        g.shape(up.forward(&g, v, Mode::Train).unwrap()),
        vec![2, 2, 6, 10]
    );
    assert_eq!(
        g.shape(bil.forward(&g, v, Mode::Train).unwrap()),
        vec![2, 4, 6, 10]
    );
    assert_eq!(
        g.shape(res.forward(&g, v, Mode::Train).unwrap()),
        vec![2, 6, 3, 5]
    );
    assert_eq!(res.output_shape(&[2, 4, 3, 5]), Some(vec![2, 6, 3, 5]));
    let mut names = Vec::new();
    res.visit_parameters(&mut |p| names.push(p.name().to_string()));
    assert!(names.contains(&"res/proj/weight".to_string()));
    let mut names = Vec::new();
    same.visit_parameters(&mut |p| names.push(p.name().to_string()));
    assert!(
        !names.iter().any(|n| n.contains("proj")),
        "identity shortcut when channels match"
    );
    // The whole residual block (eval mode: frozen statistics) against finite differences.
    GradCheck::default()
        .run(&be, &[x], |g, v| {
            same.clone()
                .forward(g, v[0], Mode::Eval)
                .map_err(|e| OpError::Graph(e.to_string()))
        })
        .unwrap();
}
