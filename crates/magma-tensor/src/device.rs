//! The seam between host tensors and accelerator memory (only with the `cuda` feature).
//!
//! MagmaDNN had three memory kinds: host, device, and managed (a host and a device copy with
//! explicit synchronisation). This module defines the trait a device backend implements
//! ([`DeviceBuffer`]) and the managed buffer's coherence rules ([`ManagedBuffer`]); the CUDA
//! backend supplies a cust-backed `DeviceBuffer`.

use std::fmt::Debug;

use crate::{Result, TensorError};

/// A buffer of `f32` in accelerator memory.
pub trait DeviceBuffer: Send + Sync + Debug {
    /// Number of `f32` elements.
    fn len(&self) -> usize;
    /// Whether the buffer holds no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Which device the buffer lives on.
    fn ordinal(&self) -> usize;
    /// The raw device address of the first element (what kernels and cuDNN are given).
    fn device_ptr(&self) -> u64;
    /// Copies `src` (exactly `len()` values) to the device. It may return before the copy has
    /// run (work queued after it sees the values); `src` is free to change at once.
    fn copy_from_host(&mut self, src: &[f32]) -> Result<()>;
    /// Copies the buffer into `dst` (exactly `len()` values).
    fn copy_to_host(&self, dst: &mut [f32]) -> Result<()>;
    /// A new device buffer with the same contents.
    fn try_clone(&self) -> Result<Box<dyn DeviceBuffer>>;
}

/// Which copy of a managed buffer was written last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coherence {
    /// Both copies hold the same values.
    InSync,
    /// The host copy was written after the last synchronisation.
    HostNewer,
    /// The device copy was written after the last synchronisation.
    DeviceNewer,
}

/// A host copy and a device copy of the same values, synchronised explicitly.
///
/// Reading a stale copy is an error, never silent: write through [`ManagedBuffer::host_mut`] or
/// [`ManagedBuffer::device_mut`], then call [`ManagedBuffer::sync_to_device`] or
/// [`ManagedBuffer::sync_to_host`].
#[derive(Debug)]
pub struct ManagedBuffer {
    host: Vec<f32>,
    device: Box<dyn DeviceBuffer>,
    coherence: Coherence,
}

impl ManagedBuffer {
    /// Wraps `host` values and a device buffer of the same length; the host copy is newer.
    pub fn new(host: Vec<f32>, device: Box<dyn DeviceBuffer>) -> Result<Self> {
        if host.len() != device.len() {
            return Err(TensorError::Device(format!(
                "managed buffer: host copy has {} elements, device copy {}",
                host.len(),
                device.len()
            )));
        }
        Ok(Self {
            host,
            device,
            coherence: Coherence::HostNewer,
        })
    }

    pub fn len(&self) -> usize {
        self.host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    pub fn coherence(&self) -> Coherence {
        self.coherence
    }

    /// The host copy, if it is not stale.
    pub fn host(&self) -> Result<&[f32]> {
        match self.coherence {
            Coherence::DeviceNewer => Err(TensorError::StaleHostCopy {
                op: "managed host read",
            }),
            _ => Ok(&self.host),
        }
    }

    /// Writable host copy; marks the device copy stale.
    pub fn host_mut(&mut self) -> Result<&mut [f32]> {
        if self.coherence == Coherence::DeviceNewer {
            return Err(TensorError::StaleHostCopy {
                op: "managed host write",
            });
        }
        self.coherence = Coherence::HostNewer;
        Ok(&mut self.host)
    }

    /// The device copy, if it is not stale.
    pub fn device(&self) -> Result<&dyn DeviceBuffer> {
        match self.coherence {
            Coherence::HostNewer => Err(TensorError::StaleDeviceCopy {
                op: "managed device read",
            }),
            _ => Ok(self.device.as_ref()),
        }
    }

    /// Writable device copy; marks the host copy stale.
    pub fn device_mut(&mut self) -> Result<&mut dyn DeviceBuffer> {
        if self.coherence == Coherence::HostNewer {
            return Err(TensorError::StaleDeviceCopy {
                op: "managed device write",
            });
        }
        self.coherence = Coherence::DeviceNewer;
        Ok(self.device.as_mut())
    }

    /// Copies the host values to the device if the host copy is newer.
    pub fn sync_to_device(&mut self) -> Result<()> {
        if self.coherence == Coherence::HostNewer {
            self.device.copy_from_host(&self.host)?;
            self.coherence = Coherence::InSync;
        }
        Ok(())
    }

    /// Copies the device values to the host if the device copy is newer.
    pub fn sync_to_host(&mut self) -> Result<()> {
        if self.coherence == Coherence::DeviceNewer {
            self.device.copy_to_host(&mut self.host)?;
            self.coherence = Coherence::InSync;
        }
        Ok(())
    }

    pub(crate) fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            host: self.host.clone(),
            device: self.device.try_clone()?,
            coherence: self.coherence,
        })
    }
}
