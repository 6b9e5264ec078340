//! Labelled image sets for classification, and the train/test split selector.

use magma_tensor::{Tensor, TensorError};

use crate::error::Result;

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training set.
    Train,
    /// The held-out test set.
    Test,
}

/// A classification dataset in memory: images, one class index per image, and class names.
///
/// The loaders of this crate uphold `images.shape() == [labels.len(), C, H, W]` and
/// `labels[i] < class_names.len()`; code that builds or edits the fields by hand must too.
#[derive(Debug, Clone)]
pub struct LabeledImages {
    /// Images `[N, C, H, W]`, `f32` pixel values scaled to `[0, 1]` (byte value / 255).
    pub images: Tensor,
    /// Class index of each image.
    pub labels: Vec<u32>,
    /// Name of each class, indexed by class index.
    pub class_names: Vec<String>,
}

impl LabeledImages {
    /// Builds a set from `u8` pixels (`labels.len() * C * H * W` of them, sample after sample,
    /// each `C x H x W`), scaling every byte `b` to `b / 255`.
    pub(crate) fn from_bytes(
        pixels: &[u8],
        image_shape: [usize; 3],
        labels: Vec<u32>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let data: Vec<f32> = pixels.iter().map(|&b| scale(b)).collect();
        let [c, h, w] = image_shape;
        let images = Tensor::from_vec(data, &[labels.len(), c, h, w])?;
        Ok(Self {
            images,
            labels,
            class_names,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Shape `[C, H, W]` of one image (zeros where the images tensor has fewer dimensions).
    pub fn image_shape(&self) -> [usize; 3] {
        let dim = |i: usize| self.images.shape().get(i).copied().unwrap_or(0);
        [dim(1), dim(2), dim(3)]
    }

    /// A new set holding copies of the samples at `indices`, in that order (repeats allowed).
    ///
    /// Errors ([`TensorError::IndexOutOfBounds`]) when an index is not below [`Self::len`].
    pub fn subset(&self, indices: &[usize]) -> Result<LabeledImages> {
        let images = self.gather_images(indices)?;
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(LabeledImages {
            images,
            labels,
            class_names: self.class_names.clone(),
        })
    }

    /// A mini-batch: images `[B, C, H, W]` and labels `[B]` (class indices as `f32`, which is
    /// what the classification losses take), for the samples at `indices`.
    ///
    /// Errors ([`TensorError::IndexOutOfBounds`]) when an index is not below [`Self::len`].
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let images = self.gather_images(indices)?;
        let labels: Vec<f32> = indices.iter().map(|&i| self.labels[i] as f32).collect();
        let labels = Tensor::from_vec(labels, &[indices.len()])?;
        Ok((images, labels))
    }

    /// Copies the images at `indices` into a new `[B, C, H, W]` tensor.
    fn gather_images(&self, indices: &[usize]) -> Result<Tensor> {
        let n = self.len();
        let (rows, c, h, w) = self.images.dims4("LabeledImages")?;
        if rows != n {
            return Err(TensorError::ShapeMismatch {
                op: "LabeledImages (images and labels disagree on the sample count)",
                lhs: self.images.shape().to_vec(),
                rhs: vec![n],
            }
            .into());
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(TensorError::IndexOutOfBounds {
                index: vec![bad],
                shape: vec![n],
            }
            .into());
        }
        let images = self.images.contiguous()?;
        let src = images.host_data()?;
        let per = c * h * w;
        let mut out = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            out.extend_from_slice(&src[i * per..(i + 1) * per]);
        }
        Ok(Tensor::from_vec(out, &[indices.len(), c, h, w])?)
    }
}

/// A pixel byte scaled to `[0, 1]`.
fn scale(b: u8) -> f32 {
    f32::from(b) / 255.0
}
