//! The CUDA backend trains like the CPU reference: from the same initial weights and the same
//! batches, the first training losses agree to 1e-3 relative (the acceptance check), for
//! each pixel-wise loss; in bf16 mixed precision to 1e-2 (and the loss still falls).

#![cfg(feature = "cuda")]

use dnn_layers::optim::{Adam, Optimizer};
use dnn_layers::{Mode, Module};
use dnn_ops::{Backend, CpuBackend, Graph, Tensor};
use magma_tensor::SeededRng;
use unet::train::LossKind;
use unet::{UNet, UNetConfig};

/// `steps` random batches of 4 RGB 64×64 images with 3-class masks, a few pixels ignored (255).
fn batches(steps: usize) -> Vec<(Tensor, Tensor)> {
    let mut rng = SeededRng::new(42);
    (0..steps)
        .map(|_| {
            let images: Vec<f32> = (0..4 * 3 * 64 * 64).map(|_| rng.normal(0.0, 1.0)).collect();
            let masks: Vec<f32> = (0..4 * 64 * 64)
                .map(|_| match rng.below(50) {
                    0 => 255.0,
                    k => (k % 3) as f32,
                })
                .collect();
            (
                Tensor::from_vec(images, &[4, 3, 64, 64]).unwrap(),
                Tensor::from_vec(masks, &[4, 64, 64]).unwrap(),
            )
        })
        .collect()
}

/// The losses of `batches.len()` Adam steps of a fresh U-Net (fixed seed) on `backend`.
fn train_losses(
    backend: &dyn Backend,
    config: &UNetConfig,
    loss: LossKind,
    batches: &[(Tensor, Tensor)],
) -> Vec<f32> {
    let mut model = UNet::new(config, &mut SeededRng::new(7)).unwrap();
    let loss = loss.build();
    let mut adam = Adam::new(1e-3);
    batches
        .iter()
        .map(|(x, y)| {
            let g = Graph::new(backend);
            let input = g.input(x.clone());
            let logits = model.forward(&g, input, Mode::Train).unwrap();
            let l = loss.compute(&g, logits, y).unwrap();
            let value = g.value(l).item().unwrap();
            let grads = g.backward(l).unwrap();
            drop(g);
            adam.step(backend, &mut model, &grads).unwrap();
            value
        })
        .collect()
}

fn compare(loss: LossKind, config: &UNetConfig, steps: usize) {
    let Some(gpu) = dnn_ops::cuda::test_backend() else {
        eprintln!("skipped: no CUDA device");
        return;
    };
    compare_on(gpu, loss, config, steps, 1e-3);
}

fn compare_on(
    gpu: &dnn_ops::CudaBackend,
    loss: LossKind,
    config: &UNetConfig,
    steps: usize,
    tol: f32,
) -> (Vec<f32>, Vec<f32>) {
    let data = batches(steps);
    let cpu_losses = train_losses(&CpuBackend::new(), config, loss, &data);
    let gpu_losses = train_losses(gpu, config, loss, &data);
    println!("{loss:?}: cpu {cpu_losses:?}");
    println!("{loss:?}: gpu {gpu_losses:?}");
    for (step, (c, g)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        let rel = ((c - g) / c).abs();
        assert!(
            rel < tol,
            "{loss:?} step {step}: cpu loss {c} vs gpu {g} (relative difference {rel:.2e})"
        );
    }
    (cpu_losses, gpu_losses)
}

#[test]
fn bf16_mixed_precision_trains_like_the_cpu() {
    if dnn_ops::cuda::test_backend().is_none() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let gpu = dnn_ops::CudaBackend::new(0)
        .unwrap()
        .with_precision(dnn_ops::Precision::Bf16);
    let config = UNetConfig::new(3, 3).with_base(8).with_depth(3);
    let (_, bf16) = compare_on(&gpu, LossKind::Ce, &config, 8, 1e-2);
    assert!(
        bf16[7] < bf16[0],
        "bf16 losses did not fall over 8 steps: {bf16:?}"
    );
    // The residual blocks add bf16 activations to fp32 ones (widened on the way).
    let residual = UNetConfig::new(3, 3)
        .with_base(4)
        .with_depth(2)
        .with_block(unet::BlockKind::Residual)
        .with_upsample(unet::UpsampleKind::Bilinear);
    compare_on(&gpu, LossKind::CeDice, &residual, 3, 1e-2);
}

/// The NHWC fp32 activations (TF32's default layout; fp32 with the NHWC switch, where the math is
/// plain fp32 and the CPU's losses must be met as closely as in NCHW) through the whole U-Net and
/// the residual bilinear variant.
#[test]
fn nhwc_fp32_and_tf32_activations_train_like_the_cpu() {
    if dnn_ops::cuda::test_backend().is_none() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let residual = UNetConfig::new(3, 3)
        .with_base(4)
        .with_depth(2)
        .with_block(unet::BlockKind::Residual)
        .with_upsample(unet::UpsampleKind::Bilinear);
    let unet = UNetConfig::new(3, 3).with_base(8).with_depth(3);
    for (precision, tol) in [
        (dnn_ops::Precision::Fp32, 1e-3),
        (dnn_ops::Precision::Tf32, 1e-2),
    ] {
        let gpu = dnn_ops::CudaBackend::new(0)
            .unwrap()
            .with_precision(precision)
            .with_conv_nhwc(true);
        println!("{precision:?}, NHWC activations");
        let (_, losses) = compare_on(&gpu, LossKind::Ce, &unet, 5, tol);
        assert!(
            losses[4] < losses[0],
            "{precision:?} losses did not fall: {losses:?}"
        );
        compare_on(&gpu, LossKind::CeDice, &residual, 3, tol);
    }
}

#[test]
fn first_five_cross_entropy_losses_match_the_cpu() {
    compare(
        LossKind::Ce,
        &UNetConfig::new(3, 3).with_base(8).with_depth(3),
        5,
    );
}

#[test]
fn gaussian_and_dice_losses_match_the_cpu() {
    let config = UNetConfig::new(3, 3).with_base(4).with_depth(2);
    compare(LossKind::GaussianCe, &config, 3);
    compare(LossKind::CeDice, &config, 3);
}

#[test]
fn residual_bilinear_variant_matches_the_cpu() {
    let config = UNetConfig::new(3, 3)
        .with_base(4)
        .with_depth(2)
        .with_block(unet::BlockKind::Residual)
        .with_upsample(unet::UpsampleKind::Bilinear);
    compare(LossKind::Ce, &config, 3);
}
