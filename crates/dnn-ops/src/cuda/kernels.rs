//! Declarations of the launchers in `cuda/*.cu` and the check that turns their status into an
//! [`OpError`].
//!
//! Every launcher queues work on the stream it is given and returns the `cudaError_t` of the
//! launch (0 on success). Pointers are raw device addresses of contiguous `f32` tensors.

use std::ffi::{CStr, c_void};

use crate::error::{OpError, Result};

/// A raw stream handle as the launchers take it.
pub(crate) type Stream = *mut c_void;

/// The read-only address of an NHWC activation (bf16 or fp32) as the launchers take it.
pub(crate) type ActSrc = *const c_void;

/// The address of an NHWC activation a launcher writes.
pub(crate) type ActDst = *mut c_void;

/// Declares the `_bf16` and `_f32` launchers of one kernel templated over the activations'
/// element type (the same parameter list, activations as [`ActSrc`] / [`ActDst`]), and a function
/// `$pick(dtype)` that returns the one for `dtype` (bf16, else fp32).
macro_rules! nhwc_launchers {
    ($pick:ident = $bf16:ident | $f32:ident ($($arg:ident: $ty:ty),* $(,)?)) => {
        unsafe extern "C" {
            fn $bf16($($arg: $ty),*) -> i32;
            fn $f32($($arg: $ty),*) -> i32;
        }

        /// The launcher of this kernel for activations of `dtype` (bf16, else fp32).
        fn $pick(dtype: magma_tensor::DType) -> unsafe extern "C" fn($($ty),*) -> i32 {
            match dtype {
                magma_tensor::DType::BF16 => $bf16,
                _ => $f32,
            }
        }
    };
}
pub(crate) use nhwc_launchers;

unsafe extern "C" {
    pub(crate) fn mg_error_string(code: i32) -> *const std::ffi::c_char;
    pub(crate) fn mg_runtime_version(version: *mut i32) -> i32;
}

/// Maps a launcher's status to a typed error naming the op.
pub(crate) fn check(op: &'static str, status: i32) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: cudaGetErrorString returns a pointer to a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(mg_error_string(status)) }
        .to_string_lossy()
        .into_owned();
    Err(OpError::Cuda {
        op,
        call: "kernel launch",
        detail: format!("cudaError {status}: {text}"),
    })
}

/// The version of the CUDA runtime linked into the binary (e.g. 13000).
pub fn runtime_version() -> Result<i32> {
    let mut v = 0;
    // SAFETY: writes one int into a valid local.
    check("runtime_version", unsafe { mg_runtime_version(&mut v) })?;
    Ok(v)
}
