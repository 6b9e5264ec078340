//! Named trainable tensors with identities that survive across graphs.

use std::sync::atomic::{AtomicU64, Ordering};

use magma_tensor::Tensor;

use crate::error::{Result, shape_err};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Identity of a parameter, unique within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

/// A trainable tensor with a path-like name (`down1/conv1/weight`).
#[derive(Debug, Clone)]
pub struct Parameter {
    id: ParamId,
    name: String,
    value: Tensor,
}

impl Parameter {
    pub fn new(name: impl Into<String>, value: Tensor) -> Self {
        Self {
            id: ParamId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            name: name.into(),
            value,
        }
    }

    pub fn id(&self) -> ParamId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// Mutable access for optimizers (copy-on-write if a graph still shares the storage).
    pub fn value_mut(&mut self) -> &mut Tensor {
        &mut self.value
    }

    /// Replaces the value; the shape must not change.
    pub fn set(&mut self, value: Tensor) -> Result<()> {
        if value.shape() != self.value.shape() {
            return shape_err(
                "Parameter::set",
                "new value",
                value.shape(),
                format!("{:?} (parameter {})", self.value.shape(), self.name),
            );
        }
        self.value = value;
        Ok(())
    }
}
