//! Safe handles over cuDNN: status checking, the library handle bound to the device's stream, and
//! RAII descriptors (tensor, filter, convolution, pooling, activation).
//!
//! Every `cudnn*` call goes through [`Cudnn::check`], which turns a status into
//! [`OpError::Cuda`] naming the op and the call.

use std::ffi::{CStr, c_void};
use std::ptr;

use cudnn_sys as sys;
use cudnn_sys::CudnnLibrary;

use crate::error::{OpError, Result};

/// The loaded library; errors name the library and how to install it.
pub(crate) fn library(op: &'static str) -> Result<&'static CudnnLibrary> {
    cudnn_sys::library().map_err(|detail| OpError::Cuda {
        op,
        call: "dlopen libcudnn.so.9",
        detail,
    })
}

/// Turns a cuDNN status into a typed error.
pub(crate) fn check(
    lib: &CudnnLibrary,
    op: &'static str,
    call: &'static str,
    status: sys::cudnnStatus_t,
) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    // SAFETY: cudnnGetErrorString returns a static NUL-terminated string for any status.
    let text = unsafe { CStr::from_ptr(lib.cudnnGetErrorString(status)) }
        .to_string_lossy()
        .into_owned();
    Err(OpError::Cuda {
        op,
        call,
        detail: format!("{text} (status {})", status.0),
    })
}

/// A cuDNN handle bound to one stream.
pub(crate) struct Handle {
    pub(crate) lib: &'static CudnnLibrary,
    pub(crate) raw: sys::cudnnHandle_t,
}

impl Handle {
    pub(crate) fn new(stream: *mut c_void) -> Result<Self> {
        let lib = library("cudnn handle")?;
        let mut raw: sys::cudnnHandle_t = ptr::null_mut();
        // SAFETY: cudnnCreate writes a handle into a valid local; the context is current.
        check(lib, "cudnn handle", "cudnnCreate", unsafe {
            lib.cudnnCreate(&mut raw)
        })?;
        let handle = Self { lib, raw };
        // SAFETY: `raw` is a live handle and `stream` a live stream of the same context.
        check(lib, "cudnn handle", "cudnnSetStream", unsafe {
            lib.cudnnSetStream(handle.raw, stream as sys::cudaStream_t)
        })?;
        Ok(handle)
    }

    /// `cudnnGetVersion` of the loaded library.
    pub(crate) fn version(&self) -> usize {
        // SAFETY: no arguments, no preconditions.
        unsafe { self.lib.cudnnGetVersion() }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("cudnn::Handle")
            .field("raw", &self.raw)
            .finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `raw` was created by cudnnCreate and is destroyed once.
        unsafe {
            self.lib.cudnnDestroy(self.raw);
        }
    }
}

// SAFETY: a cuDNN handle may move between threads as long as one thread uses it at a time; the
// backend keeps it behind a mutex.
unsafe impl Send for Handle {}

/// A 4-D (or lower, padded with ones) fp32 tensor descriptor in NCHW.
pub(crate) struct TensorDesc {
    lib: &'static CudnnLibrary,
    pub(crate) raw: sys::cudnnTensorDescriptor_t,
}

impl TensorDesc {
    /// NCHW fp32 of `dims` (shapes of rank < 4 are padded with trailing ones).
    pub(crate) fn nchw(
        lib: &'static CudnnLibrary,
        op: &'static str,
        dims: &[usize],
    ) -> Result<Self> {
        Self::with_layout(lib, op, dims, DataLayout::NchwF32)
    }

    /// Logical NCHW `dims` stored in `layout`.
    pub(crate) fn with_layout(
        lib: &'static CudnnLibrary,
        op: &'static str,
        dims: &[usize],
        layout: DataLayout,
    ) -> Result<Self> {
        let d = dims4(op, dims)?;
        let mut raw: sys::cudnnTensorDescriptor_t = ptr::null_mut();
        // SAFETY: writes a descriptor into a valid local.
        check(lib, op, "cudnnCreateTensorDescriptor", unsafe {
            lib.cudnnCreateTensorDescriptor(&mut raw)
        })?;
        let desc = Self { lib, raw };
        // SAFETY: `raw` is a live descriptor; dimensions are positive i32.
        check(lib, op, "cudnnSetTensor4dDescriptor", unsafe {
            lib.cudnnSetTensor4dDescriptor(
                desc.raw,
                layout.format(),
                layout.data_type(),
                d[0],
                d[1],
                d[2],
                d[3],
            )
        })?;
        Ok(desc)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateTensorDescriptor, destroyed once.
        unsafe {
            self.lib.cudnnDestroyTensorDescriptor(self.raw);
        }
    }
}

