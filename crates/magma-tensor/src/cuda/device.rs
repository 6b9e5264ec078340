//! One GPU: its primary context, its stream, its allocator and its pinned staging buffers.
//!
//! Host→device copies go through a ring of page-locked buffers and do not wait for the device:
//! each buffer remembers the event recorded after the copy that reads it, and is refilled only
//! once that copy has run. Device→host copies wait for the stream, as the caller needs the
//! values — except a queued read ([`CudaDevice::queue_read`]), which waits only for the work
//! queued before it.

use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use cust::context::{Context, CurrentContext};
use cust::device::Device;
use cust::event::{Event, EventFlags};
use cust::memory::LockedBuffer;
use cust::stream::{Stream, StreamFlags};

use super::allocator::{CachingAllocator, MemoryStats};
use super::buffer::CudaBuffer;
use super::{check_driver, cuda_err};
use crate::{Result, Storage, Tensor, TensorError};

/// A GPU ready for work. Get it with [`CudaDevice::get`]; it lives for the whole process.
#[derive(Debug)]
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    context: Context,
    stream: Stream,
    allocator: Mutex<CachingAllocator>,
    /// Staging for device→host reads (used under the lock, with the stream synchronised).
    staging: Mutex<Option<LockedBuffer<f32>>>,
    uploads: Mutex<UploadRing>,
    /// Page-locked buffers and events of finished queued reads, for the next ones.
    read_slots: Mutex<Vec<ReadSlot>>,
}

/// The most values one queued read ([`CudaDevice::queue_read`]) may copy.
pub const QUEUED_READ_MAX: usize = 256;

/// A page-locked buffer and the event recorded after the device→host copy into it.
#[derive(Debug)]
struct ReadSlot {
    pinned: LockedBuffer<f32>,
    copied: Event,
}

/// A device→host copy of a few values queued on the stream ([`CudaDevice::queue_read`]):
/// [`Self::wait`] waits only for the work queued before the copy, not for what was queued
/// after it, so a training loop can read one step's loss while the device runs the next.
#[derive(Debug)]
pub struct QueuedRead {
    device: Arc<CudaDevice>,
    slot: Option<ReadSlot>,
    len: usize,
}

impl QueuedRead {
    /// The values, once the copy has run.
    pub fn wait(mut self) -> Result<Vec<f32>> {
        self.settle()
    }

    /// Waits for the copy, then hands its buffer back to the pool with the values read out.
    /// If the wait fails, the copy's fate is unknown: the page-locked memory is kept out of
    /// reach for good rather than let the device write into freed or reused memory.
    fn settle(&mut self) -> Result<Vec<f32>> {
        let Some(slot) = self.slot.take() else {
            return Ok(Vec::new());
        };
        // Best effort: if the context cannot be made current, the wait below fails and says so.
        let _ = self.device.bind();
        if let Err(e) = slot.copied.synchronize() {
            std::mem::forget(slot);
            return Err(cuda_err("cuEventSynchronize", e));
        }
        let values = slot.pinned.as_slice()[..self.len].to_vec();
        self.device.give_back_read_slot(slot);
        Ok(values)
    }
}

impl Drop for QueuedRead {
    fn drop(&mut self) {
        // Never waited for: the copy into the buffer must have run before it is reused.
        let _ = self.settle();
    }
}

/// How many uploads may be in flight before the next one waits for the oldest.
const UPLOAD_SLOTS: usize = 8;

/// The largest upload (bytes) staged through the ring; each slot keeps at most this much
/// page-locked memory (rounded up to a power of two).
const UPLOAD_SLOT_CAP: usize = 64 << 20;

/// The page-locked buffers host→device copies are staged through, used in turn.
#[derive(Debug, Default)]
struct UploadRing {
    slots: Vec<UploadSlot>,
    next: usize,
}

/// One staging buffer and the event recorded on the stream after the copy that reads it.
#[derive(Debug)]
struct UploadSlot {
    pinned: LockedBuffer<f32>,
    copied: Event,
}

