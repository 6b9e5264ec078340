//! [`NcclCommunicator`]: gradients summed on the GPUs by NCCL, one process per GPU (feature
//! `nccl`).
//!
//! Every process drives one GPU through its `CudaBackend` and joins one NCCL communicator of
//! `size` ranks. To create it, all ranks need the same [`NcclUniqueId`], made by rank 0: it is
//! handed over by [`NcclCommunicator::with_file_bootstrap`] (rank 0 writes it into a shared
//! folder, the others read it; see [`FileBootstrap`]) or by any other channel through
//! [`NcclCommunicator::new`] (e.g. an MPI broadcast of [`NcclUniqueId::to_bytes`]). After that
//! NCCL talks over NVLink, PCIe, shared memory, InfiniBand or TCP as it finds them.
//!
//! Collectives are queued on the backend's stream, the one every op of the backend runs on, so
//! they are ordered after the backward pass that produced the gradients and before the optimizer
//! step that reads them, without host synchronisation. All tensors of one
//! [`all_reduce_sum`](Communicator::all_reduce_sum) go into one NCCL group
//! (`ncclGroupStart`/`ncclGroupEnd`), which NCCL launches as one fused operation.
//!
//! NVLink multicast (NVLS) is switched off: before NCCL is first used in the process,
//! `NCCL_NVLS_ENABLE=0` is put in the environment unless it is already set. On the multi-GPU
//! machines this project runs on, NVLS must stay off (their fabric set-up does not support it;
//! NCCL would otherwise try it on NVSwitch systems). Launchers should export it too (the GPU
//! bundle's `run.sh` does), since changing the environment of a running process is only safe
//! before other threads read it.
//!
//! ```no_run
//! # fn main() -> dnn_layers::Result<()> {
//! use dnn_layers::distributed::bootstrap::{FileBootstrap, Launch};
//! use dnn_layers::distributed::nccl::NcclCommunicator;
//! use dnn_layers::distributed::Communicator;
//!
//! let launch = Launch::from_env()?.expect("started by mpirun, srun or torchrun");
//! let backend = dnn_ops::CudaBackend::new(launch.local_rank)?;
//! let bootstrap = FileBootstrap::new("/shared/run/bootstrap", &launch.job_name("nccl"))?;
//! let mut comm =
//!     NcclCommunicator::with_file_bootstrap(&backend, launch.rank, launch.world_size, &bootstrap)?;
//! println!("{}", comm.describe());
//! # let mut grads: Vec<dnn_ops::Tensor> = Vec::new();
//! let mut refs: Vec<&mut dnn_ops::Tensor> = grads.iter_mut().collect();
//! comm.all_reduce_sum(&mut refs)?;
//! # Ok(()) }
//! ```

use std::ffi::{CStr, c_void};
use std::sync::{Arc, Once};

use dnn_ops::{CudaBackend, Tensor};
use magma_tensor::cuda::{CudaBuffer, CudaDevice};
use magma_tensor::{Storage, TensorError};
use nccl_sys::{NcclLibrary, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclResult_t};

use super::Communicator;
use super::bootstrap::FileBootstrap;
use crate::error::{LayerError, Result};

/// The variable that switches NVLink multicast (NVLS) off; see the module documentation.
pub const NVLS_VARIABLE: &str = "NCCL_NVLS_ENABLE";

static ENVIRONMENT: Once = Once::new();

/// Puts `NCCL_NVLS_ENABLE=0` in the environment unless it is set (once per process).
fn prepare_environment() {
    ENVIRONMENT.call_once(|| {
        if std::env::var_os(NVLS_VARIABLE).is_none() {
            // SAFETY: std's own environment accesses are serialised by its lock, so the hazard
            // is a concurrent `getenv` from C code. This runs before NCCL is loaded or
            // initialised in this process (every entry point of this module calls it first,
            // once), so no NCCL thread exists yet; the project's own threads (rayon pools, the
            // progress bar) read the environment only through std.
            unsafe { std::env::set_var(NVLS_VARIABLE, "0") };
        }
    });
}

/// The NCCL library (with the environment prepared), or a clear error.
fn nccl() -> Result<&'static NcclLibrary> {
    prepare_environment();
    nccl_sys::library().map_err(LayerError::Communicator)
}

