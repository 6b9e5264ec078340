//! Data-parallel training: the [`Communicator`] seam over real collective engines (MPI across
//! processes and hosts, NCCL across GPUs), and [`Local`], the one-process communicator.
//!
//! Every rank runs the same program on its own shard of the data; after each backward pass the
//! gradients are summed across ranks and divided by the number of ranks, so every rank applies
//! the same update and the weights stay identical.

pub mod bootstrap;
pub mod bucket;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;

use dnn_ops::Tensor;

use crate::error::Result;

/// A group of ranks that can sum tensors together. Every rank must make the same calls in the
/// same order with tensors of the same shapes (collective semantics).
pub trait Communicator: Send {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// A short description for logs ("mpi rank 1/4", "nccl rank 0/8").
    fn describe(&self) -> String;
    /// Sums every tensor elementwise across ranks, in place (the result replaces each tensor on
    /// every rank). Tensors may be host or device tensors as the implementation supports.
    fn all_reduce_sum(&mut self, tensors: &mut [&mut Tensor]) -> Result<()>;
    /// Sums host scalars across ranks (loss sums, metric counts), in place.
    fn all_reduce_sum_f64(&mut self, values: &mut [f64]) -> Result<()>;
    /// Replaces every tensor with rank `root`'s copy.
    fn broadcast(&mut self, tensors: &mut [&mut Tensor], root: usize) -> Result<()>;
    /// Waits until every rank reaches this point.
    fn barrier(&mut self) -> Result<()>;
    /// Ends this process after an error, taking the whole job down where the engine can (so no
    /// rank waits forever in a collective). By default the process exits with `code`.
    fn abort(&mut self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The communicator of a single process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Communicator for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn describe(&self) -> String {
        "single process".into()
    }
    fn all_reduce_sum(&mut self, _tensors: &mut [&mut Tensor]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _tensors: &mut [&mut Tensor], _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}
