//! The layers: each a config builder (`XConfig::new(..).with_..(..).init(name, rng)`) and a
//! module owning named parameters.

mod activation;
mod batch_norm;
mod conv2d;
mod conv_transpose2d;
mod dropout;
mod flatten;
mod input;
mod linear;
mod output;
mod pool;
mod residual;
mod sequential;
mod upsample;
mod weight_bias;

pub use activation::ActivationLayer;
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv_transpose2d::{ConvTranspose2d, ConvTranspose2dConfig};
pub use conv2d::{Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use input::Input;
pub use linear::{Linear, LinearConfig};
pub use output::Output;
pub use pool::{Pool, PoolKind};
pub use residual::ResidualBlock;
pub use sequential::Sequential;
pub use upsample::Upsample;

/// `prefix/leaf`, or `leaf` when the prefix is empty.
pub(crate) fn join_name(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}/{leaf}")
    }
}