/// The loaded NCCL's version (`"2.28.9"`).
pub fn version() -> Result<String> {
    let lib = nccl()?;
    let mut code = 0;
    // SAFETY: `code` is a valid out-pointer for the duration of the call.
    let status = unsafe { lib.ncclGetVersion(&mut code) };
    check(lib, "ncclGetVersion", status, None)?;
    Ok(nccl_sys::version_string(code))
}

/// The name of a status code.
fn status_name(status: ncclResult_t) -> String {
    match status {
        ncclResult_t::ncclSuccess => "ncclSuccess".into(),
        ncclResult_t::ncclUnhandledCudaError => "ncclUnhandledCudaError".into(),
        ncclResult_t::ncclSystemError => "ncclSystemError".into(),
        ncclResult_t::ncclInternalError => "ncclInternalError".into(),
        ncclResult_t::ncclInvalidArgument => "ncclInvalidArgument".into(),
        ncclResult_t::ncclInvalidUsage => "ncclInvalidUsage".into(),
        ncclResult_t::ncclRemoteError => "ncclRemoteError".into(),
        ncclResult_t::ncclInProgress => "ncclInProgress".into(),
        other => format!("ncclResult_t({})", other.0),
    }
}

/// NCCL's text for a status.
fn status_text(lib: &NcclLibrary, status: ncclResult_t) -> String {
    // SAFETY: ncclGetErrorString accepts any value and returns a static NUL-terminated string
    // (or null, checked).
    let text = unsafe { lib.ncclGetErrorString(status) };
    if text.is_null() {
        return "no description".into();
    }
    // SAFETY: non-null, NUL-terminated, static storage (see above).
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// The communicator's asynchronous error, if it has one (`ncclInProgress` is not an error).
fn async_error(lib: &NcclLibrary, comm: ncclComm_t) -> Option<ncclResult_t> {
    if comm.is_null() {
        return None;
    }
    let mut status = ncclResult_t::ncclSuccess;
    // SAFETY: `comm` is a live communicator (callers own it) and `status` a valid out-pointer.
    let queried = unsafe { lib.ncclCommGetAsyncError(comm, &mut status) };
    if queried != ncclResult_t::ncclSuccess {
        return Some(queried);
    }
    (status != ncclResult_t::ncclSuccess && status != ncclResult_t::ncclInProgress)
        .then_some(status)
}

/// The typed error of a failed call, with NCCL's last message and the communicator's
/// asynchronous error when there are any.
fn nccl_error(
    lib: &NcclLibrary,
    call: &'static str,
    status: ncclResult_t,
    comm: Option<ncclComm_t>,
) -> LayerError {
    let comm = comm.unwrap_or(std::ptr::null_mut());
    let mut detail = String::new();
    // SAFETY: ncclGetLastError takes a communicator or null and returns a NUL-terminated string
    // owned by NCCL (or null, checked), which is copied at once.
    let last = unsafe { lib.ncclGetLastError(comm) };
    if !last.is_null() {
        // SAFETY: non-null and NUL-terminated (see above).
        let last = unsafe { CStr::from_ptr(last) }.to_string_lossy();
        if !last.trim().is_empty() {
            detail.push_str("; ");
            detail.push_str(last.trim());
        }
    }
    if let Some(e) = async_error(lib, comm) {
        detail.push_str(&format!(
            "; communicator's asynchronous error: {} ({})",
            status_name(e),
            status_text(lib, e)
        ));
    }
    LayerError::Nccl {
        call,
        status: status_name(status),
        message: status_text(lib, status),
        detail,
    }
}

fn check(
    lib: &NcclLibrary,
    call: &'static str,
    status: ncclResult_t,
    comm: Option<ncclComm_t>,
) -> Result<()> {
    if status == ncclResult_t::ncclSuccess {
        Ok(())
    } else {
        Err(nccl_error(lib, call, status, comm))
    }
}

/// The 128 opaque bytes that let the ranks of one communicator find each other, made by rank 0.
#[derive(Clone, Copy)]
pub struct NcclUniqueId(nccl_sys::ncclUniqueId);

impl std::fmt::Debug for NcclUniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NcclUniqueId(..)")
    }
}

