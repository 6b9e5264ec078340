//! Gradient bucketing for host collectives: many small tensors are packed, in order, into a few
//! flat buffers of a fixed capacity, so a whole model's gradients take a handful of collective
//! calls instead of one per tensor (a U-Net has about a hundred, most of them a few hundred
//! values).
//!
//! [`Buckets::run`] streams the tensors through one reusable pair of buffers: it copies values
//! into the send buffer, and each time the buffer fills (and once at the end) hands it to the
//! collective, then copies the received values out. A tensor larger than a bucket, or one that
//! straddles a bucket boundary, is simply split across buckets. Every rank packs the same tensors
//! in the same order, so the buckets line up element for element.

use std::borrow::Cow;

use dnn_ops::Tensor;

use crate::error::{LayerError, Result};

/// The default bucket: 25 MiB of `f32`, as PyTorch DDP's `bucket_cap_mb`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// A collective over one bucket: reads the send buffer, fills the receive buffer (same length).
pub type BucketCollective<'a> = dyn FnMut(&[f32], &mut [f32]) -> Result<()> + 'a;

/// A reusable pair of flat `f32` buffers (send, receive) of a fixed capacity.
#[derive(Debug, Clone)]
pub struct Buckets {
    send: Vec<f32>,
    recv: Vec<f32>,
    capacity: usize,
}

impl Buckets {
    /// Buckets of `bytes` bytes (at least one `f32`). The buffers grow on first use, only as far
    /// as the tensors handed to [`Buckets::run`] need.
    pub fn with_bytes(bytes: usize) -> Self {
        Self {
            send: Vec::new(),
            recv: Vec::new(),
            capacity: (bytes / size_of::<f32>()).max(1),
        }
    }

    /// Capacity of one bucket, in `f32` values.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs `collective(send, recv)` over the values of `tensors`, bucket by bucket, and replaces
    /// every tensor by a contiguous host tensor of the same shape holding what was received.
    /// Returns the number of collective calls made (0 when the tensors hold no value).
    ///
    /// Host tensors are read in place; device tensors are downloaded first (the caller's backend
    /// uploads the results again when it next uses them). The tensors are replaced, never written
    /// through, so a storage shared with another tensor is left alone.
    pub fn run(
        &mut self,
        tensors: &mut [&mut Tensor],
        collective: &mut BucketCollective<'_>,
    ) -> Result<usize> {
        let total: usize = tensors.iter().map(|t| t.numel()).sum();
        let size = self.capacity.min(total);
        if self.send.len() < size {
            self.send.resize(size, 0.0);
            self.recv.resize(size, 0.0);
        }
        let (send, recv) = (&mut self.send[..size], &mut self.recv[..size]);
        let mut outputs: Vec<Vec<f32>> = tensors
            .iter()
            .map(|t| Vec::with_capacity(t.numel()))
            .collect();
        // (tensor, number of values) of each piece in the current bucket, in packing order.
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        let (mut filled, mut calls) = (0, 0);
        for (i, tensor) in tensors.iter().enumerate() {
            let values: Cow<'_, [f32]> = match tensor.host_data() {
                Ok(v) => Cow::Borrowed(v),
                Err(_) => Cow::Owned(tensor.to_vec()?),
            };
            let mut pos = 0;
            while pos < values.len() {
                let n = (size - filled).min(values.len() - pos);
                send[filled..filled + n].copy_from_slice(&values[pos..pos + n]);
                pieces.push((i, n));
                filled += n;
                pos += n;
                if filled == size {
                    flush(
                        &send[..filled],
                        &mut recv[..filled],
                        &mut pieces,
                        &mut outputs,
                        collective,
                    )?;
                    (filled, calls) = (0, calls + 1);
                }
            }
        }
        if filled > 0 {
            flush(
                &send[..filled],
                &mut recv[..filled],
                &mut pieces,
                &mut outputs,
                collective,
            )?;
            calls += 1;
        }
        for (tensor, values) in tensors.iter_mut().zip(outputs) {
            let shape = tensor.shape().to_vec();
            if values.len() != tensor.numel() {
                return Err(LayerError::Communicator(format!(
                    "bucketing returned {} values for a tensor of shape {shape:?}",
                    values.len()
                )));
            }
            **tensor = Tensor::from_vec(values, &shape)?;
        }
        Ok(calls)
    }
}

