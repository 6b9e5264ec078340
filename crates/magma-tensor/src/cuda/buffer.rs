//! The cust-backed device buffer behind `Storage::Device`.

use std::sync::Arc;

use super::device::CudaDevice;
use crate::Result;
use crate::device::DeviceBuffer;

/// `len` `f32` in the memory of one GPU, returned to its device's cache when dropped.
#[derive(Debug)]
pub struct CudaBuffer {
    device: Arc<CudaDevice>,
    ptr: u64,
    len: usize,
    bytes: usize,
}

impl CudaBuffer {
    pub(crate) fn from_raw_parts(
        device: Arc<CudaDevice>,
        ptr: u64,
        len: usize,
        bytes: usize,
    ) -> Self {
        Self {
            device,
            ptr,
            len,
            bytes,
        }
    }

    /// The raw device address of the first element.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// Number of `f32` elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        self.device.release(self.ptr, self.bytes, self.len * 4);
    }
}

impl DeviceBuffer for CudaBuffer {
    fn len(&self) -> usize {
        self.len
    }

    fn ordinal(&self) -> usize {
        self.device.ordinal()
    }

    fn device_ptr(&self) -> u64 {
        self.ptr
    }

    fn copy_from_host(&mut self, src: &[f32]) -> Result<()> {
        if src.len() != self.len {
            return Err(crate::TensorError::DataLength {
                shape: vec![self.len],
                expected: self.len,
                actual: src.len(),
            });
        }
        self.device.copy_host_to_device(src, self.ptr)
    }

    fn copy_to_host(&self, dst: &mut [f32]) -> Result<()> {
        if dst.len() != self.len {
            return Err(crate::TensorError::DataLength {
                shape: vec![self.len],
                expected: self.len,
                actual: dst.len(),
            });
        }
        self.device.copy_device_to_host(self.ptr, dst)
    }

    fn try_clone(&self) -> Result<Box<dyn DeviceBuffer>> {
        let copy = self.device.alloc(self.len)?;
        self.device
            .copy_device_to_device(self.ptr, copy.device_ptr(), self.len)?;
        Ok(Box::new(copy))
    }
}