impl NcclUniqueId {
    /// A fresh id (`ncclGetUniqueId`): rank 0 makes it and must stay alive until every rank has
    /// joined (the id names a socket that rank 0's NCCL listens on).
    pub fn new() -> Result<Self> {
        let lib = nccl()?;
        let mut id = nccl_sys::ncclUniqueId::default();
        // SAFETY: `id` is a valid out-pointer to an ncclUniqueId for the duration of the call.
        let status = unsafe { lib.ncclGetUniqueId(&mut id) };
        check(lib, "ncclGetUniqueId", status, None)?;
        Ok(Self(id))
    }

    /// Its bytes, to send to the other ranks.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.internal.iter().map(|&c| c as u8).collect()
    }

    /// The id from the bytes that rank 0 sent.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut id = nccl_sys::ncclUniqueId::default();
        if bytes.len() != id.internal.len() {
            return Err(LayerError::Communicator(format!(
                "an NCCL unique id has {} bytes, got {}",
                id.internal.len(),
                bytes.len()
            )));
        }
        for (dst, &src) in id.internal.iter_mut().zip(bytes) {
            *dst = src as std::ffi::c_char;
        }
        Ok(Self(id))
    }
}

/// One rank of an NCCL communicator, on the GPU of a [`CudaBackend`].
pub struct NcclCommunicator {
    lib: &'static NcclLibrary,
    comm: ncclComm_t,
    device: Arc<CudaDevice>,
    rank: usize,
    size: usize,
    /// A small device buffer for host scalars and the barrier, grown as needed.
    scratch: Option<CudaBuffer>,
    /// Set after a failed call: the communicator is aborted rather than destroyed on drop.
    broken: bool,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent, which `&mut self` on every operation guarantees; the device handle is Send + Sync,
// and every operation makes the device's context current on the calling thread first.
unsafe impl Send for NcclCommunicator {}

impl std::fmt::Debug for NcclCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclCommunicator")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("device", &self.device.ordinal())
            .finish()
    }
}

/// How a tensor given to a collective is handled: its device address and length, and whether
/// it was a host tensor to be copied back.
struct Staged {
    ptr: u64,
    len: usize,
    to_host: bool,
}

impl NcclCommunicator {
    /// Rank `rank` of a communicator of `size` ranks, all created with the same `id` (made by
    /// rank 0 with [`NcclUniqueId::new`]). Blocks until every rank has called it: one process
    /// per GPU, or one thread per GPU.
    pub fn new(backend: &CudaBackend, rank: usize, size: usize, id: &NcclUniqueId) -> Result<Self> {
        if size == 0 || rank >= size || i32::try_from(size).is_err() {
            return Err(LayerError::Communicator(format!(
                "rank {rank} is not a rank of a communicator of {size}"
            )));
        }
        let lib = nccl()?;
        let device = backend.device().clone();
        device.bind()?;
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; `id` is an ncclUniqueId passed by value; the
        // device's context is current on this thread, so NCCL binds the communicator to it.
        let status = unsafe { lib.ncclCommInitRank(&mut comm, size as i32, id.0, rank as i32) };
        check(lib, "ncclCommInitRank", status, None)?;
        let mut communicator = Self {
            lib,
            comm,
            device,
            rank,
            size,
            scratch: None,
            broken: false,
        };
        let mut ordinal = -1;
        // SAFETY: `comm` is live and `ordinal` a valid out-pointer.
        let status = unsafe { lib.ncclCommCuDevice(comm, &mut ordinal) };
        communicator.check("ncclCommCuDevice", status)?;
        if usize::try_from(ordinal).ok() != Some(communicator.device.ordinal()) {
            communicator.broken = true;
            return Err(LayerError::Communicator(format!(
                "NCCL bound the communicator to GPU {ordinal}, the backend runs on GPU {}",
                communicator.device.ordinal()
            )));
        }
        Ok(communicator)
    }

    /// A communicator of one rank on the backend's GPU: every collective is the identity, but
    /// runs through NCCL (for tests and single-GPU runs of a distributed program).
    pub fn new_single(backend: &CudaBackend) -> Result<Self> {
        let id = NcclUniqueId::new()?;
        Self::new(backend, 0, 1, &id)
    }