// SAFETY: the context and stream handles are process-wide driver objects usable from any thread
// once the context is made current there (every entry point calls `bind`); the mutable state
// (allocator, staging buffer) sits behind mutexes.
unsafe impl Send for CudaDevice {}
// SAFETY: as above.
unsafe impl Sync for CudaDevice {}

static DEVICES: OnceLock<Mutex<Vec<Option<Arc<CudaDevice>>>>> = OnceLock::new();

impl CudaDevice {
    /// The device with this ordinal, initialised on first use.
    pub fn get(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let registry = DEVICES.get_or_init(|| Mutex::new(Vec::new()));
        let mut devices = registry
            .lock()
            .map_err(|_| TensorError::Device("device registry poisoned".into()))?;
        if let Some(Some(dev)) = devices.get(ordinal) {
            return Ok(dev.clone());
        }
        let dev = Arc::new(Self::open(ordinal)?);
        if devices.len() <= ordinal {
            devices.resize(ordinal + 1, None);
        }
        devices[ordinal] = Some(dev.clone());
        Ok(dev)
    }

    /// How many CUDA devices the driver sees (0 when there is no driver or no GPU).
    pub fn count() -> usize {
        if cust::init(cust::CudaFlags::empty()).is_err() {
            return 0;
        }
        Device::num_devices().map(|n| n as usize).unwrap_or(0)
    }

