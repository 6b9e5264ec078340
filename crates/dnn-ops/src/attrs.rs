//! Attributes of the operations (strides, paddings, momenta), with their output-size rules.

use crate::error::{OpError, Result};

/// Stride, padding and dilation of a 2-D convolution (PyTorch semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dAttrs {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for Conv2dAttrs {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }
}

impl Conv2dAttrs {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        if self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err(OpError::Attr {
                op,
                reason: format!(
                    "stride {:?} and dilation {:?} must be positive",
                    self.stride, self.dilation
                ),
            });
        }
        Ok(())
    }

    /// Output spatial size for an input of `in_hw` and a kernel of `k_hw`.
    pub fn output_size(&self, in_hw: [usize; 2], k_hw: [usize; 2]) -> Result<[usize; 2]> {
        self.validate("conv2d")?;
        let mut out = [0; 2];
        for i in 0..2 {
            let span = self.dilation[i] * (k_hw[i].max(1) - 1) + 1;
            let padded = in_hw[i] + 2 * self.padding[i];
            if padded < span {
                return Err(OpError::Attr {
                    op: "conv2d",
                    reason: format!(
                        "input {:?} with padding {:?} is smaller than the dilated kernel {:?}",
                        in_hw, self.padding, k_hw
                    ),
                });
            }
            out[i] = (padded - span) / self.stride[i] + 1;
        }
        Ok(out)
    }
}

/// Stride, padding, output padding and dilation of a 2-D transposed convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dAttrs {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for ConvTranspose2dAttrs {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
        }
    }
}

impl ConvTranspose2dAttrs {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    pub fn with_output_padding(mut self, output_padding: [usize; 2]) -> Self {
        self.output_padding = output_padding;
        self
    }
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    /// The convolution whose data gradient this transposed convolution is.
    pub fn as_conv(&self) -> Conv2dAttrs {
        Conv2dAttrs {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        }
    }

    /// Output size: `(in − 1)·stride − 2·padding + dilation·(k − 1) + output_padding + 1`.
    pub fn output_size(&self, in_hw: [usize; 2], k_hw: [usize; 2]) -> Result<[usize; 2]> {
        self.as_conv().validate("conv_transpose2d")?;
        let mut out = [0; 2];
        for i in 0..2 {
            if self.output_padding[i] >= self.stride[i].max(self.dilation[i]) {
                return Err(OpError::Attr {
                    op: "conv_transpose2d",
                    reason: format!(
                        "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                        self.output_padding, self.stride, self.dilation
                    ),
                });
            }
            let full = (in_hw[i].max(1) - 1) * self.stride[i]
                + self.dilation[i] * (k_hw[i].max(1) - 1)
                + self.output_padding[i]
                + 1;
            if full <= 2 * self.padding[i] || in_hw[i] == 0 {
                return Err(OpError::Attr {
                    op: "conv_transpose2d",
                    reason: format!(
                        "padding {:?} leaves no output for input {:?} and kernel {:?}",
                        self.padding, in_hw, k_hw
                    ),
                });
            }
            out[i] = full - 2 * self.padding[i];
        }
        Ok(out)
    }
}

/// Window of a 2-D pooling (PyTorch semantics, floor mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dAttrs {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    /// Average pooling only: whether padded zeros count in the divisor (PyTorch's default: yes).
    pub count_include_pad: bool,
}

impl Pool2dAttrs {
    /// A `k×k` window with stride `k` and no padding (the U-Net's 2×2 pooling for `k = 2`).
    pub fn square(k: usize) -> Self {
        Self {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
            count_include_pad: true,
        }
    }
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    pub fn with_count_include_pad(mut self, yes: bool) -> Self {
        self.count_include_pad = yes;
        self
    }

    /// Output spatial size for an input of `in_hw`.
    pub fn output_size(&self, in_hw: [usize; 2]) -> Result<[usize; 2]> {
        let mut out = [0; 2];
        for i in 0..2 {
            if self.kernel[i] == 0 || self.stride[i] == 0 || 2 * self.padding[i] > self.kernel[i] {
                return Err(OpError::Attr {
                    op: "pool2d",
                    reason: format!(
                        "kernel {:?} and stride {:?} must be positive and padding {:?} at most half the kernel",
                        self.kernel, self.stride, self.padding
                    ),
                });
            }
            let padded = in_hw[i] + 2 * self.padding[i];
            if padded < self.kernel[i] {
                return Err(OpError::Attr {
                    op: "pool2d",
                    reason: format!(
                        "input {:?} is smaller than the kernel {:?}",
                        in_hw, self.kernel
                    ),
                });
            }
            out[i] = (padded - self.kernel[i]) / self.stride[i] + 1;
        }
        Ok(out)
    }
}

