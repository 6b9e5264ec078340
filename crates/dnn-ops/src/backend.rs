//! The backend seam: a backend is the sum of small op traits, each object-safe.
//!
//! The CPU backend ([`crate::cpu::CpuBackend`]) implements every trait and is the reference;
//! a cuDNN backend implements the same traits for device tensors and is tested against it.
//! The autodiff graph holds a `&dyn Backend`, so models and losses never name a backend.

use magma_tensor::Tensor;

use crate::attrs::{
    Activation, AdagradStep, AdamStep, BatchNormAttrs, Conv2dAttrs, ConvTranspose2dAttrs,
    GaussianWeights, Pool2dAttrs, RmsPropStep, SgdStep,
};
use crate::error::Result;
use crate::pending::PendingValues;

/// Matrix products of rank-2 tensors.
pub trait MatmulOps {
    /// `op(a) · op(b)`, where `op` transposes when the flag is set.
    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor>;
}

/// Convolutions and transposed convolutions, NCHW, PyTorch weight layouts
/// (`[out, in, kh, kw]` for conv2d, `[in, out, kh, kw]` for conv_transpose2d).
pub trait ConvOps {
    /// A filter (`[out, in, kh, kw]`, or a transposed convolution's `[in, out, kh, kw]`) in the
    /// form this backend's convolutions read fastest, same shape and values up to the
    /// backend's compute precision (default: the filter as it is; the CUDA backend in its NHWC
    /// modes: a channels-last copy in bf16 or fp32). The autodiff converts each filter once per forward pass and
    /// hands the result to the forward and the data-gradient convolutions.
    fn conv_weight(&self, w: &Tensor) -> Result<Tensor> {
        Ok(w.clone())
    }
    fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor>;
    /// Gradient of conv2d with respect to its input of shape `x_shape`.
    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor>;
    /// Gradient of conv2d with respect to its weight of shape `w_shape`.
    fn conv2d_backward_filter(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor>;
    /// Transposed convolution (the data gradient of a convolution).
    fn conv_transpose2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor>;
    /// Gradient of conv_transpose2d with respect to its input (a convolution).
    fn conv_transpose2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor>;
    /// Gradient of conv_transpose2d with respect to its weight (a filter gradient, roles swapped).
    fn conv_transpose2d_backward_filter(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor>;

    /// The input and weight gradients of conv2d at once, each only where `need` asks (a backend
    /// may share work between them, e.g. converting `dy` once); the same values as
    /// [`ConvOps::conv2d_backward_data`] and [`ConvOps::conv2d_backward_filter`].
    fn conv2d_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        attrs: &Conv2dAttrs,
        need: [bool; 2],
    ) -> Result<[Option<Tensor>; 2]> {
        let (x_shape, w_shape) = (x.shape4("conv2d_backward")?, w.shape4("conv2d_backward")?);
        Ok([
            need[0]
                .then(|| self.conv2d_backward_data(dy, w, x_shape, attrs))
                .transpose()?,
            need[1]
                .then(|| self.conv2d_backward_filter(x, dy, w_shape, attrs))
                .transpose()?,
        ])
    }

    /// The input and weight gradients of conv_transpose2d at once, each only where `need` asks.
    fn conv_transpose2d_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        attrs: &ConvTranspose2dAttrs,
        need: [bool; 2],
    ) -> Result<[Option<Tensor>; 2]> {
        let w_shape = w.shape4("conv_transpose2d_backward")?;
        Ok([
            need[0]
                .then(|| self.conv_transpose2d_backward_data(dy, w, attrs))
                .transpose()?,
            need[1]
                .then(|| self.conv_transpose2d_backward_filter(x, dy, w_shape, attrs))
                .transpose()?,
        ])
    }
}

/// Max and average pooling.
pub trait PoolOps {
    fn max_pool2d(&self, x: &Tensor, attrs: &Pool2dAttrs) -> Result<Tensor>;
    /// Routes `dy` to the first maximum of each window (the input `x` and output `y` are given,
    /// as cuDNN wants them).
    fn max_pool2d_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor>;
    fn avg_pool2d(&self, x: &Tensor, attrs: &Pool2dAttrs) -> Result<Tensor>;
    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor>;
}