    /// Rank `rank` of `size`, exchanging the unique id through `bootstrap`: rank 0 makes it and
    /// publishes it, the others wait for it; once all have joined, rank 0 removes the file.
    pub fn with_file_bootstrap(
        backend: &CudaBackend,
        rank: usize,
        size: usize,
        bootstrap: &FileBootstrap,
    ) -> Result<Self> {
        if size == 0 || rank >= size {
            return Err(LayerError::Communicator(format!(
                "rank {rank} is not a rank of a communicator of {size}"
            )));
        }
        let id = if rank == 0 {
            let id = NcclUniqueId::new()?;
            bootstrap.publish(size, &id.to_bytes())?;
            id
        } else {
            NcclUniqueId::from_bytes(&bootstrap.wait(size)?)?
        };
        let created = Self::new(backend, rank, size, &id);
        if rank == 0 {
            // Every rank has joined (ncclCommInitRank returns when all have) or this launch has
            // failed: either way the id must not be read by a later launch.
            bootstrap.remove()?;
        }
        created
    }

    /// The GPU this rank runs on.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    fn stream(&self) -> nccl_sys::cudaStream_t {
        self.device.stream_handle() as nccl_sys::cudaStream_t
    }

    /// Checks a status of a call on this communicator; a failure marks it broken.
    fn check(&mut self, call: &'static str, status: ncclResult_t) -> Result<()> {
        if status == ncclResult_t::ncclSuccess {
            return Ok(());
        }
        self.broken = true;
        Err(nccl_error(self.lib, call, status, Some(self.comm)))
    }

    /// Waits for the stream; a failure there may come from an NCCL kernel, so the communicator's
    /// asynchronous error is reported when it has one.
    fn synchronize(&mut self, after: &'static str) -> Result<()> {
        match self.device.synchronize() {
            Ok(()) => match async_error(self.lib, self.comm) {
                None => Ok(()),
                Some(e) => {
                    self.broken = true;
                    Err(nccl_error(self.lib, after, e, Some(self.comm)))
                }
            },
            Err(cuda) => {
                if let Some(e) = async_error(self.lib, self.comm) {
                    self.broken = true;
                    let mut err = nccl_error(self.lib, after, e, Some(self.comm));
                    if let LayerError::Nccl { detail, .. } = &mut err {
                        detail.push_str(&format!("; the stream reported: {cuda}"));
                    }
                    return Err(err);
                }
                Err(cuda.into())
            }
        }
    }

    /// Makes `tensor` a whole contiguous tensor on this GPU owned alone, and says where it is.
    /// Host tensors are uploaded (and copied back after the collective); device tensors of this
    /// GPU are used in place (copied first when their storage is shared or they are views);
    /// managed tensors and tensors of other GPUs are replaced by a copy on this GPU.
    fn stage(&self, tensor: &mut Tensor) -> Result<Staged> {
        let to_host = matches!(tensor.storage(), Storage::Host(_));
        let ours =
            matches!(tensor.storage(), Storage::Device(b) if b.ordinal() == self.device.ordinal());
        let whole = tensor.is_contiguous()
            && tensor.offset() == 0
            && tensor.storage().len() == tensor.numel();
        if !(ours && whole) {
            let source = if ours {
                // A view of a device tensor: through the host, since `upload` would return it as
                // it is when it is contiguous.
                Tensor::from_vec(tensor.to_vec()?, tensor.shape())?
            } else {
                tensor.clone()
            };
            *tensor = self.device.upload(&source)?;
        }
        let ptr = tensor.device_ptr_mut()?;
        Ok(Staged {
            ptr,
            len: tensor.numel(),
            to_host,
        })
    }

    /// Runs `op` on every non-empty tensor inside one NCCL group, then copies host tensors back.
    fn grouped(
        &mut self,
        tensors: &mut [&mut Tensor],
        call: &'static str,
        op: impl Fn(
            &NcclLibrary,
            *mut c_void,
            usize,
            ncclComm_t,
            nccl_sys::cudaStream_t,
        ) -> ncclResult_t,
    ) -> Result<()> {
        self.device.bind()?;
        let mut staged = Vec::with_capacity(tensors.len());
        for t in tensors.iter_mut() {
            if t.numel() > 0 {
                staged.push(self.stage(t)?);
            } else {
                staged.push(Staged {
                    ptr: 0,
                    len: 0,
                    to_host: false,
                });
            }
        }
        if staged.iter().all(|s| s.len == 0) {
            return Ok(());
        }
        let (lib, comm, stream) = (self.lib, self.comm, self.stream());
        // SAFETY: opens a group on this thread; closed below on every path.
        let status = unsafe { lib.ncclGroupStart() };
        self.check("ncclGroupStart", status)?;
        let mut first_error = Ok(());
        for s in staged.iter().filter(|s| s.len > 0) {
            let status = op(lib, s.ptr as usize as *mut c_void, s.len, comm, stream);
            if status != ncclResult_t::ncclSuccess {
                first_error = self.check(call, status);
                break;
            }
        }
        // SAFETY: closes the group opened above (also after a failed call, which NCCL requires
        // so that the thread's group state is reset); launches the queued collectives.
        let status = unsafe { lib.ncclGroupEnd() };
        first_error?;
        self.check("ncclGroupEnd", status)?;
        for (t, s) in tensors.iter_mut().zip(&staged) {
            if s.to_host {
                // Downloads after the queued collective (the copy is on the same stream).
                **t = t.to_host().map_err(|e| self.stream_error(call, e))?;
            }
        }
        Ok(())
    }

    /// A stream error seen while reading results: the communicator's asynchronous error when
    /// it has one (the likely cause), else the error itself.
    fn stream_error(&self, call: &'static str, e: TensorError) -> LayerError {
        match async_error(self.lib, self.comm) {
            Some(status) => {
                let mut err = nccl_error(self.lib, call, status, Some(self.comm));
                if let LayerError::Nccl { detail, .. } = &mut err {
                    detail.push_str(&format!("; the stream reported: {e}"));
                }
                err
            }
            None => e.into(),
        }
    }

    /// The scratch buffer, at least `floats` f32 long; returns its address.
    fn scratch(&mut self, floats: usize) -> Result<u64> {
        if self.scratch.as_ref().is_none_or(|b| b.len() < floats) {
            self.scratch = None;
            self.scratch = Some(self.device.alloc(floats.max(16).next_power_of_two())?);
        }
        Ok(self.scratch.as_ref().expect("allocated above").device_ptr())
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn describe(&self) -> String {
        format!(
            "nccl rank {}/{} on cuda:{} ({})",
            self.rank,
            self.size,
            self.device.ordinal(),
            self.device.name()
        )
    }

    /// Device tensors of this GPU are summed in place without waiting (ordered on the backend's
    /// stream); host tensors are uploaded, summed, and copied back (waiting).
    fn all_reduce_sum(&mut self, tensors: &mut [&mut Tensor]) -> Result<()> {
        self.grouped(tensors, "ncclAllReduce", |lib, ptr, len, comm, stream| {
            // SAFETY: `ptr` addresses `len` f32 of a device allocation on the communicator's
            // GPU, kept alive by the caller's tensor until the stream has run the operation
            // (its memory goes back to the device's stream-ordered cache); in place is allowed.
            unsafe {
                lib.ncclAllReduce(
                    ptr,
                    ptr,
                    len,
                    ncclDataType_t::ncclFloat32,
                    ncclRedOp_t::ncclSum,
                    comm,
                    stream,
                )
            }
        })
    }

    fn all_reduce_sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.device.bind()?;
        let bytes = std::mem::size_of_val(values);
        let dev = self.scratch(bytes.div_ceil(4))?;
        let stream = self.stream();
        // SAFETY: `dev` holds at least `bytes` bytes (the scratch buffer), `values` is a live
        // host slice of `bytes` bytes; a copy from pageable memory returns once the source has
        // been read.
        let status = unsafe {
            cust::sys::cuMemcpyHtoDAsync_v2(
                dev,
                values.as_ptr() as *const c_void,
                bytes,
                stream as cust::sys::CUstream,
            )
        };
        if status != cust::sys::CUresult::CUDA_SUCCESS {
            return Err(TensorError::Cuda {
                call: "cuMemcpyHtoDAsync",
                detail: format!("{status:?}"),
            }
            .into());
        }
        // SAFETY: `dev` addresses `values.len()` f64 on the communicator's GPU (above).
        let status = unsafe {
            self.lib.ncclAllReduce(
                dev as usize as *const c_void,
                dev as usize as *mut c_void,
                values.len(),
                ncclDataType_t::ncclFloat64,
                ncclRedOp_t::ncclSum,
                self.comm,
                stream,
            )
        };
        self.check("ncclAllReduce (f64)", status)?;
        // SAFETY: as above, in the other direction; a copy to pageable memory returns once done,
        // and the stream is synchronised before `values` is used.
        let status = unsafe {
            cust::sys::cuMemcpyDtoHAsync_v2(
                values.as_mut_ptr() as *mut c_void,
                dev,
                bytes,
                stream as cust::sys::CUstream,
            )
        };
        if status != cust::sys::CUresult::CUDA_SUCCESS {
            return Err(self.stream_error(
                "ncclAllReduce (f64)",
                TensorError::Cuda {
                    call: "cuMemcpyDtoHAsync",
                    detail: format!("{status:?}"),
                },
            ));
        }
        self.synchronize("ncclAllReduce (f64)")
    }

    fn broadcast(&mut self, tensors: &mut [&mut Tensor], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(LayerError::Communicator(format!(
                "broadcast from rank {root} in a communicator of {}",
                self.size
            )));
        }
        self.grouped(tensors, "ncclBroadcast", |lib, ptr, len, comm, stream| {
            // SAFETY: as for the all-reduce: `len` f32 on this GPU, alive until the stream has
            // run the operation; in place is allowed.
            unsafe {
                lib.ncclBroadcast(
                    ptr,
                    ptr,
                    len,
                    ncclDataType_t::ncclFloat32,
                    root as i32,
                    comm,
                    stream,
                )
            }
        })
    }

    /// A one-element all-reduce, then waiting for the stream: every rank has reached this point
    /// and all earlier work of this GPU has finished.
    fn barrier(&mut self) -> Result<()> {
        self.device.bind()?;
        let dev = self.scratch(1)?;
        // SAFETY: the scratch buffer holds at least one f32 on this GPU; its value is irrelevant.
        let status = unsafe {
            self.lib.ncclAllReduce(
                dev as usize as *const c_void,
                dev as usize as *mut c_void,
                1,
                ncclDataType_t::ncclFloat32,
                ncclRedOp_t::ncclSum,
                self.comm,
                self.stream(),
            )
        };
        self.check("ncclAllReduce (barrier)", status)?;
        self.synchronize("ncclAllReduce (barrier)")
    }
}

