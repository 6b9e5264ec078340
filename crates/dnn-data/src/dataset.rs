//! Readers' outputs as `dnn_layers::Dataset`s, so `Model::fit` trains on them directly.

use dnn_layers::{Dataset, LayerError};
use magma_tensor::Tensor;

use crate::classification::LabeledImages;

impl Dataset for LabeledImages {
    fn len(&self) -> usize {
        LabeledImages::len(self)
    }

    fn batch(&self, indices: &[usize]) -> dnn_layers::Result<(Tensor, Tensor)> {
        LabeledImages::batch(self, indices).map_err(|e| LayerError::Data(e.to_string()))
    }
}