/// How the operands of a cuDNN call are stored: memory format and element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DataLayout {
    /// NCHW (filters KCRS) fp32: our tensors as they are.
    NchwF32,
    /// NHWC (filters KRSC) fp32.
    NhwcF32,
    /// NHWC (filters KRSC) bf16.
    NhwcBf16,
}

impl DataLayout {
    /// The element type of NHWC activations handed over in this layout (`None`: NCHW).
    pub(crate) fn nhwc_dtype(self) -> Option<magma_tensor::DType> {
        match self {
            DataLayout::NchwF32 => None,
            DataLayout::NhwcF32 => Some(magma_tensor::DType::F32),
            DataLayout::NhwcBf16 => Some(magma_tensor::DType::BF16),
        }
    }

    /// The NHWC layout of elements of `dtype`.
    pub(crate) fn nhwc_of(dtype: magma_tensor::DType) -> Self {
        match dtype {
            magma_tensor::DType::BF16 => DataLayout::NhwcBf16,
            _ => DataLayout::NhwcF32,
        }
    }

    pub(crate) fn format(self) -> sys::cudnnTensorFormat_t {
        match self {
            DataLayout::NchwF32 => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            DataLayout::NhwcF32 | DataLayout::NhwcBf16 => {
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC
            }
        }
    }

    pub(crate) fn data_type(self) -> sys::cudnnDataType_t {
        match self {
            DataLayout::NchwF32 | DataLayout::NhwcF32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            DataLayout::NhwcBf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
        }
    }

    /// Bytes per element.
    pub(crate) fn element_bytes(self) -> usize {
        match self {
            DataLayout::NchwF32 | DataLayout::NhwcF32 => 4,
            DataLayout::NhwcBf16 => 2,
        }
    }
}

/// A 4-D filter descriptor of logical shape `[k, c, h, w]`.
pub(crate) struct FilterDesc {
    lib: &'static CudnnLibrary,
    pub(crate) raw: sys::cudnnFilterDescriptor_t,
}

impl FilterDesc {
    pub(crate) fn new(
        lib: &'static CudnnLibrary,
        op: &'static str,
        dims: &[usize],
        layout: DataLayout,
    ) -> Result<Self> {
        let d = dims4(op, dims)?;
        let mut raw: sys::cudnnFilterDescriptor_t = ptr::null_mut();
        // SAFETY: writes a descriptor into a valid local.
        check(lib, op, "cudnnCreateFilterDescriptor", unsafe {
            lib.cudnnCreateFilterDescriptor(&mut raw)
        })?;
        let desc = Self { lib, raw };
        // SAFETY: `raw` is a live descriptor; dimensions are positive i32.
        check(lib, op, "cudnnSetFilter4dDescriptor", unsafe {
            lib.cudnnSetFilter4dDescriptor(
                desc.raw,
                layout.data_type(),
                layout.format(),
                d[0],
                d[1],
                d[2],
                d[3],
            )
        })?;
        Ok(desc)
    }
}

impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateFilterDescriptor, destroyed once.
        unsafe {
            self.lib.cudnnDestroyFilterDescriptor(self.raw);
        }
    }
}

/// A 2-D cross-correlation descriptor (PyTorch's convolution) with fp32 compute.
pub(crate) struct ConvDesc {
    lib: &'static CudnnLibrary,
    pub(crate) raw: sys::cudnnConvolutionDescriptor_t,
}

impl ConvDesc {
    pub(crate) fn new(
        lib: &'static CudnnLibrary,
        op: &'static str,
        padding: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        math: sys::cudnnMathType_t,
    ) -> Result<Self> {
        let [ph, pw, sh, sw, dh, dw] = int_args(
            op,
            [
                padding[0],
                padding[1],
                stride[0],
                stride[1],
                dilation[0],
                dilation[1],
            ],
        )?;
        let mut raw: sys::cudnnConvolutionDescriptor_t = ptr::null_mut();
        // SAFETY: writes a descriptor into a valid local.
        check(lib, op, "cudnnCreateConvolutionDescriptor", unsafe {
            lib.cudnnCreateConvolutionDescriptor(&mut raw)
        })?;
        let desc = Self { lib, raw };
        // SAFETY: `raw` is a live descriptor; the arguments are plain integers and enums.
        check(lib, op, "cudnnSetConvolution2dDescriptor", unsafe {
            lib.cudnnSetConvolution2dDescriptor(
                desc.raw,
                ph,
                pw,
                sh,
                sw,
                dh,
                dw,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
        })?;
        desc.set_math(op, math)?;
        Ok(desc)
    }

    /// Sets the math type (FMA only, or tensor cores with TF32).
    pub(crate) fn set_math(&self, op: &'static str, math: sys::cudnnMathType_t) -> Result<()> {
        // SAFETY: `raw` is a live descriptor.
        check(self.lib, op, "cudnnSetConvolutionMathType", unsafe {
            self.lib.cudnnSetConvolutionMathType(self.raw, math)
        })
    }
}

impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateConvolutionDescriptor, destroyed once.
        unsafe {
            self.lib.cudnnDestroyConvolutionDescriptor(self.raw);
        }
    }
}

