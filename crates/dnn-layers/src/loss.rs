//! Losses as objects: each turns the network output and a target into a scalar on the graph.

use dnn_ops::backend::Backend;
use dnn_ops::{CpuBackend, GaussianWeights, Graph, Tensor, Var};

use crate::error::{LayerError, Result};

/// A loss function.
pub trait Loss: Send + Sync {
    /// The mean loss of `output` against `target`, as a scalar variable.
    fn compute(&self, g: &Graph, output: Var, target: &Tensor) -> Result<Var>;
    /// Short name for logs ("cross-entropy").
    fn name(&self) -> String;
}

/// Categorical cross-entropy from logits (numerically stable log-softmax inside), over dimension
/// 1: `[N, C]` outputs with `[N]` labels, or `[N, C, H, W]` with `[N, H, W]` pixel labels.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyLoss {
    pub class_weights: Option<Tensor>,
    pub ignore_index: Option<i64>,
}

impl CrossEntropyLoss {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_class_weights(mut self, weights: Tensor) -> Self {
        self.class_weights = Some(weights);
        self
    }
    pub fn with_ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = Some(index);
        self
    }
}

impl Loss for CrossEntropyLoss {
    fn compute(&self, g: &Graph, output: Var, target: &Tensor) -> Result<Var> {
        Ok(g.cross_entropy(
            output,
            target,
            self.class_weights.as_ref(),
            self.ignore_index,
        )?)
    }
    fn name(&self) -> String {
        "cross-entropy".to_string()
    }
}

/// Mean squared error. A target of class labels (`[N]` for `[N, C]` outputs) is one-hot encoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct MseLoss;

/// One-hot encoding of integer labels `[N]` into `[N, classes]`.
pub fn one_hot(labels: &Tensor, classes: usize) -> Result<Tensor> {
    let values = labels.to_vec()?;
    let mut out = vec![0.0f32; values.len() * classes];
    for (i, &v) in values.iter().enumerate() {
        if v.fract() != 0.0 || v < 0.0 || v as usize >= classes {
            return Err(LayerError::Data(format!(
                "label {v} at position {i} is not a class index in 0..{classes}"
            )));
        }
        out[i * classes + v as usize] = 1.0;
    }
    Ok(Tensor::from_vec(out, &[values.len(), classes])?)
}

impl Loss for MseLoss {
    fn compute(&self, g: &Graph, output: Var, target: &Tensor) -> Result<Var> {
        let shape = g.shape(output);
        let target = if target.shape() == shape.as_slice() {
            target.clone()
        } else if shape.len() == 2 && target.shape() == [shape[0]] {
            one_hot(target, shape[1])?
        } else {
            return Err(LayerError::Data(format!(
                "MSE: target of shape {:?} fits neither the output {shape:?} nor its labels",
                target.shape()
            )));
        };
        let diff = g.sub(output, g.input(target))?;
        Ok(g.mean(g.mul(diff, diff)?)?)
    }
    fn name(&self) -> String {
        "mse".to_string()
    }
}

/// Where the Gaussian of [`GaussianWeightedCrossEntropy`] is centred.
pub use dnn_ops::GaussianCenter;

/// Pixel-wise cross-entropy weighted by a 2-D Gaussian that emphasises the object:
/// `w = 1 + α·exp(−((x−μx)² + (y−μy)²) / (2σ²))`, `σ = s·min(H, W)`,
/// loss `= Σ w·CE / Σ w`. Defaults: α = 1, s = 0.25, centred on the centroid of the foreground
/// classes (Oxford-IIIT Pet: class 0, the pet).
#[derive(Debug, Clone)]
pub struct GaussianWeightedCrossEntropy {
    pub alpha: f32,
    pub sigma_scale: f32,
    pub center: GaussianCenter,
    pub foreground_classes: Vec<usize>,
    pub ignore_index: Option<i64>,
}

impl Default for GaussianWeightedCrossEntropy {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            sigma_scale: 0.25,
            center: GaussianCenter::Centroid,
            foreground_classes: vec![0],
            ignore_index: None,
        }
    }
}

impl GaussianWeightedCrossEntropy {
    /// The map's parameters as the backend op takes them.
    pub fn params(&self) -> GaussianWeights {
        GaussianWeights {
            alpha: self.alpha,
            sigma_scale: self.sigma_scale,
            center: self.center,
            foreground_classes: self.foreground_classes.clone(),
            ignore_index: self.ignore_index,
        }
    }

    /// The per-pixel weights `[N, H, W]` for pixel labels `[N, H, W]`, on the CPU.
    pub fn pixel_weights(&self, labels: &Tensor) -> Result<Tensor> {
        self.pixel_weights_on(&CpuBackend::new(), labels)
    }

    /// The per-pixel weights `[N, H, W]` for pixel labels `[N, H, W]`, computed by `backend`
    /// ([`LossOps::gaussian_pixel_weights`]).
    pub fn pixel_weights_on(&self, backend: &dyn Backend, labels: &Tensor) -> Result<Tensor> {
        Ok(backend.gaussian_pixel_weights(labels, &self.params())?)
    }
}

impl Loss for GaussianWeightedCrossEntropy {
    fn compute(&self, g: &Graph, output: Var, target: &Tensor) -> Result<Var> {
        let weights = self.pixel_weights_on(g.backend(), target)?;
        Ok(g.pixel_weighted_cross_entropy(output, target, &weights, self.ignore_index)?)
    }
    fn name(&self) -> String {
        format!(
            "gaussian-ce(α {}, s {}, {:?})",
            self.alpha, self.sigma_scale, self.center
        )
    }
}

/// Soft multi-class Dice loss on per-pixel softmax probabilities.
#[derive(Debug, Clone, Copy)]
pub struct DiceLoss {
    pub eps: f32,
    pub ignore_index: Option<i64>,
}

impl Default for DiceLoss {
    fn default() -> Self {
        Self {
            eps: 1.0,
            ignore_index: None,
        }
    }
}

impl Loss for DiceLoss {
    fn compute(&self, g: &Graph, output: Var, target: &Tensor) -> Result<Var> {
        Ok(g.soft_dice(output, target, self.eps, self.ignore_index)?)
    }
    fn name(&self) -> String {
        "dice".to_string()
    }
}

/// Cross-entropy plus soft Dice (`CE + λ·Dice`).
#[derive(Debug, Clone, Default)]
pub struct CeDiceLoss {
    pub ce: CrossEntropyLoss,
    pub dice: DiceLoss,
    pub dice_weight: f32,
}

impl CeDiceLoss {
    pub fn new(ignore_index: Option<i64>) -> Self {
        Self {
            ce: CrossEntropyLoss {
                class_weights: None,
                ignore_index,
            },
            dice: DiceLoss {
                ignore_index,
                ..Default::default()
            },
            dice_weight: 1.0,
        }
    }
}

impl Loss for CeDiceLoss {
    fn compute(&self, g: &Graph, output: Var, target: &Tensor) -> Result<Var> {
        let ce = self.ce.compute(g, output, target)?;
        let dice = self.dice.compute(g, output, target)?;
        Ok(g.add(ce, g.scale(dice, self.dice_weight)?)?)
    }
    fn name(&self) -> String {
        format!("ce+dice(λ {})", self.dice_weight)
    }
}
