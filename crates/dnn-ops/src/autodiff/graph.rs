//! The tape, variables and the reverse pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Instant;

use magma_tensor::Tensor;

use super::host_profile;
use super::parameter::{ParamId, Parameter};
use crate::backend::Backend;
use crate::error::{OpError, Result};

/// A value on a graph's tape (a cheap index; only valid with the graph that made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

/// Computes the gradients of an op's inputs from the gradient of its output.
pub(crate) type BackwardFn = Box<dyn Fn(&dyn Backend, &Tensor) -> Result<Vec<Option<Tensor>>>>;

struct Node {
    op: &'static str,
    /// `None` once [`Graph::forget`] released it.
    value: Option<Tensor>,
    shape: Vec<usize>,
    inputs: Vec<usize>,
    backward: Option<BackwardFn>,
    requires_grad: bool,
    param: Option<ParamId>,
}

/// A tape of ops over one backend.
pub struct Graph<'b> {
    backend: &'b dyn Backend,
    nodes: RefCell<Vec<Node>>,
    recording: Cell<bool>,
    /// When the previous op was recorded (host profiling only).
    lap: Cell<Option<Instant>>,
    /// Whether a reverse pass ran (it consumes the backward functions).
    backward_done: Cell<bool>,
}

impl std::fmt::Debug for Graph<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("backend", &self.backend.name())
            .field("nodes", &self.nodes.borrow().len())
            .field("recording", &self.recording.get())
            .finish()
    }
}

/// Where [`Graph::first_non_finite`] found the first NaN or ±Inf.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFiniteValue {
    /// Position on the tape (0 = the first value recorded).
    pub index: usize,
    /// Number of values on the tape.
    pub nodes: usize,
    /// The op that produced it (`param` when a parameter itself holds it, `input` for data).
    pub op: &'static str,
    pub shape: Vec<usize>,
    /// The parameters of the layer it came from: those the op read directly (or the parameter
    /// itself), else those of the latest op before it that read any; empty before the first.
    pub params: Vec<ParamId>,
}

/// Gradients from one reverse pass: per parameter (summed over uses) and per leaf variable.
#[derive(Debug, Default)]
pub struct Gradients {
    by_param: HashMap<ParamId, Tensor>,
    by_leaf: HashMap<usize, Tensor>,
}

impl Gradients {
    /// Gradient of a parameter, if it took part in the loss.
    pub fn param(&self, id: ParamId) -> Option<&Tensor> {
        self.by_param.get(&id)
    }

    /// Gradient of a leaf created with [`Graph::leaf`] or [`Graph::param`].
    pub fn wrt(&self, var: Var) -> Option<&Tensor> {
        self.by_leaf.get(&var.0)
    }

    /// Every parameter gradient.
    pub fn params(&self) -> impl Iterator<Item = (&ParamId, &Tensor)> {
        self.by_param.iter()
    }

    /// Puts a parameter's gradient (back) in, replacing any it had; data-parallel training
    /// takes the gradients out, sums them across ranks and puts the sums back.
    pub fn insert_param(&mut self, id: ParamId, grad: Tensor) -> Option<Tensor> {
        self.by_param.insert(id, grad)
    }

    /// Takes the gradient of a parameter out.
    pub fn take_param(&mut self, id: ParamId) -> Option<Tensor> {
        self.by_param.remove(&id)
    }
}

impl<'b> Graph<'b> {
    /// A graph that records backward functions (training).
    pub fn new(backend: &'b dyn Backend) -> Self {
        Self {
            backend,
            nodes: RefCell::new(Vec::new()),
            recording: Cell::new(true),
            lap: Cell::new(host_profile::enabled().then(Instant::now)),
            backward_done: Cell::new(false),
        }
    }

    /// A graph that records nothing for the reverse pass (inference).
    pub fn inference(backend: &'b dyn Backend) -> Self {
        let g = Self::new(backend);
        g.recording.set(false);
        g
    }