/// Pointwise activations.
pub trait ActivationOps {
    fn activation(&self, x: &Tensor, kind: Activation) -> Result<Tensor>;
    /// `dx` from the input `x`, the output `y` and `dy`.
    fn activation_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        kind: Activation,
    ) -> Result<Tensor>;
}

/// What training-mode batch norm returns besides its output.
#[derive(Debug, Clone)]
pub struct BatchNormSaved {
    /// Per-channel batch mean.
    pub mean: Tensor,
    /// Per-channel `1 / sqrt(var + eps)` of the biased batch variance.
    pub inv_std: Tensor,
    /// A training pass fused with a ReLU may keep its per-channel coefficients `(scale, shift)`
    /// (`y = max(0, x·scale + shift)`) so that its backward recomputes the ReLU's mask from the
    /// input instead of reading the output (the CUDA NHWC kernels: one operand less to read);
    /// `None` otherwise.
    pub relu_mask: Option<(Tensor, Tensor)>,
}

/// The running statistics of a batch-norm layer (buffers, not trained parameters).
#[derive(Debug, Clone)]
pub struct RunningStats {
    pub mean: Tensor,
    pub var: Tensor,
}

impl RunningStats {
    /// Mean 0 and variance 1 for `channels` channels (PyTorch's initial state).
    pub fn new(channels: usize) -> Self {
        Self {
            mean: Tensor::zeros(&[channels]),
            var: Tensor::ones(&[channels]),
        }
    }
}

/// Batch normalisation over `(N, H, W)` per channel.
pub trait NormOps {
    /// Normalises with batch statistics and updates the running ones in place
    /// (`running = (1 − momentum)·running + momentum·batch`, unbiased variance).
    fn batch_norm_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)>;
    /// Normalises with the running statistics (returned as `saved` for a frozen backward).
    fn batch_norm_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)>;
    /// `(dx, dgamma, dbeta)`. With `batch_statistics` the mean and inverse deviation depend on
    /// `x` (training mode); without, they are constants (evaluation mode, frozen statistics).
    fn batch_norm_backward(
        &self,
        x: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
        batch_statistics: bool,
    ) -> Result<(Tensor, Tensor, Tensor)>;
}

/// Softmax and log-softmax over dimension 1 (the channels of every pixel).
pub trait SoftmaxOps {
    fn softmax(&self, x: &Tensor) -> Result<Tensor>;
    fn softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
    fn log_softmax(&self, x: &Tensor) -> Result<Tensor>;
    fn log_softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
}

/// Resampling of NCHW images.
pub trait ResizeOps {
    /// Bilinear resampling to `out_hw`, `align_corners = false`.
    fn upsample_bilinear(&self, x: &Tensor, out_hw: [usize; 2]) -> Result<Tensor>;
    fn upsample_bilinear_backward(&self, dy: &Tensor, x_shape: [usize; 4]) -> Result<Tensor>;
}

/// Joining, splitting and cutting tensors along one dimension.
pub trait ShapeOps {
    fn concat(&self, parts: &[&Tensor], dim: usize) -> Result<Tensor>;
    fn split(&self, x: &Tensor, dim: usize, sizes: &[usize]) -> Result<Vec<Tensor>>;
    /// Zero padding of the last two dimensions: `[top, bottom, left, right]`.
    fn pad2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor>;
    /// The inverse cut of `pad2d`.
    fn crop2d(&self, x: &Tensor, pads: [usize; 4]) -> Result<Tensor>;
}

