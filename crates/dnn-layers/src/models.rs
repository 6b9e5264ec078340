//! Ready-made classification networks.

use magma_tensor::SeededRng;

use crate::error::{Result, config_err};
use crate::layers::*;

/// A LeNet-5-style CNN widened for today's datasets: two 5×5 conv-BN-ReLU-maxpool stages
/// (32 and 64 channels), then fully connected 120 → 84 → `classes` with dropout, and a softmax
/// output. Takes `[N, channels, size, size]` images (28 for MNIST, 32 for CIFAR).
pub fn lenet5(
    channels: usize,
    size: usize,
    classes: usize,
    dropout: f32,
    rng: &mut SeededRng,
) -> Result<Sequential> {
    // conv1 keeps the size (padding 2), pool halves it, conv2 (no padding) removes 4, pool halves.
    if size < 12 {
        return config_err(
            "lenet5",
            format!("images must be at least 12×12, got {size}×{size}"),
        );
    }
    let after = (size / 2 - 4) / 2;
    Ok(Sequential::new()
        .with(Input::new(&[channels, size, size]))
        .with(
            Conv2dConfig::new(channels, 32, [5, 5])
                .with_padding([2, 2])
                .init("conv1", rng)?,
        )
        .with(BatchNormConfig::new(32).init("bn1")?)
        .with(ActivationLayer::relu())
        .with(Pool::max(2))
        .with(Conv2dConfig::new(32, 64, [5, 5]).init("conv2", rng)?)
        .with(BatchNormConfig::new(64).init("bn2")?)
        .with(ActivationLayer::relu())
        .with(Pool::max(2))
        .with(Flatten)
        .with(LinearConfig::new(64 * after * after, 120).init("fc1", rng)?)
        .with(ActivationLayer::relu())
        .with(Dropout::new(dropout, rng)?)
        .with(LinearConfig::new(120, 84).init("fc2", rng)?)
        .with(ActivationLayer::relu())
        .with(LinearConfig::new(84, classes).init("fc3", rng)?)
        .with(Output::Softmax))
}
