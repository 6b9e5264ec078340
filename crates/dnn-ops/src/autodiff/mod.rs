//! Reverse-mode automatic differentiation over the backend's ops.
//!
//! A [`Graph`] records every op applied to its [`Var`]s on a tape, in creation order, which is
//! a topological order. [`Graph::backward`] walks the tape once in reverse, calling each op's
//! backward function and summing gradients where a value fans out (skip connections, shared
//! parameters). Parameters enter the graph through [`Graph::param`]; their gradients are
//! collected by [`ParamId`] in [`Gradients`], summed over every use. An inference graph
//! ([`Graph::inference`]) or a [`Graph::no_grad`] scope records no backward function.

mod graph;
pub mod host_profile;
mod ops;
mod parameter;

pub use graph::{Gradients, Graph, NonFiniteValue, Var};
pub use parameter::{ParamId, Parameter};
