//! [`MpiCommunicator`]: the [`Communicator`] over MPI (the `mpi` crate, rsmpi, on the system's
//! MPI library, OpenMPI on Debian), for data-parallel training across processes and hosts
//! started by `mpirun`.
//!
//! Tensors are summed with `MPI_Allreduce` on the host, packed into [`Buckets`] (25 MiB by
//! default), so a model's hundred-odd gradients take one or two collective calls. Host tensors
//! are read where they are; device tensors (CUDA backend) are downloaded and the sums come back
//! as host tensors, which the CUDA backend uploads at its next use: correct, but a round trip
//! through the host. On GPUs, NCCL (`distributed::nccl`) is the fast path.
//!
//! MPI is initialised once per process ([`MpiCommunicator::init`]) and finalised when the
//! communicator is dropped. It is initialised with `MPI_THREAD_SERIALIZED`: the communicator
//! may move between threads, and `&mut self` keeps its calls from ever overlapping.

use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};

use super::Communicator;
use super::bucket::{Buckets, DEFAULT_BUCKET_BYTES};
use crate::error::{LayerError, Result};
use dnn_ops::Tensor;

/// Environment variables that MPI launchers set in the processes they start: OpenMPI's
/// `mpirun`, PMIx launchers, MPICH/Intel MPI's Hydra, Slurm's PMI.
const LAUNCHER_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALNRANKS",
];

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun`), judged
/// from the environment the launchers set. Without one, MPI starts a lone "singleton" rank.
pub fn launched_by_mpirun() -> bool {
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

/// This process's rank among the ranks of its host, from the launcher's environment
/// (`OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID`, `SLURM_LOCALID`): the GPU a rank should use
/// when a host runs one rank per GPU. `None` when no launcher said.
pub fn local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// One rank of `MPI_COMM_WORLD`.
pub struct MpiCommunicator {
    /// Finalises MPI when dropped.
    universe: Universe,
    rank: usize,
    size: usize,
    host: String,
    buckets: Buckets,
    collective_calls: u64,
}

impl std::fmt::Debug for MpiCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCommunicator")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("host", &self.host)
            .field("bucket_values", &self.buckets.capacity())
            .finish()
    }
}

impl MpiCommunicator {
    /// Initialises MPI (`MPI_Init_thread`, serialized threading) and joins `MPI_COMM_WORLD`.
    ///
    /// Errors when MPI is already initialised in this process (it can be only once) or the
    /// library offers less than serialized threading. Run under `mpirun -np N`; without a
    /// launcher MPI makes this process a world of one.
    pub fn init() -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                LayerError::Communicator(
                    "MPI is already initialised in this process (MPI can be initialised once \
                     per process)"
                        .into(),
                )
            })?;
        if threading < Threading::Serialized {
            return Err(LayerError::Communicator(format!(
                "the MPI library offers only {threading:?} threading; data-parallel training \
                 needs MPI_THREAD_SERIALIZED"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank(), world.size());
        let (Ok(rank), Ok(size)) = (usize::try_from(rank), usize::try_from(size)) else {
            return Err(LayerError::Communicator(format!(
                "MPI reported rank {rank} of {size}"
            )));
        };
        let host = mpi::environment::processor_name().unwrap_or_else(|_| "?".into());
        Ok(Self {
            universe,
            rank,
            size,
            host,
            buckets: Buckets::with_bytes(DEFAULT_BUCKET_BYTES),
            collective_calls: 0,
        })
    }

    /// Sets the bucket size of [`Communicator::all_reduce_sum`] and [`Communicator::broadcast`]
    /// (default 25 MiB; at most `i32::MAX` values, MPI's count type).
    pub fn set_bucket_bytes(&mut self, bytes: usize) {
        let max = i32::MAX as usize * size_of::<f32>();
        self.buckets = Buckets::with_bytes(bytes.min(max));
    }

    /// Capacity of one bucket, in `f32` values.
    pub fn bucket_values(&self) -> usize {
        self.buckets.capacity()
    }

    /// The host this rank runs on (`MPI_Get_processor_name`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Number of MPI collective calls made on tensors so far (one per bucket).
    pub fn collective_calls(&self) -> u64 {
        self.collective_calls
    }

    /// Ends every rank of the job (`MPI_Abort`). A rank that fails alone must call this rather
    /// than return: its peers would otherwise wait forever in their next collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world().abort(code)
    }

    fn world(&self) -> SimpleCommunicator {
        self.universe.world()
    }

    /// Errors unless every rank passes the same `count`.
    fn check_same_count(&self, what: &str, count: usize) -> Result<()> {
        let world = self.world();
        let send = [count as u64, u64::MAX - count as u64];
        let mut max = [0u64; 2];
        world.all_reduce_into(&send[..], &mut max[..], SystemOperation::max());
        let (largest, smallest) = (max[0], u64::MAX - max[1]);
        if largest != smallest {
            return Err(LayerError::Communicator(format!(
                "{}: the ranks disagree on {what}: between {smallest} and {largest} (rank {} has \
                 {count}); every rank must build the same model",
                self.describe(),
                self.rank
            )));
        }
        Ok(())
    }
}

impl Communicator for MpiCommunicator {
    fn abort(&mut self, code: i32) -> ! {
        self.world().abort(code)
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn describe(&self) -> String {
        format!("mpi rank {}/{} on {}", self.rank, self.size, self.host)
    }

    fn all_reduce_sum(&mut self, tensors: &mut [&mut Tensor]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let world = self.world();
        let calls = self.buckets.run(tensors, &mut |send, recv| {
            world.all_reduce_into(send, recv, SystemOperation::sum());
            Ok(())
        })?;
        self.collective_calls += calls as u64;
        Ok(())
    }

    fn all_reduce_sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
        if self.size == 1 || values.is_empty() {
            return Ok(());
        }
        let send = values.to_vec();
        self.world()
            .all_reduce_into(&send[..], values, SystemOperation::sum());
        Ok(())
    }

    fn broadcast(&mut self, tensors: &mut [&mut Tensor], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(LayerError::Communicator(format!(
                "broadcast from rank {root} in a world of {} ranks",
                self.size
            )));
        }
        if self.size == 1 {
            return Ok(());
        }
        // A broadcast happens once per run (initial weights): cheap enough to check that every
        // rank brings the same number of values, which a model mismatch would break.
        self.check_same_count("the number of tensors", tensors.len())?;
        let values = tensors.iter().map(|t| t.numel()).sum();
        self.check_same_count("the number of values", values)?;
        let world = self.world();
        let root = world.process_at_rank(root as i32);
        let calls = self.buckets.run(tensors, &mut |send, recv| {
            recv.copy_from_slice(send);
            root.broadcast_into(recv);
            Ok(())
        })?;
        self.collective_calls += calls as u64;
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        self.world().barrier();
        Ok(())
    }
}