    fn open(ordinal: usize) -> Result<Self> {
        cust::init(cust::CudaFlags::empty()).map_err(|e| cuda_err("cuInit", e))?;
        let count = Device::num_devices().map_err(|e| cuda_err("cuDeviceGetCount", e))? as usize;
        if ordinal >= count {
            return Err(TensorError::Device(format!(
                "CUDA device {ordinal} requested but the driver sees {count}"
            )));
        }
        let device = Device::get_device(ordinal as u32).map_err(|e| cuda_err("cuDeviceGet", e))?;
        let name = device.name().map_err(|e| cuda_err("cuDeviceGetName", e))?;
        let context = Context::new(device).map_err(|e| cuda_err("cuDevicePrimaryCtxRetain", e))?;
        CurrentContext::set_current(&context).map_err(|e| cuda_err("cuCtxSetCurrent", e))?;
        // A blocking stream: ordered after any work on the legacy default stream as well.
        let stream =
            Stream::new(StreamFlags::DEFAULT, None).map_err(|e| cuda_err("cuStreamCreate", e))?;
        Ok(Self {
            ordinal,
            name,
            context,
            stream,
            allocator: Mutex::new(CachingAllocator::default()),
            staging: Mutex::new(None),
            uploads: Mutex::new(UploadRing::default()),
            read_slots: Mutex::new(Vec::new()),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes this device's context current on the calling thread (cheap; call before driver work).
    pub fn bind(&self) -> Result<()> {
        CurrentContext::set_current(&self.context).map_err(|e| cuda_err("cuCtxSetCurrent", e))
    }

    /// The raw stream handle (`CUstream`, which is also a `cudaStream_t`) all work goes on.
    pub fn stream_handle(&self) -> *mut c_void {
        self.stream.as_inner() as *mut c_void
    }

    /// Waits until every queued operation has finished, and reports any asynchronous error.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("cuStreamSynchronize", e))
    }

    /// Marks the start (`true`) or the end (`false`) of the region a profiler started with
    /// `--profile-from-start off` (Nsight Compute, Nsight Systems) records.
    pub fn profiler_range(&self, start: bool) -> Result<()> {
        self.bind()?;
        if start {
            // SAFETY: no argument; a context is current (bound above).
            check_driver("cuProfilerStart", unsafe { cust::sys::cuProfilerStart() })
        } else {
            // SAFETY: as above.
            check_driver("cuProfilerStop", unsafe { cust::sys::cuProfilerStop() })
        }
    }

    /// Allocator statistics.
    pub fn memory_stats(&self) -> MemoryStats {
        self.allocator.lock().map(|a| a.stats()).unwrap_or_default()
    }

    /// Starts a new peak-memory measurement.
    pub fn reset_peak_memory(&self) {
        if let Ok(mut a) = self.allocator.lock() {
            a.reset_peak();
        }
    }

    /// Returns cached blocks to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        self.synchronize()?;
        self.lock_allocator()?.release_cached()
    }

    /// An uninitialised buffer of `len` `f32`.
    pub fn alloc(self: &Arc<Self>, len: usize) -> Result<CudaBuffer> {
        self.bind()?;
        // On out-of-memory the allocator gives its cached blocks back to the driver, after the
        // stream has finished the queued work that may still use them.
        let (ptr, bytes) = self.lock_allocator()?.allocate(len * 4, || {
            self.stream
                .synchronize()
                .map_err(|e| cuda_err("cuStreamSynchronize", e))
        })?;
        Ok(CudaBuffer::from_raw_parts(self.clone(), ptr, len, bytes))
    }

    /// A contiguous device tensor whose elements are unspecified (every kernel writing it must
    /// write all of them).
    pub fn empty_tensor(self: &Arc<Self>, shape: &[usize]) -> Result<Tensor> {
        let len = crate::numel(shape);
        Tensor::from_storage(Storage::Device(Box::new(self.alloc(len)?)), shape)
    }

    /// A contiguous device tensor filled with zeros.
    pub fn zeros_tensor(self: &Arc<Self>, shape: &[usize]) -> Result<Tensor> {
        let len = crate::numel(shape);
        let buf = self.alloc(len)?;
        // SAFETY: the buffer holds `len` f32 = `len` 32-bit words, all inside the allocation.
        check_driver("cuMemsetD32Async", unsafe {
            cust::sys::cuMemsetD32Async(buf.device_ptr(), 0, len, self.stream.as_inner())
        })?;
        Tensor::from_storage(Storage::Device(Box::new(buf)), shape)
    }

    /// A device copy of `tensor` (contiguous). A tensor already on this device is returned as a
    /// cheap clone when it is contiguous.
    pub fn upload(self: &Arc<Self>, tensor: &Tensor) -> Result<Tensor> {
        if let Storage::Device(buf) = tensor.storage()
            && buf.ordinal() == self.ordinal
            && tensor.is_contiguous()
        {
            return Ok(tensor.clone());
        }
        // A contiguous host tensor is staged from its own memory, anything else copied first.
        let copied;
        let values = match tensor.host_data() {
            Ok(values) if tensor.dtype() == crate::DType::F32 => values,
            _ => {
                copied = tensor.to_vec()?;
                &copied
            }
        };
        let buf = self.alloc(values.len())?;
        self.copy_host_to_device(values, buf.device_ptr())?;
        Tensor::from_storage(Storage::Device(Box::new(buf)), tensor.shape())
    }

    /// Queues a copy of `src` to device memory at `dst` through a pinned staging buffer and
    /// returns without waiting for it: `src` is copied into the staging buffer first, so the
    /// caller may drop or change it at once. Kernels queued later on the stream see the values.
    /// An upload larger than [`UPLOAD_SLOT_CAP`] goes through a buffer of its own and waits, so
    /// that the ring's page-locked memory stays bounded.
    pub(crate) fn copy_host_to_device(&self, src: &[f32], dst: u64) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        if src.len() * 4 > UPLOAD_SLOT_CAP {
            let mut pinned = pinned_buffer(src.len())?;
            pinned.as_mut_slice()[..src.len()].copy_from_slice(src);
            self.queue_upload(&pinned, src.len(), dst)?;
            // The buffer is freed on return: wait for the copy that reads it.
            return self
                .stream
                .synchronize()
                .map_err(|e| cuda_err("cuStreamSynchronize", e));
        }
        let mut ring = self
            .uploads
            .lock()
            .map_err(|_| TensorError::Device("upload staging poisoned".into()))?;
        let index = ring.next;
        if index == ring.slots.len() {
            ring.slots.push(UploadSlot {
                pinned: pinned_buffer(src.len())?,
                copied: Event::new(EventFlags::DISABLE_TIMING)
                    .map_err(|e| cuda_err("cuEventCreate", e))?,
            });
        }
        // Moved on only once the slot exists, so a failed allocation leaves the ring usable.
        ring.next = (index + 1) % UPLOAD_SLOTS;
        let slot = &mut ring.slots[index];
        // The copy that last read this buffer must have run before it is refilled or freed.
        slot.copied
            .synchronize()
            .map_err(|e| cuda_err("cuEventSynchronize", e))?;
        if slot.pinned.len() < src.len() {
            slot.pinned = pinned_buffer(src.len())?;
        }
        slot.pinned.as_mut_slice()[..src.len()].copy_from_slice(src);
        self.queue_upload(&slot.pinned, src.len(), dst)?;
        if let Err(e) = slot.copied.record(&self.stream) {
            // Without the event nothing would keep the next refill of this buffer after the
            // copy just queued: wait for it here.
            let _ = self.stream.synchronize();
            return Err(cuda_err("cuEventRecord", e));
        }
        Ok(())
    }

