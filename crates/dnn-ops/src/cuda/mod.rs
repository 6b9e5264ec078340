//! The CUDA backend: every op trait of [`crate::backend`] on one GPU, through cuDNN where it has
//! the op (convolutions, the transposed convolution bound by hand, pooling, activations, batch
//! norm, softmax) and through our own kernels of `cuda/*.cu` for the rest (losses, optimizer
//! updates, resampling, concat/split, elementwise work, metrics).
//!
//! Inputs may live anywhere: a host tensor given to an op is uploaded first, so parameters and
//! optimizer state migrate to the device on the first step (in-place ops replace a host tensor
//! by its device copy). Outputs are contiguous device tensors on the backend's device. All work
//! is queued on the device's one stream; reading a result (`to_vec`, `item`) waits for it.
//!
//! Convolutions run in plain fp32 unless TF32 is enabled with [`CudaBackend::with_tf32`].

mod activation;
mod batch_norm;
mod conv;
mod cudnn;
mod elementwise;
pub mod kernels;
mod loss;
mod matmul;
mod metrics;
mod optim;
mod pool;
mod resize;
mod shape;
mod softmax;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use magma_tensor::Tensor;

use crate::backend::Backend;
use magma_tensor::cuda::CudaDevice;

use crate::error::{OpError, Result};

/// The CUDA backend of one GPU.
#[derive(Debug)]
pub struct CudaBackend {
    device: Arc<CudaDevice>,
    state: Mutex<CudnnState>,
    tf32: bool,
}

/// Everything cuDNN calls share: the handle and the reusable workspace.
#[derive(Debug)]
pub(crate) struct CudnnState {
    pub(crate) handle: cudnn::Handle,
    workspace: Option<magma_tensor::cuda::CudaBuffer>,
    /// The convolution algorithms chosen so far, by problem.
    pub(crate) conv_algos: conv::AlgoCache,
}

impl CudnnState {
    /// A workspace of at least `bytes`, grown (never shrunk) as needed; returns its address.
    pub(crate) fn workspace(&mut self, device: &Arc<CudaDevice>, bytes: usize) -> Result<u64> {
        let have = self.workspace.as_ref().map_or(0, |w| w.len() * 4);
        if have < bytes.max(4) {
            self.workspace = None;
            self.workspace = Some(device.alloc(bytes.max(4).div_ceil(4))?);
        }
        Ok(self
            .workspace
            .as_ref()
            .expect("allocated above")
            .device_ptr())
    }
}

impl CudaBackend {
    /// The backend of GPU `ordinal`; fails with a clear error without a driver, GPU or cuDNN.
    pub fn new(ordinal: usize) -> Result<Self> {
        let device = CudaDevice::get(ordinal)?;
        device.bind()?;
        let handle = cudnn::Handle::new(device.stream_handle())?;
        Ok(Self {
            device,
            state: Mutex::new(CudnnState {
                handle,
                workspace: None,
                conv_algos: conv::AlgoCache::default(),
            }),
            tf32: false,
        })
    }

    /// Lets convolutions use TF32 tensor cores (faster, ~1e-3 relative error instead of ~1e-6).
    pub fn with_tf32(mut self, enabled: bool) -> Self {
        self.tf32 = enabled;
        self
    }

    /// Whether TF32 is allowed.
    pub fn tf32(&self) -> bool {
        self.tf32
    }

    /// The GPU this backend runs on.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// Waits for all queued work and reports asynchronous errors.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.device.synchronize()?)
    }

    /// The loaded cuDNN's version (e.g. 91900).
    pub fn cudnn_version(&self) -> Result<usize> {
        Ok(self.lock_state()?.handle.version())
    }

    /// `input` as a contiguous tensor on this device (uploaded or copied when it is not).
    pub(crate) fn input(&self, tensor: &Tensor) -> Result<Tensor> {
        self.device.bind()?;
        Ok(self.device.upload(tensor)?)
    }

    /// Makes `tensor` a contiguous device tensor owned alone (migrating host tensors, copying
    /// shared storage) and returns its address, for ops that write in place.
    pub(crate) fn in_place(&self, tensor: &mut Tensor) -> Result<u64> {
        let on_device = matches!(tensor.storage(), magma_tensor::Storage::Device(b) if b.ordinal() == self.device.ordinal());
        if !on_device || !tensor.is_contiguous() {
            *tensor = self.input(tensor)?;
        }
        Ok(tensor.device_ptr_mut()?)
    }

    /// A new contiguous device tensor whose every element the caller's kernel writes.
    pub(crate) fn output(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.device.empty_tensor(shape)?)
    }

    /// A new device tensor of zeros.
    pub(crate) fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.device.zeros_tensor(shape)?)
    }

    /// The raw stream handle kernels are launched on.
    pub(crate) fn stream(&self) -> kernels::Stream {
        self.device.stream_handle()
    }

    pub(crate) fn lock_state(&self) -> Result<MutexGuard<'_, CudnnState>> {
        self.state
            .lock()
            .map_err(|_| OpError::Graph("cuDNN state poisoned by a panic".into()))
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        format!("cuda:{} ({})", self.device.ordinal(), self.device.name())
    }
}

/// The backend of GPU 0 for tests, or `None` (with the reason on stderr) when there is none.
pub fn test_backend() -> Option<&'static CudaBackend> {
    static BACKEND: OnceLock<Option<CudaBackend>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            if CudaDevice::count() == 0 {
                eprintln!("no CUDA device: CUDA tests skipped");
                return None;
            }
            match CudaBackend::new(0) {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("CUDA backend unavailable ({e}): CUDA tests skipped");
                    None
                }
            }
        })
        .as_ref()
}
