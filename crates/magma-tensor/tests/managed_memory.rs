//! Coherence rules of device and managed memory, checked with a host-emulated device buffer.
#![cfg(feature = "device-seam")]

use magma_tensor::device::{Coherence, DeviceBuffer, ManagedBuffer};
use magma_tensor::{MemoryKind, Result, Storage, Tensor, TensorError};

/// A `DeviceBuffer` that keeps its "device" copy in host memory, to test the seam without a GPU.
#[derive(Debug, Clone)]
struct EmulatedDevice(Vec<f32>);

impl DeviceBuffer for EmulatedDevice {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn ordinal(&self) -> usize {
        0
    }
    fn device_ptr(&self) -> u64 {
        self.0.as_ptr() as u64
    }
    fn copy_from_host(&mut self, src: &[f32]) -> Result<()> {
        self.0.copy_from_slice(src);
        Ok(())
    }
    fn copy_to_host(&self, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(&self.0);
        Ok(())
    }
    fn try_clone(&self) -> Result<Box<dyn DeviceBuffer>> {
        Ok(Box::new(self.clone()))
    }
}

#[test]
fn device_tensors_refuse_host_reads() {
    let t = Tensor::from_storage(
        Storage::Device(Box::new(EmulatedDevice(vec![0.0; 4]))),
        &[2, 2],
    )
    .unwrap();
    assert_eq!(t.memory_kind(), MemoryKind::Device);
    assert!(matches!(t.host_data(), Err(TensorError::NotOnHost { .. })));
    // Copies out are explicit downloads and do work.
    assert_eq!(t.to_vec().unwrap(), vec![0.0; 4]);
    assert_eq!(t.to_host().unwrap().memory_kind(), MemoryKind::Host);
}

#[test]
fn managed_buffers_need_explicit_sync() {
    let mut m = ManagedBuffer::new(vec![1.0, 2.0], Box::new(EmulatedDevice(vec![0.0; 2]))).unwrap();
    assert_eq!(m.coherence(), Coherence::HostNewer);
    assert!(m.device().is_err(), "device copy is stale before sync");
    m.sync_to_device().unwrap();
    assert_eq!(m.coherence(), Coherence::InSync);
    let mut back = [0.0; 2];
    m.device().unwrap().copy_to_host(&mut back).unwrap();
    assert_eq!(back, [1.0, 2.0]);
    m.device_mut().unwrap().copy_from_host(&[5.0, 6.0]).unwrap();
    assert!(matches!(m.host(), Err(TensorError::StaleHostCopy { .. })));
    m.sync_to_host().unwrap();
    assert_eq!(m.host().unwrap(), &[5.0, 6.0]);
    assert!(ManagedBuffer::new(vec![1.0], Box::new(EmulatedDevice(vec![0.0; 2]))).is_err());
}

/// `values` (exact in bf16) packed two per word, NHWC order, as a GPU kernel writes them.
fn packed_bf16(values_nhwc: &[f32]) -> Vec<f32> {
    values_nhwc
        .chunks(2)
        .map(|p| {
            let lo = p[0].to_bits() >> 16;
            let hi = p.get(1).map_or(0, |v| v.to_bits() >> 16);
            f32::from_bits(lo | (hi << 16))
        })
        .collect()
}

#[test]
fn bf16_nhwc_device_tensors_widen_on_read_and_hide_their_address() {
    // Logical [n=1, c=3, h=1, w=2]: NHWC order is (w0: c0 c1 c2), (w1: c0 c1 c2).
    let nhwc = [1.0, 2.0, 3.0, -0.5, 0.25, 8.0];
    let t = Tensor::from_device_bf16_channels_last(
        Storage::Device(Box::new(EmulatedDevice(packed_bf16(&nhwc)))),
        [1, 3, 1, 2],
    )
    .unwrap();
    assert_eq!(t.dtype(), magma_tensor::DType::BF16);
    // Logical NCHW order: c0 (w0, w1), c1 (..), c2 (..).
    assert_eq!(t.to_vec().unwrap(), vec![1.0, -0.5, 2.0, 0.25, 3.0, 8.0]);
    assert_eq!(t.get(&[0, 2, 0, 1]).unwrap(), 8.0);
    let host = t.contiguous().unwrap();
    assert_eq!(host.dtype(), magma_tensor::DType::F32);
    assert_eq!(host.to_vec().unwrap(), t.to_vec().unwrap());
    assert!(
        t.device_ptr().is_err(),
        "f32 code must not get a bf16 address"
    );
    assert!(t.channels_last_ptr().is_ok());
    assert!(t.narrow(1, 1, 1).unwrap().channels_last_ptr().is_err());
    // The storage must hold exactly numel/2 words.
    let short = Storage::Device(Box::new(EmulatedDevice(vec![0.0; 2])));
    assert!(Tensor::from_device_bf16_channels_last(short, [1, 3, 1, 2]).is_err());
}

#[test]
fn f32_nhwc_device_tensors_read_in_logical_order_and_hide_their_address_from_nchw_code() {
    // Logical [n=1, c=3, h=1, w=2] in NHWC order: (w0: c0 c1 c2), (w1: c0 c1 c2).
    let nhwc = vec![1.0, 2.0, 3.0, -0.5, 0.25, 8.0];
    let t = Tensor::from_device_channels_last(
        Storage::Device(Box::new(EmulatedDevice(nhwc))),
        [1, 3, 1, 2],
        magma_tensor::DType::F32,
    )
    .unwrap();
    assert_eq!(t.dtype(), magma_tensor::DType::F32);
    assert_eq!(t.to_vec().unwrap(), vec![1.0, -0.5, 2.0, 0.25, 3.0, 8.0]);
    assert!(
        t.device_ptr().is_err(),
        "NCHW code must not read an NHWC tensor as if it were contiguous"
    );
    assert!(t.channels_last_ptr().is_ok());
    assert!(t.narrow(1, 0, 2).unwrap().channels_last_ptr().is_err());
    // f32 storage holds exactly numel values.
    let short = Storage::Device(Box::new(EmulatedDevice(vec![0.0; 3])));
    assert!(
        Tensor::from_device_channels_last(short, [1, 3, 1, 2], magma_tensor::DType::F32).is_err()
    );
}
