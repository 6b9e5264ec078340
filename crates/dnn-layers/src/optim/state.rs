//! Per-parameter optimizer state, keyed by parameter name.

use std::collections::BTreeMap;

use dnn_ops::{Gradients, Parameter, Tensor};

use crate::error::{LayerError, Result};
use crate::module::{Module, try_for_each_parameter_mut};

/// One parameter's tensors, taken out for [`SlotState::step_all`].
#[derive(Debug)]
pub struct SlotUpdate {
    pub param: Tensor,
    pub grad: Tensor,
    /// The optimizer's slots of this parameter, in the order of its slot names.
    pub slots: Vec<Tensor>,
}

/// Named slots (e.g. Adam's `m` and `v`) for every parameter, and the step count.
#[derive(Debug, Clone)]
pub struct SlotState {
    /// Completed update steps.
    pub step: u64,
    slot_names: &'static [&'static str],
    slots: BTreeMap<String, Vec<Tensor>>,
}

impl SlotState {
    pub fn new(slot_names: &'static [&'static str]) -> Self {
        Self {
            step: 0,
            slot_names,
            slots: BTreeMap::new(),
        }
    }

    /// The slots of `param`, created as zeros of `like`'s shape on first use.
    pub fn slots_for(&mut self, param: &str, like: &Tensor) -> &mut Vec<Tensor> {
        let n = self.slot_names.len();
        self.slots
            .entry(param.to_string())
            .or_insert_with(|| (0..n).map(|_| like.zeros_like()).collect())
    }

    /// Counts one step, then calls `update(parameter, gradient, slots)` for every parameter of
    /// `module` that has a gradient in `grads` (the loop every optimizer shares).
    pub fn step_each(
        &mut self,
        module: &mut dyn Module,
        grads: &Gradients,
        mut update: impl FnMut(&mut Parameter, &Tensor, &mut [Tensor]) -> Result<()>,
    ) -> Result<()> {
        self.step += 1;
        try_for_each_parameter_mut(module, |p| {
            let Some(grad) = grads.param(p.id()) else {
                return Ok(());
            };
            let slots = self.slots_for(p.name(), p.value());
            update(p, grad, slots)
        })
    }

    /// Counts one step and hands every parameter of `module` that has a gradient in `grads`,
    /// with its gradient and slots, to one call of `update` (for optimizers that update all
    /// parameters at once); the tensors are taken out of the module and the state for the call
    /// and put back after it, whatever its outcome.
    pub fn step_all(
        &mut self,
        module: &mut dyn Module,
        grads: &Gradients,
        update: impl FnOnce(&mut [SlotUpdate]) -> Result<()>,
    ) -> Result<()> {
        self.step += 1;
        let mut taken = Vec::new();
        let took = try_for_each_parameter_mut(module, |p| {
            let Some(grad) = grads.param(p.id()) else {
                return Ok(());
            };
            let slots = std::mem::take(self.slots_for(p.name(), p.value()));
            if slots.len() != self.slot_names.len() {
                // Taken already: slots are keyed by name, and a name appeared twice.
                return Err(LayerError::Config {
                    layer: "optimizer".into(),
                    reason: format!(
                        "two parameters are named {}; optimizer state needs unique names",
                        p.name()
                    ),
                });
            }
            let param = std::mem::replace(p.value_mut(), Tensor::zeros(&[0]));
            taken.push(SlotUpdate {
                param,
                grad: grad.clone(),
                slots,
            });
            Ok(())
        });
        let outcome = took.and_then(|()| update(&mut taken));
        // Everything taken goes back, in the same order, whatever the outcome (after a failed
        // take, the parameters past it were never taken).
        let mut back = taken.into_iter();
        try_for_each_parameter_mut(module, |p| {
            if grads.param(p.id()).is_none() {
                return Ok(());
            }
            if let Some(t) = back.next() {
                *p.value_mut() = t.param;
                *self.slots_for(p.name(), &t.grad) = t.slots;
            }
            Ok(())
        })?;
        outcome
    }

    /// Every slot tensor as `(param/slot, tensor)`.
    pub fn export(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|(param, tensors)| {
                self.slot_names
                    .iter()
                    .zip(tensors)
                    .map(move |(slot, t)| (format!("{param}/{slot}"), t.clone()))
            })
            .collect()
    }

    /// Restores slots exported by [`SlotState::export`]; `lookup(name)` returns a stored tensor.
    pub fn import(
        &mut self,
        step: u64,
        params: &[(String, Vec<usize>)],
        lookup: impl Fn(&str) -> Option<Tensor>,
    ) -> Result<()> {
        let mut slots = BTreeMap::new();
        for (param, shape) in params {
            let mut tensors = Vec::new();
            for slot in self.slot_names {
                let key = format!("{param}/{slot}");
                match lookup(&key) {
                    Some(t) if t.shape() == shape.as_slice() => tensors.push(t),
                    Some(t) => {
                        return Err(LayerError::Data(format!(
                            "optimizer state {key} has shape {:?}, the parameter {shape:?}",
                            t.shape()
                        )));
                    }
                    None if step == 0 => tensors.push(dnn_ops::Tensor::zeros(shape)),
                    None => {
                        return Err(LayerError::Data(format!(
                            "optimizer state {key} is missing"
                        )));
                    }
                }
            }
            slots.insert(param.clone(), tensors);
        }
        self.step = step;
        self.slots = slots;
        Ok(())
    }
}