/// A 2-D pooling descriptor.
pub(crate) struct PoolDesc {
    lib: &'static CudnnLibrary,
    pub(crate) raw: sys::cudnnPoolingDescriptor_t,
}

impl PoolDesc {
    pub(crate) fn new(
        lib: &'static CudnnLibrary,
        op: &'static str,
        mode: sys::cudnnPoolingMode_t,
        kernel: [usize; 2],
        padding: [usize; 2],
        stride: [usize; 2],
    ) -> Result<Self> {
        let [kh, kw, ph, pw, sh, sw] = int_args(
            op,
            [
                kernel[0], kernel[1], padding[0], padding[1], stride[0], stride[1],
            ],
        )?;
        let mut raw: sys::cudnnPoolingDescriptor_t = ptr::null_mut();
        // SAFETY: writes a descriptor into a valid local.
        check(lib, op, "cudnnCreatePoolingDescriptor", unsafe {
            lib.cudnnCreatePoolingDescriptor(&mut raw)
        })?;
        let desc = Self { lib, raw };
        // SAFETY: `raw` is a live descriptor; the arguments are plain integers and enums.
        check(lib, op, "cudnnSetPooling2dDescriptor", unsafe {
            lib.cudnnSetPooling2dDescriptor(
                desc.raw,
                mode,
                sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                kh,
                kw,
                ph,
                pw,
                sh,
                sw,
            )
        })?;
        Ok(desc)
    }
}

impl Drop for PoolDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreatePoolingDescriptor, destroyed once.
        unsafe {
            self.lib.cudnnDestroyPoolingDescriptor(self.raw);
        }
    }
}

/// An activation descriptor (ReLU, sigmoid, tanh).
pub(crate) struct ActivationDesc {
    lib: &'static CudnnLibrary,
    pub(crate) raw: sys::cudnnActivationDescriptor_t,
}

impl ActivationDesc {
    pub(crate) fn new(
        lib: &'static CudnnLibrary,
        op: &'static str,
        mode: sys::cudnnActivationMode_t,
    ) -> Result<Self> {
        let mut raw: sys::cudnnActivationDescriptor_t = ptr::null_mut();
        // SAFETY: writes a descriptor into a valid local.
        check(lib, op, "cudnnCreateActivationDescriptor", unsafe {
            lib.cudnnCreateActivationDescriptor(&mut raw)
        })?;
        let desc = Self { lib, raw };
        // SAFETY: `raw` is a live descriptor; the coefficient is unused by these modes.
        check(lib, op, "cudnnSetActivationDescriptor", unsafe {
            lib.cudnnSetActivationDescriptor(
                desc.raw,
                mode,
                sys::cudnnNanPropagation_t::CUDNN_NOT_PROPAGATE_NAN,
                0.0,
            )
        })?;
        Ok(desc)
    }
}

impl Drop for ActivationDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateActivationDescriptor, destroyed once.
        unsafe {
            self.lib.cudnnDestroyActivationDescriptor(self.raw);
        }
    }
}

/// Small non-negative attributes (paddings, strides, windows) as `i32`.
fn int_args<const N: usize>(op: &'static str, v: [usize; N]) -> Result<[i32; N]> {
    let mut out = [0i32; N];
    for (o, &x) in out.iter_mut().zip(&v) {
        *o = i32::try_from(x).map_err(|_| OpError::Attr {
            op,
            reason: format!("attribute {x} does not fit cuDNN's 32-bit integers"),
        })?;
    }
    Ok(out)
}

/// Dimensions as four positive `i32`, padding lower ranks with trailing ones.
pub(crate) fn dims4(op: &'static str, dims: &[usize]) -> Result<[i32; 4]> {
    if dims.len() > 4 || dims.contains(&0) || dims.iter().any(|&d| d > i32::MAX as usize) {
        return Err(OpError::Shape {
            op,
            what: "tensor",
            got: dims.to_vec(),
            expected: "rank ≤ 4, every dimension in 1..2^31 (cuDNN)".into(),
        });
    }
    let mut out = [1i32; 4];
    for (o, &d) in out.iter_mut().zip(dims) {
        *o = d as i32;
    }
    Ok(out)
}

/// `&1.0f32` / `&0.0f32` as the `void*` scaling factors cuDNN takes.
pub(crate) const ONE: f32 = 1.0;
pub(crate) const ZERO: f32 = 0.0;

pub(crate) fn scale(v: &f32) -> *const c_void {
    v as *const f32 as *const c_void
}

/// A device address as the `void*` cuDNN takes.
pub(crate) fn dptr(addr: u64) -> *mut c_void {
    addr as usize as *mut c_void
}