/// Elementwise arithmetic, broadcasting of per-channel vectors, reductions and dropout.
pub trait ElementwiseOps {
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// `acc += b` (same shapes): how gradients reaching one value by several paths are summed.
    /// The default allocates `acc + b`; a backend may add in place.
    fn add_assign(&self, acc: &mut Tensor, b: &Tensor) -> Result<()> {
        *acc = self.add(acc, b)?;
        Ok(())
    }
    fn sub(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// `alpha · x + beta`.
    fn affine(&self, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor>;
    /// Adds `bias[c]` to every element of channel `c` (dimension 1).
    fn add_channel_bias(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor>;
    /// Sums every dimension but 1: the gradient of a per-channel bias.
    fn sum_per_channel(&self, x: &Tensor) -> Result<Tensor>;
    /// Sum of all elements, as a rank-0 tensor.
    fn sum_all(&self, x: &Tensor) -> Result<Tensor>;
    /// A tensor of `shape` filled with `value`.
    fn full(&self, shape: &[usize], value: f32) -> Result<Tensor>;
    /// A tensor of `shape` filled with the single value of `value`.
    fn broadcast_scalar(&self, value: &Tensor, shape: &[usize]) -> Result<Tensor>;
    /// Inverted dropout: returns `(y, mask)` where `mask` is 0 or `1/(1−p)`; seeded.
    fn dropout(&self, x: &Tensor, p: f32, seed: u64) -> Result<(Tensor, Tensor)>;
}

/// Pixel-wise losses, fused with their gradient.
pub trait LossOps {
    /// Mean cross-entropy of `logits` `[N, C, ...]` against integer `labels` `[N, ...]` (stored as
    /// `f32`), with optional class weights and an ignored label, PyTorch semantics
    /// (weighted mean over non-ignored elements). Returns `(loss, dloss/dlogits)`.
    fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        class_weights: Option<&Tensor>,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)>;

    /// Cross-entropy with a weight per pixel: `Σ wᵢ·CEᵢ / Σ wᵢ` over non-ignored pixels, for
    /// `logits` `[N, C, ...]`, `labels` `[N, ...]` and `pixel_weights` `[N, ...]` (all ≥ 0).
    /// Returns `(loss, dloss/dlogits)`.
    fn pixel_weighted_cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        pixel_weights: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)>;

    /// Soft multi-class Dice loss on softmax probabilities:
    /// `1 − (1/C)·Σ_c (2·Σᵢ pᵢc·tᵢc + ε) / (Σᵢ pᵢc + Σᵢ tᵢc + ε)`, ignored pixels excluded.
    /// Returns `(loss, dloss/dlogits)`.
    fn soft_dice(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        eps: f32,
        ignore_index: Option<i64>,
    ) -> Result<(Tensor, Tensor)>;

    /// The 2-D-Gaussian pixel weights `[N, H, W]` of pixel labels `[N, H, W]` (stored as `f32`),
    /// for [`LossOps::pixel_weighted_cross_entropy`]; see [`GaussianWeights`] for the map.
    fn gaussian_pixel_weights(&self, labels: &Tensor, params: &GaussianWeights) -> Result<Tensor>;
}

/// In-place parameter updates.
/// One parameter's operands of [`OptimizerOps::adam_step_many`].
#[derive(Debug)]
pub struct AdamOperands<'a> {
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
    /// First moment.
    pub m: &'a mut Tensor,
    /// Second moment.
    pub v: &'a mut Tensor,
}

pub trait OptimizerOps {
    /// One Adam/AdamW step on `param` with first and second moments `m` and `v`.
    fn adam_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        step: &AdamStep,
    ) -> Result<()>;
    /// The same Adam/AdamW step on many parameters at once, with the results of
    /// [`OptimizerOps::adam_step`] on each (a backend may fuse them: the CUDA backend runs one
    /// kernel for all, the multi-tensor update).
    fn adam_step_many(&self, operands: &mut [AdamOperands<'_>], step: &AdamStep) -> Result<()> {
        for o in operands.iter_mut() {
            self.adam_step(o.param, o.grad, o.m, o.v, step)?;
        }
        Ok(())
    }
    /// [`Self::adam_step_many`] made only when `guard`, a one-element tensor (a training
    /// loop's loss plus its gradients' sum, say), is finite; otherwise nothing changes. A
    /// device backend reads the guard on the device, so the host queues the update without
    /// waiting for the values it depends on; the default reads it on the host.
    fn adam_step_many_if_finite(
        &self,
        operands: &mut [AdamOperands<'_>],
        step: &AdamStep,
        guard: &Tensor,
    ) -> Result<()> {
        crate::checks::update_guard("adam_step", guard)?;
        if guard.item()?.is_finite() {
            self.adam_step_many(operands, step)
        } else {
            Ok(())
        }
    }
    /// One Adagrad step; `sum_sq` accumulates squared gradients.
    fn adagrad_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        sum_sq: &mut Tensor,
        step: &AdagradStep,
    ) -> Result<()>;
    /// One RMSProp step; `square_avg` is the running mean of squared gradients, `momentum_buf`
    /// the momentum buffer (unused when momentum is 0).
    fn rmsprop_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        square_avg: &mut Tensor,
        momentum_buf: &mut Tensor,
        step: &RmsPropStep,
    ) -> Result<()>;
    /// One SGD step with optional (Nesterov) momentum held in `velocity`.
    fn sgd_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        velocity: &mut Tensor,
        step: &SgdStep,
    ) -> Result<()>;
}

