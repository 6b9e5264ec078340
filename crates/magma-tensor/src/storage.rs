//! Where a tensor's elements live: host memory, and with the `cuda` feature device or managed memory.

use crate::Result;
#[cfg(feature = "device-seam")]
use crate::TensorError;
#[cfg(feature = "device-seam")]
use crate::device::{DeviceBuffer, ManagedBuffer};

/// The memory kinds of MagmaDNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryKind {
    /// Ordinary host memory.
    Host,
    /// Accelerator memory only.
    #[cfg(feature = "device-seam")]
    Device,
    /// A host and a device copy, synchronised explicitly.
    #[cfg(feature = "device-seam")]
    Managed,
}

/// The elements behind one or more tensor views.
#[derive(Debug)]
pub enum Storage {
    /// `f32` values in host memory.
    Host(Vec<f32>),
    /// `f32` values in accelerator memory.
    #[cfg(feature = "device-seam")]
    Device(Box<dyn DeviceBuffer>),
    /// Host and device copies with explicit synchronisation.
    #[cfg(feature = "device-seam")]
    Managed(ManagedBuffer),
}

impl Storage {
    /// The memory kind of this storage.
    pub fn kind(&self) -> MemoryKind {
        match self {
            Storage::Host(_) => MemoryKind::Host,
            #[cfg(feature = "device-seam")]
            Storage::Device(_) => MemoryKind::Device,
            #[cfg(feature = "device-seam")]
            Storage::Managed(_) => MemoryKind::Managed,
        }
    }

    /// Number of elements held.
    pub fn len(&self) -> usize {
        match self {
            Storage::Host(v) => v.len(),
            #[cfg(feature = "device-seam")]
            Storage::Device(d) => d.len(),
            #[cfg(feature = "device-seam")]
            Storage::Managed(m) => m.len(),
        }
    }

    /// Whether no element is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Host-readable elements (host memory, or a managed buffer whose host copy is current).
    #[cfg_attr(not(feature = "device-seam"), allow(unused_variables))]
    pub fn host(&self, op: &'static str) -> Result<&[f32]> {
        match self {
            Storage::Host(v) => Ok(v),
            #[cfg(feature = "device-seam")]
            Storage::Device(_) => Err(TensorError::NotOnHost {
                op,
                kind: MemoryKind::Device,
            }),
            #[cfg(feature = "device-seam")]
            Storage::Managed(m) => m.host().map_err(|_| TensorError::StaleHostCopy { op }),
        }
    }

    /// Host-writable elements.
    #[cfg_attr(not(feature = "device-seam"), allow(unused_variables))]
    pub fn host_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        match self {
            Storage::Host(v) => Ok(v),
            #[cfg(feature = "device-seam")]
            Storage::Device(_) => Err(TensorError::NotOnHost {
                op,
                kind: MemoryKind::Device,
            }),
            #[cfg(feature = "device-seam")]
            Storage::Managed(m) => m.host_mut().map_err(|_| TensorError::StaleHostCopy { op }),
        }
    }

    /// The host elements, taken out (an empty vector is left behind), or `None` for other kinds.
    pub(crate) fn take_host(&mut self) -> Option<Vec<f32>> {
        match self {
            Storage::Host(v) => Some(std::mem::take(v)),
            #[cfg(feature = "device-seam")]
            _ => None,
        }
    }

    /// A deep copy.
    pub fn try_clone(&self) -> Result<Storage> {
        Ok(match self {
            Storage::Host(v) => Storage::Host(v.clone()),
            #[cfg(feature = "device-seam")]
            Storage::Device(d) => Storage::Device(d.try_clone()?),
            #[cfg(feature = "device-seam")]
            Storage::Managed(m) => Storage::Managed(m.try_clone()?),
        })
    }
}

/// Host elements go to the buffer pool (kept for reuse when it is on, else freed).
impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(v) = self.take_host() {
            crate::host_buffer_pool::recycle(v);
        }
    }
}
