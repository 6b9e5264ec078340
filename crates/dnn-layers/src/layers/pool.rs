//! Max and average pooling layers.

use dnn_ops::{Graph, Parameter, Pool2dAttrs, Var};

use crate::error::Result;
use crate::module::{Mode, Module};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

/// A 2-D pooling layer.
#[derive(Debug, Clone)]
pub struct Pool {
    pub kind: PoolKind,
    pub attrs: Pool2dAttrs,
}

impl Pool {
    /// `k×k` max pooling with stride `k`.
    pub fn max(k: usize) -> Self {
        Self {
            kind: PoolKind::Max,
            attrs: Pool2dAttrs::square(k),
        }
    }
    /// `k×k` average pooling with stride `k`.
    pub fn average(k: usize) -> Self {
        Self {
            kind: PoolKind::Average,
            attrs: Pool2dAttrs::square(k),
        }
    }
    pub fn with_attrs(kind: PoolKind, attrs: Pool2dAttrs) -> Self {
        Self { kind, attrs }
    }
}

impl Module for Pool {
    fn forward(&mut self, g: &Graph, x: Var, _mode: Mode) -> Result<Var> {
        Ok(match self.kind {
            PoolKind::Max => g.max_pool2d(x, self.attrs)?,
            PoolKind::Average => g.avg_pool2d(x, self.attrs)?,
        })
    }
    fn visit_parameters(&self, _f: &mut dyn FnMut(&Parameter)) {}
    fn visit_parameters_mut(&mut self, _f: &mut dyn FnMut(&mut Parameter)) {}
    fn describe(&self) -> String {
        format!(
            "{:?}Pool(kernel {:?}, stride {:?}, padding {:?})",
            self.kind, self.attrs.kernel, self.attrs.stride, self.attrs.padding
        )
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let [n, c, h, w] = *input else { return None };
        let [ho, wo] = self.attrs.output_size([h, w]).ok()?;
        Some(vec![n, c, ho, wo])
    }
}