    pub fn backend(&self) -> &'b dyn Backend {
        self.backend
    }

    /// Whether backward functions are being recorded.
    pub fn is_recording(&self) -> bool {
        self.recording.get()
    }

    /// Runs `f` without recording backward functions.
    pub fn no_grad<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
        let before = self.recording.replace(false);
        let out = f(self);
        self.recording.set(before);
        out
    }

    /// Number of values on the tape.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, node: Node) -> Var {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(node);
        Var(nodes.len() - 1)
    }

    /// Whether a gradient flows to `v` (a backward function may skip the gradients of inputs
    /// that need none, e.g. the data gradient of a network's first convolution).
    pub(crate) fn needs_grad(&self, v: Var) -> bool {
        self.is_recording() && self.nodes.borrow()[v.0].requires_grad
    }

    /// A constant input (no gradient).
    pub fn input(&self, value: Tensor) -> Var {
        self.push(Node {
            op: "input",
            shape: value.shape().to_vec(),
            value: Some(value),
            inputs: vec![],
            backward: None,
            requires_grad: false,
            param: None,
        })
    }

    /// A leaf whose gradient [`Gradients::wrt`] reports.
    pub fn leaf(&self, value: Tensor) -> Var {
        let requires_grad = self.is_recording();
        self.push(Node {
            op: "leaf",
            shape: value.shape().to_vec(),
            value: Some(value),
            inputs: vec![],
            backward: None,
            requires_grad,
            param: None,
        })
    }

    /// A parameter; using the same parameter twice sums its gradients.
    pub fn param(&self, p: &Parameter) -> Var {
        let requires_grad = self.is_recording();
        self.push(Node {
            op: "param",
            shape: p.value().shape().to_vec(),
            value: Some(p.value().clone()),
            inputs: vec![],
            backward: None,
            requires_grad,
            param: Some(p.id()),
        })
    }

    /// The value of a variable (a cheap clone).
    ///
    /// # Panics
    /// When [`Graph::forget`] or the reverse pass ([`Graph::backward_with`]) released it (a
    /// programming error, like a variable of another graph).
    pub fn value(&self, v: Var) -> Tensor {
        let nodes = self.nodes.borrow();
        let node = &nodes[v.0];
        node.value.clone().unwrap_or_else(|| {
            panic!(
                "the value of {} (variable {}) was released (Graph::forget or the reverse pass)",
                node.op, v.0
            )
        })
    }

    /// The shape of a variable (also of a forgotten one).
    pub fn shape(&self, v: Var) -> Vec<usize> {
        self.nodes.borrow()[v.0].shape.clone()
    }

    /// Releases the tape's own reference to `v`'s value, for an intermediate result nothing
    /// will read again (the backward functions keep what they need), so its memory is freed as
    /// soon as the ops that consumed it are done — what dropping the last reference to a tensor
    /// does in PyTorch. Afterwards [`Graph::value`] of `v` panics and
    /// [`Graph::first_non_finite`] skips it; its gradient still flows.
    pub fn forget(&self, v: Var) {
        self.nodes.borrow_mut()[v.0].value = None;
    }

    /// Which op produced a variable (for messages).
    pub fn op_name(&self, v: Var) -> &'static str {
        self.nodes.borrow()[v.0].op
    }

    /// The first value on the tape, in the order it was computed, holding NaN or ±Inf (for
    /// diagnosing a non-finite loss: reads every value back, so only after something failed).
    pub fn first_non_finite(&self) -> Result<Option<NonFiniteValue>> {
        let nodes = self.nodes.borrow();
        // The parameters read by the latest op that read any, up to the current node.
        let mut layer_params: Vec<ParamId> = Vec::new();
        for (index, node) in nodes.iter().enumerate() {
            let direct: Vec<ParamId> = node
                .param
                .into_iter()
                .chain(node.inputs.iter().filter_map(|&i| nodes[i].param))
                .collect();
            if !direct.is_empty() && node.param.is_none() {
                layer_params = direct.clone();
            }
            let Some(value) = &node.value else {
                continue;
            };
            if value.has_non_finite()? {
                return Ok(Some(NonFiniteValue {
                    index,
                    nodes: nodes.len(),
                    op: node.op,
                    shape: node.shape.clone(),
                    params: if direct.is_empty() {
                        layer_params
                    } else {
                        direct
                    },
                }));
            }
        }
        Ok(None)
    }

    /// Records an op's output. `backward` returns one gradient per input (or `None`).
    pub(crate) fn record(
        &self,
        op: &'static str,
        value: Tensor,
        inputs: &[Var],
        backward: impl Fn(&dyn Backend, &Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
    ) -> Var {
        if let Some(since) = self.lap.get() {
            host_profile::add(op, "forward", since);
            self.lap.set(Some(Instant::now()));
        }
        let requires_grad = self.is_recording() && {
            let nodes = self.nodes.borrow();
            inputs.iter().any(|v| nodes[v.0].requires_grad)
        };
        self.push(Node {
            op,
            shape: value.shape().to_vec(),
            value: Some(value),
            inputs: inputs.iter().map(|v| v.0).collect(),
            backward: requires_grad.then(|| Box::new(backward) as BackwardFn),
            requires_grad,
            param: None,
        })
    }

    /// Gradients of a scalar `loss` with respect to every leaf and parameter.
    pub fn backward(&self, loss: Var) -> Result<Gradients> {
        let value = self.value(loss);
        if value.numel() != 1 {
            return Err(OpError::Graph(format!(
                "backward needs a scalar loss, got shape {:?} (use backward_with to seed a gradient)",
                value.shape()
            )));
        }
        let seed = self.backend.full(value.shape(), 1.0)?;
        self.backward_with(loss, seed)
    }

    /// Gradients of `Σ output · seed` (a vector-Jacobian product).
    ///
    /// Each op's backward function, with the values it saved, is dropped as soon as it has run,
    /// and so is the op's output on the tape (every op that read it is done by then), so the
    /// memory of the forward pass is given back during the reverse pass, as PyTorch does
    /// without `retain_graph`. Afterwards [`Graph::value`] of such an intermediate value
    /// panics (take a clone before the pass to keep one); leaves, inputs, parameters and
    /// `output` stay, and a second reverse pass over the same graph is an error.
    pub fn backward_with(&self, output: Var, seed: Tensor) -> Result<Gradients> {
        if self.backward_done.get() {
            return Err(OpError::Graph(
                "backward already ran (or failed part way) on this graph, releasing the values saved for it; record the ops on a new graph".to_string(),
            ));
        }
        let mut nodes = self.nodes.borrow_mut();
        let out = &nodes[output.0];
        if seed.shape() != out.shape.as_slice() {
            return Err(OpError::Graph(format!(
                "seed gradient {:?} does not match the output {:?}",
                seed.shape(),
                out.shape
            )));
        }
        if !out.requires_grad {
            return Err(OpError::Graph(
                "the output does not depend on any leaf or parameter that requires a gradient (was it built under no_grad?)".to_string(),
            ));
        }
        self.backward_done.set(true);
        let mut grads: Vec<Option<Tensor>> = vec![None; output.0 + 1];
        grads[output.0] = Some(seed);
        let mut result = Gradients::default();
        for i in (0..=output.0).rev() {
            let Some(grad) = grads[i].take() else {
                continue;
            };
            let backward = nodes[i].backward.take();
            let node = &nodes[i];
            match backward {
                Some(backward) => {
                    let started = self.lap.get().map(|_| Instant::now());
                    let input_grads = backward(self.backend, &grad)?;
                    // The values this op saved for its backward go now, and so does its output
                    // (every op that read it has had its backward pass), unless it is the
                    // output the pass started from.
                    drop(backward);
                    if i != output.0 {
                        nodes[i].value = None;
                    }
                    let node = &nodes[i];
                    for (&input, g) in node.inputs.iter().zip(input_grads) {
                        let Some(g) = g else { continue };
                        if !nodes[input].requires_grad {
                            continue;
                        }
                        if g.shape() != nodes[input].shape.as_slice() {
                            return Err(OpError::Graph(format!(
                                "backward of {} produced a gradient of shape {:?} for an input of shape {:?}",
                                node.op,
                                g.shape(),
                                nodes[input].shape
                            )));
                        }
                        grads[input] = Some(match grads[input].take() {
                            Some(mut acc) => {
                                self.backend.add_assign(&mut acc, &g)?;
                                acc
                            }
                            None => g,
                        });
                    }
                    if let Some(started) = started {
                        host_profile::add(node.op, "backward", started);
                    }
                }
                None if node.requires_grad => {
                    if let Some(id) = node.param {
                        let merged = match result.by_param.remove(&id) {
                            Some(acc) => self.backend.add(&acc, &grad)?,
                            None => grad.clone(),
                        };
                        result.by_param.insert(id, merged);
                    }
                    result.by_leaf.insert(i, grad);
                }
                None => {}
            }
        }
        Ok(result)
    }
}