    /// Queues the copy of the first `len` values of `pinned` to device memory at `dst`.
    fn queue_upload(&self, pinned: &LockedBuffer<f32>, len: usize, dst: u64) -> Result<()> {
        // SAFETY: `pinned` holds at least `len` f32 of page-locked memory (the callers sized
        // it) and `dst` points at a device allocation of at least as many (checked by their
        // callers' lengths); each caller keeps the buffer unwritten and alive until the copy
        // has run (an event or a stream synchronisation).
        check_driver("cuMemcpyHtoDAsync", unsafe {
            cust::sys::cuMemcpyHtoDAsync_v2(
                dst,
                pinned.as_ptr() as *const c_void,
                len * 4,
                self.stream.as_inner(),
            )
        })
    }

    /// Copies `dst.len()` values from device memory at `src` into `dst`, after all queued work.
    pub(crate) fn copy_device_to_host(&self, src: u64, dst: &mut [f32]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        let mut staging = self.staging_at_least(dst.len())?;
        let pinned = staging.as_mut().expect("staging sized above");
        // SAFETY: `pinned` holds at least `dst.len()` f32 of page-locked memory and `src` points
        // at a device allocation of at least as many (the callers' lengths); the stream is
        // synchronised before the pinned values are read or the buffer is reused.
        check_driver("cuMemcpyDtoHAsync", unsafe {
            cust::sys::cuMemcpyDtoHAsync_v2(
                pinned.as_mut_ptr() as *mut c_void,
                src,
                dst.len() * 4,
                self.stream.as_inner(),
            )
        })?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("cuStreamSynchronize", e))?;
        dst.copy_from_slice(&pinned.as_slice()[..dst.len()]);
        Ok(())
    }

    /// Queues a copy of `tensor` (a contiguous f32 tensor on this device with at most
    /// [`QUEUED_READ_MAX`] elements, such as a loss) to page-locked host memory behind the work
    /// already queued, and returns without waiting; [`QueuedRead::wait`] gives the values.
    pub fn queue_read(self: &Arc<Self>, tensor: &Tensor) -> Result<QueuedRead> {
        let len = tensor.numel();
        if len > QUEUED_READ_MAX {
            return Err(TensorError::ShapeMismatch {
                op: "queue_read (at most QUEUED_READ_MAX values)",
                lhs: tensor.shape().to_vec(),
                rhs: vec![QUEUED_READ_MAX],
            });
        }
        let on_this_device =
            matches!(tensor.storage(), Storage::Device(buf) if buf.ordinal() == self.ordinal);
        if !on_this_device {
            return Err(TensorError::Device(format!(
                "queue_read: the tensor is not in the memory of CUDA device {}",
                self.ordinal
            )));
        }
        let src = tensor.device_ptr()?;
        self.bind()?;
        let reused = self
            .read_slots
            .lock()
            .map_err(|_| TensorError::Device("read buffers poisoned".into()))?
            .pop();
        let mut slot = match reused {
            Some(slot) => slot,
            None => ReadSlot {
                pinned: pinned_buffer(QUEUED_READ_MAX)?,
                copied: Event::new(EventFlags::DISABLE_TIMING)
                    .map_err(|e| cuda_err("cuEventCreate", e))?,
            },
        };
        if len > 0 {
            // SAFETY: `slot.pinned` holds QUEUED_READ_MAX ≥ `len` f32 of page-locked memory and
            // `src` addresses `len` f32 of a device allocation live at this point of the stream
            // (a contiguous f32 tensor of this device; if the caller frees it at once, the
            // allocator hands its memory only to work queued later on this same stream); the
            // buffer is neither read nor reused before the event recorded below has completed
            // (QueuedRead::wait and its Drop).
            let queued = check_driver("cuMemcpyDtoHAsync", unsafe {
                cust::sys::cuMemcpyDtoHAsync_v2(
                    slot.pinned.as_mut_ptr() as *mut c_void,
                    src,
                    len * 4,
                    self.stream.as_inner(),
                )
            });
            if let Err(e) = queued {
                self.give_back_read_slot(slot);
                return Err(e);
            }
        }
        if let Err(e) = slot.copied.record(&self.stream) {
            // Without the event nothing orders a later reuse of the buffer after the copy: wait
            // for the stream, and if even that fails, never reuse or free the buffer.
            if self.stream.synchronize().is_ok() {
                self.give_back_read_slot(slot);
            } else {
                std::mem::forget(slot);
            }
            return Err(cuda_err("cuEventRecord", e));
        }
        Ok(QueuedRead {
            device: Arc::clone(self),
            slot: Some(slot),
            len,
        })
    }

    fn give_back_read_slot(&self, slot: ReadSlot) {
        if let Ok(mut slots) = self.read_slots.lock() {
            slots.push(slot);
        }
    }

    /// Queues a device-to-device copy of `len` values.
    pub(crate) fn copy_device_to_device(&self, src: u64, dst: u64, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: both pointers address device allocations of at least `len` f32 (the callers'
        // buffers), ordered on this device's stream.
        check_driver("cuMemcpyDtoDAsync", unsafe {
            cust::sys::cuMemcpyDtoDAsync_v2(dst, src, len * 4, self.stream.as_inner())
        })
    }

    /// Returns a block of `bytes` bytes, allocated for a request of `requested`, to the cache.
    pub(crate) fn release(&self, ptr: u64, bytes: usize, requested: usize) {
        if let Ok(mut a) = self.allocator.lock() {
            a.release(ptr, bytes, requested);
        }
    }

    fn lock_allocator(&self) -> Result<std::sync::MutexGuard<'_, CachingAllocator>> {
        self.allocator
            .lock()
            .map_err(|_| TensorError::Device("device allocator poisoned".into()))
    }

    fn staging_at_least(
        &self,
        len: usize,
    ) -> Result<std::sync::MutexGuard<'_, Option<LockedBuffer<f32>>>> {
        let mut staging = self
            .staging
            .lock()
            .map_err(|_| TensorError::Device("staging buffer poisoned".into()))?;
        if staging.as_ref().is_none_or(|b| b.len() < len) {
            *staging = Some(pinned_buffer(len)?);
        }
        Ok(staging)
    }
}

/// Page-locked memory for at least `len` f32 (rounded up to a power of two, so that a growing
/// series of sizes reallocates rarely).
fn pinned_buffer(len: usize) -> Result<LockedBuffer<f32>> {
    LockedBuffer::new(&0.0f32, len.next_power_of_two()).map_err(|e| cuda_err("cuMemAllocHost", e))
}
