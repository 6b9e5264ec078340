//! What a model trains on: anything that can hand out batches by index.

use dnn_ops::Tensor;

use crate::error::Result;

/// A finite set of samples that yields `(inputs, targets)` batches by sample index.
pub trait Dataset: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inputs `[B, ...]` and targets (`[B]` class labels, `[B, H, W]` pixel labels, or values).
    fn batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)>;
}

/// An in-memory dataset of input and target tensors sharing their first dimension.
#[derive(Debug, Clone)]
pub struct TensorDataset {
    inputs: Tensor,
    targets: Tensor,
}

impl TensorDataset {
    pub fn new(inputs: Tensor, targets: Tensor) -> Result<Self> {
        if inputs.shape().first() != targets.shape().first() || inputs.rank() == 0 {
            return Err(crate::error::LayerError::Data(format!(
                "inputs {:?} and targets {:?} must share their first dimension",
                inputs.shape(),
                targets.shape()
            )));
        }
        Ok(Self {
            inputs: inputs.contiguous()?,
            targets: targets.contiguous()?,
        })
    }
}

/// Rows `indices` of a tensor, stacked.
pub fn gather_rows(t: &Tensor, indices: &[usize]) -> Result<Tensor> {
    let n = t.shape()[0];
    let row: usize = t.shape()[1..].iter().product();
    let data = t.host_data()?;
    let mut out = Vec::with_capacity(indices.len() * row);
    for &i in indices {
        if i >= n {
            return Err(crate::error::LayerError::Data(format!(
                "sample index {i} out of range 0..{n}"
            )));
        }
        out.extend_from_slice(&data[i * row..(i + 1) * row]);
    }
    let mut shape = t.shape().to_vec();
    shape[0] = indices.len();
    Ok(Tensor::from_vec(out, &shape)?)
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.inputs.shape()[0]
    }
    fn batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        Ok((
            gather_rows(&self.inputs, indices)?,
            gather_rows(&self.targets, indices)?,
        ))
    }
}
