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
        f.debug_struct("cudnn::Handle").field("raw", &self.raw).finish()
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
    pub(crate) fn nchw(lib: &'static CudnnLibrary, op: &'static str, dims: &[usize]) -> Result<Self> {
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
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
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

/// A 4-D fp32 filter descriptor `[k, c, h, w]` (NCHW order).
pub(crate) struct FilterDesc {
    lib: &'static CudnnLibrary,
    pub(crate) raw: sys::cudnnFilterDescriptor_t,
}

impl FilterDesc {
    pub(crate) fn new(lib: &'static CudnnLibrary, op: &'static str, dims: &[usize]) -> Result<Self> {
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
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
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
