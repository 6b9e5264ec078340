//! Bilinear upsampling layer (`align_corners = false`), the parameter-free alternative to a
//! transposed convolution.

use dnn_ops::{Graph, Parameter, Var};

use crate::error::{Result, config_err};
use crate::module::{Mode, Module};

/// Resizes `[N, C, H, W]` by an integer factor with bilinear interpolation.
#[derive(Debug, Clone, Copy)]
pub struct Upsample {
    pub factor: usize,
}

impl Upsample {
    pub fn bilinear(factor: usize) -> Result<Self> {
        if factor == 0 {
            return config_err("Upsample", "factor must be positive");
        }
        Ok(Self { factor })
    }
}

impl Module for Upsample {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        let s = g.shape(x);
        let [_, _, h, w] = s[..] else {
            return config_err("Upsample", format!("needs [N, C, H, W], got {s:?}"));
        };
        Ok(g.upsample_bilinear(x, [h * self.factor, w * self.factor])?)
    }
    fn visit_parameters(&self, _f: &mut dyn FnMut(&Parameter)) {}
    fn visit_parameters_mut(&mut self, _f: &mut dyn FnMut(&mut Parameter)) {}
    fn describe(&self) -> String {
        format!("Upsample(bilinear × {})", self.factor)
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let [n, c, h, w] = *input else { return None };
        Some(vec![n, c, h * self.factor, w * self.factor])
    }
}