/// Evaluation counts computed where the logits live (only the counts travel to the host).
pub trait MetricOps {
    /// Counts of (true class, predicted class) pairs, row-major `[C × C]`, for `logits`
    /// `[N, C, ...]` and integer `labels` `[N, ...]` (stored as `f32`). The prediction of a pixel
    /// is the first maximum over dimension 1; pixels labelled `ignore_index` are skipped; any
    /// other label outside `0..C` is an error.
    fn confusion_matrix(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        ignore_index: Option<i64>,
    ) -> Result<Vec<u64>>;
}

/// Compositions of other ops that a backend may run fused (fewer passes over memory, fewer
/// launches); the defaults compose the ops, and a fused version must give the same values up to
/// rounding.
pub trait FusedOps: NormOps + ActivationOps {
    /// `relu(batch_norm_train(x))`: the result and the batch statistics of the norm.
    fn batch_norm_relu_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        batch_norm_then_relu(self, x, gamma, beta, running_mean, running_var, attrs)
    }
    /// `relu(batch_norm_eval(x))`: the result and the running statistics it used.
    fn batch_norm_relu_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        attrs: &BatchNormAttrs,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let (z, saved) = self.batch_norm_eval(x, gamma, beta, running_mean, running_var, attrs)?;
        Ok((self.activation(&z, Activation::Relu)?, saved))
    }
    /// `(dx, dgamma, dbeta)` of [`FusedOps::batch_norm_relu_train`] from its result `y` and the
    /// gradient `dy` (the ReLU passes `dy` where `y > 0`, which is where the norm's output is).
    fn batch_norm_relu_backward(
        &self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        gamma: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        relu_then_batch_norm_backward(self, x, y, dy, gamma, saved)
    }
}

/// [`FusedOps::batch_norm_relu_train`] as the two ops (the default, and a fusing backend's
/// path for what it does not fuse).
pub fn batch_norm_then_relu<B: NormOps + ActivationOps + ?Sized>(
    be: &B,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    attrs: &BatchNormAttrs,
) -> Result<(Tensor, BatchNormSaved)> {
    let (z, saved) = be.batch_norm_train(x, gamma, beta, running_mean, running_var, attrs)?;
    Ok((be.activation(&z, Activation::Relu)?, saved))
}

/// [`FusedOps::batch_norm_relu_backward`] as the two ops' backward passes.
pub fn relu_then_batch_norm_backward<B: NormOps + ActivationOps + ?Sized>(
    be: &B,
    x: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    saved: &BatchNormSaved,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dz = be.activation_backward(y, y, dy, Activation::Relu)?;
    be.batch_norm_backward(x, &dz, gamma, saved, true)
}

/// A complete backend: every op trait, shareable across threads.
pub trait Backend:
    MatmulOps
    + ConvOps
    + PoolOps
    + ActivationOps
    + NormOps
    + SoftmaxOps
    + ResizeOps
    + ShapeOps
    + ElementwiseOps
    + LossOps
    + OptimizerOps
    + MetricOps
    + FusedOps
    + Send
    + Sync
    + std::fmt::Debug
{
    /// A short name for messages and benchmark tables ("cpu", "cuda:0").
    fn name(&self) -> String;

    /// `tensor` moved to this backend's memory ahead of its use, the copy queued behind the
    /// work already queued and not waited for, so a training loop can move the next batch
    /// while the device runs the current step. A tensor already there (and on the CPU
    /// backend, every host tensor) is returned as it is, sharing its storage.
    fn upload(&self, tensor: &Tensor) -> Result<Tensor> {
        Ok(tensor.clone())
    }

    /// Starts reading `tensor`'s values (a few: a loss, say) back to the host behind the work
    /// already queued, without waiting; [`PendingValues::wait`] waits only for that work, not
    /// for what is queued after this call. The CPU backend reads at once.
    fn read_later(&self, tensor: &Tensor) -> Result<PendingValues> {
        Ok(PendingValues::ready(tensor.to_vec()?))
    }
}