/// Runs the collective on one bucket and appends each piece of the result to its tensor's values.
fn flush(
    send: &[f32],
    recv: &mut [f32],
    pieces: &mut Vec<(usize, usize)>,
    outputs: &mut [Vec<f32>],
    collective: &mut BucketCollective<'_>,
) -> Result<()> {
    collective(send, recv)?;
    let mut at = 0;
    for (i, len) in pieces.drain(..) {
        outputs[i].extend_from_slice(&recv[at..at + len]);
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<Tensor> {
        vec![
            Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[2, 3]).unwrap(),
            Tensor::scalar(7.0),
            Tensor::zeros(&[0]),
            Tensor::from_vec((0..11).map(|v| 100.0 + v as f32).collect(), &[11]).unwrap(),
        ]
    }

    /// A fake "all-reduce" over 3 identical ranks: every value times 3.
    fn triple(calls: &mut Vec<usize>) -> impl FnMut(&[f32], &mut [f32]) -> Result<()> + '_ {
        move |send, recv| {
            calls.push(send.len());
            for (r, s) in recv.iter_mut().zip(send) {
                *r = 3.0 * s;
            }
            Ok(())
        }
    }

    #[test]
    fn small_buckets_split_tensors_and_results_land_in_place() {
        for (bytes, expected) in [
            (4 * 5, vec![5, 5, 5, 3]),
            (4 * 7, vec![7, 7, 4]),
            (4 * 1000, vec![18]),
            (1, vec![1; 18]),
        ] {
            let mut ts = tensors();
            let mut refs: Vec<&mut Tensor> = ts.iter_mut().collect();
            let mut calls = Vec::new();
            let mut b = Buckets::with_bytes(bytes);
            let n = b.run(&mut refs, &mut triple(&mut calls)).unwrap();
            assert_eq!(calls, expected, "bucket of {bytes} bytes");
            assert_eq!(n, expected.len());
            for (t, orig) in ts.iter().zip(tensors()) {
                assert_eq!(t.shape(), orig.shape());
                let want: Vec<f32> = orig.to_vec().unwrap().iter().map(|v| 3.0 * v).collect();
                assert_eq!(t.to_vec().unwrap(), want);
            }
        }
    }

    #[test]
    fn shared_storage_and_views_are_replaced_not_written_through() {
        let base = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[3, 4]).unwrap();
        let mut alias = base.clone();
        let mut view = base.permute(&[1, 0]).unwrap();
        let mut calls = Vec::new();
        let mut refs = vec![&mut alias, &mut view];
        Buckets::with_bytes(DEFAULT_BUCKET_BYTES)
            .run(&mut refs, &mut triple(&mut calls))
            .unwrap();
        assert_eq!(calls, vec![24]);
        assert_eq!(base.to_vec().unwrap()[5], 5.0);
        assert_eq!(alias.to_vec().unwrap()[5], 15.0);
        assert_eq!(view.shape(), [4, 3]);
        assert_eq!(view.get(&[1, 2]).unwrap(), 3.0 * base.get(&[2, 1]).unwrap());
    }

    #[test]
    fn nothing_to_reduce_makes_no_call_and_errors_propagate() {
        let mut empty = Tensor::zeros(&[0]);
        let mut calls = Vec::new();
        let n = Buckets::with_bytes(64)
            .run(&mut [&mut empty], &mut triple(&mut calls))
            .unwrap();
        assert_eq!((n, calls.len()), (0, 0));
        let mut t = Tensor::ones(&[4]);
        let err = Buckets::with_bytes(64)
            .run(&mut [&mut t], &mut |_, _| {
                Err(LayerError::Communicator("peer gone".into()))
            })
            .unwrap_err();
        assert!(err.to_string().contains("peer gone"));
    }
}