/// Momentum and epsilon of batch normalisation (PyTorch defaults 0.1 and 1e-5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormAttrs {
    /// Weight of the new batch statistic in the running average.
    pub momentum: f32,
    pub eps: f32,
}

impl Default for BatchNormAttrs {
    fn default() -> Self {
        Self {
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}

/// Pointwise activation functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { negative_slope: f32 },
    Sigmoid,
    Tanh,
}

/// Hyper-parameters of one Adam / AdamW step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// L2 penalty added to the gradient (Adam) or decoupled decay (AdamW).
    pub weight_decay: f32,
    pub decoupled_weight_decay: bool,
    /// 1-based step count, for bias correction.
    pub step: u64,
}

/// Hyper-parameters of one SGD step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

/// Hyper-parameters of one Adagrad step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradStep {
    pub lr: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// Hyper-parameters of one RMSProp step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropStep {
    pub lr: f32,
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f32,
    pub eps: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// Where the Gaussian of [`GaussianWeights`] is centred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaussianCenter {
    /// The centroid of the ground-truth foreground pixels (image centre when there are none).
    Centroid,
    /// Always the image centre.
    ImageCenter,
}

/// A 2-D-Gaussian pixel-weight map over labels `[N, H, W]`:
/// `w = 1 + α·exp(−((x−μx)² + (y−μy)²) / (2σ²))`, `σ = sigma_scale·min(H, W)`, centred per
/// sample on the centroid of the foreground pixels or on the image centre `((W−1)/2, (H−1)/2)`.
/// A pixel is foreground when its label is a finite value in `[0, 2⁶³)` whose integer part is one
/// of `foreground_classes` and is not `ignore_index`.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianWeights {
    pub alpha: f32,
    pub sigma_scale: f32,
    pub center: GaussianCenter,
    pub foreground_classes: Vec<usize>,
    pub ignore_index: Option<i64>,
}

impl Default for GaussianWeights {
    /// α = 1, s = 0.25, centred on the centroid of class 0.
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

impl GaussianWeights {
    /// Checks `α ≥ 0` and `s > 0` (both finite) and that `labels` is `[N, H, W]`; returns
    /// `(N, H, W)`.
    pub(crate) fn validate(
        &self,
        op: &'static str,
        labels_shape: &[usize],
    ) -> Result<(usize, usize, usize)> {
        let &[n, h, w] = labels_shape else {
            return Err(OpError::Shape {
                op,
                what: "labels",
                got: labels_shape.to_vec(),
                expected: "[N, H, W]".to_string(),
            });
        };
        if self.alpha < 0.0
            || self.sigma_scale <= 0.0
            || !self.alpha.is_finite()
            || !self.sigma_scale.is_finite()
        {
            return Err(OpError::Attr {
                op,
                reason: format!(
                    "Gaussian weights need alpha ≥ 0 and sigma_scale > 0, got α = {}, s = {}",
                    self.alpha, self.sigma_scale
                ),
            });
        }
        Ok((n, h, w))
    }

    /// `1 / (2σ²)` for planes of `h × w`.
    pub(crate) fn inv_two_sigma_sq(&self, h: usize, w: usize) -> f32 {
        let sigma = self.sigma_scale * h.min(w) as f32;
        1.0 / (2.0 * sigma * sigma)
    }

    /// The foreground classes as sorted, distinct `i64` (classes beyond `i64::MAX` can match no
    /// label and are dropped).
    pub(crate) fn sorted_foreground(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .foreground_classes
            .iter()
            .filter_map(|&c| i64::try_from(c).ok())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The integer class of a foreground label (see the type's documentation), else `None`.
    pub(crate) fn foreground_class(&self, label: f32, sorted: &[i64]) -> Option<i64> {
        if !(0.0..9.223_372e18).contains(&label) {
            return None;
        }
        let k = label as i64;
        (self.ignore_index != Some(k) && sorted.binary_search(&k).is_ok()).then_some(k)
    }
}
