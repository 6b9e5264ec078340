//! Losses as objects: each turns the network output and a target into a scalar on the graph.

use dnn_ops::{Graph, Tensor, Var};

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
