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
//! Convolutions run in plain fp32 unless [`CudaBackend::with_precision`] asks for TF32 or bf16
//! mixed precision ([`Precision`]). bf16 and TF32 convolutions run in NHWC (cuDNN's tensor-core
//! kernels are NHWC), and so do the activations between them (bf16 or fp32 NHWC tensors that
//! batch norm, ReLU, pooling, concat / split and bias keep as they are: `layout.rs`), fp32 ones in
//! NCHW (cuDNN's NHWC FMA kernels are slower: 59 vs 118 img/s for U-Net base 64 on the H100);
//! `MAGMA_CUDA_CONV_NHWC=0|1` or [`CudaBackend::with_conv_nhwc`] overrides the fp32/TF32 choice
//! (a tuning switch).

mod activation;
mod batch_norm;
mod conv;
mod cudnn;
mod elementwise;
mod few_channel_conv;
pub mod kernels;
mod layout;
mod loss;
mod matmul;
mod metrics;
mod nhwc;
mod optim;
mod pointwise;
mod pool;
mod resize;
mod shape;
mod softmax;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use magma_tensor::Tensor;

use crate::Precision;
use crate::backend::Backend;
use magma_tensor::cuda::CudaDevice;

use crate::error::{OpError, Result};

/// The CUDA backend of one GPU.
#[derive(Debug)]
pub struct CudaBackend {
    device: Arc<CudaDevice>,
    state: Mutex<CudnnState>,
    precision: Precision,
    /// Whether fp32/TF32 convolutions run in NHWC (`MAGMA_CUDA_CONV_NHWC`); `None`: TF32 yes,
    /// fp32 no.
    conv_nhwc: Option<bool>,
    /// Whether convolution algorithms are chosen among the deterministic ones when any
    /// succeeds (`MAGMA_CUDA_DETERMINISTIC=1`; default no, as PyTorch).
    deterministic: bool,
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
            precision: Precision::Fp32,
            conv_nhwc: match std::env::var("MAGMA_CUDA_CONV_NHWC").as_deref() {
                Ok("1") => Some(true),
                Ok("0") => Some(false),
                _ => None,
            },
            deterministic: crate::precision::deterministic_from_env(),
        })
    }

    /// Lets convolutions use TF32 tensor cores (faster, ~1e-3 relative error instead of ~1e-6);
    /// the same as `with_precision(Precision::Tf32)` (or `Fp32` when `enabled` is false).
    pub fn with_tf32(self, enabled: bool) -> Self {
        self.with_precision(if enabled {
            Precision::Tf32
        } else {
            Precision::Fp32
        })
    }

    /// The math of the convolutions: fp32, TF32, or bf16 mixed precision.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Hands fp32/TF32 convolutions to cuDNN in NHWC (converted on the way in and out) or NCHW;
    /// bf16 convolutions are always NHWC. Default: `MAGMA_CUDA_CONV_NHWC=0|1`, else NHWC for
    /// TF32 and NCHW for fp32.
    pub fn with_conv_nhwc(mut self, enabled: bool) -> Self {
        self.conv_nhwc = Some(enabled);
        self
    }

    /// Chooses each convolution's algorithm among the deterministic ones when any succeeds
    /// (`true`: runs, and resumed runs, repeat bit for bit, as PyTorch's
    /// `torch.backends.cudnn.deterministic = True`), or the fastest of all (`false`, PyTorch's
    /// default; cuDNN's fastest fp32 backward kernels accumulate with atomics, so the last bits
    /// of a gradient vary from run to run). Default: `MAGMA_CUDA_DETERMINISTIC=1`, else the
    /// fastest.
    pub fn with_deterministic(mut self, deterministic: bool) -> Self {
        self.deterministic = deterministic;
        self
    }

    /// Whether convolution algorithms are restricted to deterministic ones.
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }

    /// Whether TF32 is allowed.
    pub fn tf32(&self) -> bool {
        self.precision == Precision::Tf32
    }

    /// The math of the convolutions.
    pub fn precision(&self) -> Precision {
        self.precision
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

    /// `input` as a contiguous fp32 tensor on this device (uploaded or copied when it is not; an
    /// NHWC activation turned into NCHW fp32).
    pub(crate) fn input(&self, tensor: &Tensor) -> Result<Tensor> {
        self.device.bind()?;
        if let Some(dtype) = self.nhwc_dtype(tensor) {
            return self.to_nchw("input", tensor, dtype);
        }
        Ok(self.device.upload(tensor)?)
    }

    /// Makes `tensor` a contiguous device tensor owned alone (migrating host tensors, copying
    /// shared storage) and returns its address, for ops that write in place.
    pub(crate) fn in_place(&self, tensor: &mut Tensor) -> Result<u64> {
        let on_device = matches!(tensor.storage(), magma_tensor::Storage::Device(b) if b.ordinal() == self.device.ordinal());
        let f32 = tensor.dtype() == magma_tensor::DType::F32;
        if !on_device || !tensor.is_contiguous() || !f32 {
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

    fn upload(&self, tensor: &Tensor) -> Result<Tensor> {
        self.input(tensor)
    }

    fn read_later(&self, tensor: &Tensor) -> Result<crate::PendingValues> {
        let on_this_device = matches!(tensor.storage(), magma_tensor::Storage::Device(b) if b.ordinal() == self.device.ordinal());
        if tensor.numel() > magma_tensor::cuda::QUEUED_READ_MAX || !on_this_device {
            // Many values, or values not on this device (a host tensor): read them now.
            return Ok(crate::PendingValues::ready(tensor.to_vec()?));
        }
        let on_device = self.input(tensor)?;
        Ok(crate::PendingValues::queued(
            self.device.queue_read(&on_device)?,
        ))
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