impl Drop for NcclCommunicator {
    fn drop(&mut self) {
        let _ = self.device.bind();
        if !self.broken && self.device.synchronize().is_err() {
            self.broken = true;
        }
        // SAFETY: `comm` is live and used by nothing else; after a failure it is aborted (which
        // does not wait for the other ranks), otherwise destroyed once its work has finished.
        unsafe {
            if self.broken || async_error(self.lib, self.comm).is_some() {
                let _ = self.lib.ncclCommAbort(self.comm);
            } else {
                let _ = self.lib.ncclCommDestroy(self.comm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_round_trip_through_bytes() {
        let bytes: Vec<u8> = (0..128u8).map(|b| b.wrapping_mul(37)).collect();
        let id = NcclUniqueId::from_bytes(&bytes).unwrap();
        assert_eq!(id.to_bytes(), bytes);
        let err = NcclUniqueId::from_bytes(&bytes[..5])
            .unwrap_err()
            .to_string();
        assert!(err.contains("128 bytes, got 5"), "{err}");
    }

    /// Needs libnccl.so.2 (no GPU): skipped with a message without it.
    #[test]
    fn nvls_is_switched_off_before_nccl_makes_an_id() {
        let v = match version() {
            Ok(v) => v,
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("libnccl.so.2"), "{e}");
                eprintln!("skipped: {e}");
                return;
            }
        };
        assert!(v.starts_with("2."), "{v}");
        assert!(std::env::var_os(NVLS_VARIABLE).is_some());
        let a = NcclUniqueId::new().unwrap();
        let b = NcclUniqueId::new().unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert_eq!(format!("{a:?}"), "NcclUniqueId(..)");
        let err = nccl_error(
            nccl().unwrap(),
            "ncclAllReduce",
            ncclResult_t::ncclInvalidUsage,
            None,
        )
        .to_string();
        assert!(
            err.starts_with("NCCL ncclAllReduce failed: ncclInvalidUsage (invalid usage"),
            "{err}"
        );
    }

    #[test]
    fn status_names_cover_the_known_codes() {
        assert_eq!(
            status_name(ncclResult_t::ncclInvalidUsage),
            "ncclInvalidUsage"
        );
        assert_eq!(status_name(ncclResult_t(42)), "ncclResult_t(42)");
    }
}
