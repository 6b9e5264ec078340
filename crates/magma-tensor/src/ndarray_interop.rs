//! Zero-copy views between host tensors and `ndarray`.

use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

use crate::{Result, Tensor, TensorError};

impl Tensor {
    /// A borrowed `ndarray` view of a host tensor with the tensor's own strides (no copy).
    pub fn as_array_view(&self) -> Result<ArrayViewD<'_, f32>> {
        let data = self.storage().host("as_array_view")?;
        let shape = IxDyn(self.shape()).strides(IxDyn(self.strides()));
        ArrayViewD::from_shape(shape, &data[self.offset()..])
            .map_err(|e| TensorError::Ndarray(e.to_string()))
    }

    /// Takes ownership of an `ndarray` array; no copy when it is in standard (row-major) layout.
    pub fn from_array(array: ArrayD<f32>) -> Result<Tensor> {
        let shape = array.shape().to_vec();
        let standard = if array.is_standard_layout() {
            array
        } else {
            array.as_standard_layout().into_owned()
        };
        let (data, offset) = standard.into_raw_vec_and_offset();
        match offset {
            Some(0) | None => Tensor::from_vec(data, &shape),
            Some(off) => Tensor::from_vec(data[off..].to_vec(), &shape),
        }
    }

    /// An owned `ndarray` copy in standard layout.
    pub fn to_array(&self) -> Result<ArrayD<f32>> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec()?)
            .map_err(|e| TensorError::Ndarray(e.to_string()))
    }
}
