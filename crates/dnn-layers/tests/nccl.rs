//! The NCCL communicator on real GPUs (feature `nccl`): a one-rank communicator on GPU 0, and,
//! when the machine has two GPUs, two ranks in two processes (this test binary runs itself a
//! second time as rank 1 on GPU 1) exchanging the unique id through a file.
//!
//! Skipped with a message when there is no GPU or no libnccl.so.2; with `MAGMA_NCCL_REQUIRED=1`
//! (the GPU bundle's `run.sh` sets it) a missing NCCL fails instead.
#![cfg(feature = "nccl")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dnn_layers::distributed::Communicator;
use dnn_layers::distributed::bootstrap::FileBootstrap;
use dnn_layers::distributed::nccl::{self, NcclCommunicator};
use dnn_ops::{CudaBackend, Tensor};
use magma_tensor::MemoryKind;
use magma_tensor::cuda::CudaDevice;

/// Variables of the second process of the two-GPU test.
const WORKER_DIR: &str = "MAGMA_NCCL_TEST_WORKER_DIR";

fn backend() -> Option<&'static CudaBackend> {
    dnn_ops::cuda::test_backend()
}

/// A one-rank communicator on GPU 0, or `None` (with the reason) when the machine cannot.
fn single(test: &str) -> Option<NcclCommunicator> {
    let be = backend()?;
    match NcclCommunicator::new_single(be) {
        Ok(c) => Some(c),
        Err(e) if std::env::var("MAGMA_NCCL_REQUIRED").as_deref() == Ok("1") => {
            panic!("{test}: NCCL is required here (MAGMA_NCCL_REQUIRED=1): {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped, no NCCL communicator: {e}");
            None
        }
    }
}

/// `n` distinct values with many significant bits, some huge, tiny and negative.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            let mantissa = (x % 100_003) as f32 / 7.0 - 7_000.0;
            match i % 5 {
                0 => mantissa * 1e30,
                1 => mantissa * 1e-30,
                _ => mantissa,
            }
        })
        .collect()
}

fn device_tensor(be: &CudaBackend, shape: &[usize], seed: u32) -> Tensor {
    let n = shape.iter().product();
    be.device()
        .upload(&Tensor::from_vec(values(n, seed), shape).unwrap())
        .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_one_rank_all_reduce_is_the_identity_exactly_in_place() {
    let Some(mut comm) = single("all_reduce") else {
        return;
    };
    let be = backend().unwrap();
    println!("{} (NCCL {})", comm.describe(), nccl::version().unwrap());
    assert_eq!((comm.rank(), comm.size()), (0, 1));
    assert!(comm.describe().starts_with("nccl rank 0/1 on cuda:0"));

    let mut a = device_tensor(be, &[1_000_003], 1);
    let mut b = device_tensor(be, &[3, 5], 2);
    let mut host = Tensor::from_vec(values(77, 3), &[7, 11]).unwrap();
    let mut empty = Tensor::zeros(&[0, 4]);
    let expected = [
        a.to_vec().unwrap(),
        b.to_vec().unwrap(),
        host.to_vec().unwrap(),
    ];
    let a_ptr = a.device_ptr().unwrap();
    comm.all_reduce_sum(&mut [&mut a, &mut b, &mut host, &mut empty])
        .unwrap();
    assert_eq!(
        a.device_ptr().unwrap(),
        a_ptr,
        "device tensors are reduced in place"
    );
    assert_eq!(a.memory_kind(), MemoryKind::Device);
    assert_eq!(
        host.memory_kind(),
        MemoryKind::Host,
        "host tensors stay on the host"
    );
    assert_eq!(host.shape(), [7, 11]);
    assert_eq!(empty.shape(), [0, 4]);
    for (got, want) in [&a, &b, &host].iter().zip(&expected) {
        assert_eq!(bits(&got.to_vec().unwrap()), bits(want));
    }

    // A tensor sharing its storage is copied first: the other handle keeps its values.
    let original = device_tensor(be, &[64], 4);
    let mut shared = original.clone();
    comm.all_reduce_sum(&mut [&mut shared]).unwrap();
    assert_ne!(shared.device_ptr().unwrap(), original.device_ptr().unwrap());
    assert_eq!(
        bits(&shared.to_vec().unwrap()),
        bits(&original.to_vec().unwrap())
    );

    // Views (a permutation, a slice) become contiguous device tensors with the view's values.
    let base = device_tensor(be, &[4, 6], 5);
    let mut permuted = base.permute(&[1, 0]).unwrap();
    let mut slice = base.narrow(0, 1, 2).unwrap();
    let want_p = permuted.to_vec().unwrap();
    let want_s = slice.to_vec().unwrap();
    comm.all_reduce_sum(&mut [&mut permuted, &mut slice])
        .unwrap();
    assert!(permuted.is_contiguous() && slice.is_contiguous());
    assert_eq!(permuted.shape(), [6, 4]);
    assert_eq!(bits(&permuted.to_vec().unwrap()), bits(&want_p));
    assert_eq!(bits(&slice.to_vec().unwrap()), bits(&want_s));
    comm.barrier().unwrap();
}

#[test]
fn a_bucket_of_many_uneven_tensors_goes_in_one_call() {
    let Some(mut comm) = single("bucket") else {
        return;
    };
    let be = backend().unwrap();
    // The shapes of a small U-Net's gradients and more: 1 to 300k elements, some on the host.
    let shapes: Vec<Vec<usize>> = (0..60)
        .map(|i| match i % 6 {
            0 => vec![1 + i * 7],
            1 => vec![16, 3 + i % 5, 3, 3],
            2 => vec![1],
            3 => vec![(i * 4099) % 300_007 + 13],
            4 => vec![2, 1, 1, 1 + i],
            _ => vec![i + 2, 17],
        })
        .collect();
    let mut tensors: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i % 7 == 3 {
                Tensor::from_vec(values(s.iter().product(), i as u32), s).unwrap()
            } else {
                device_tensor(be, s, i as u32)
            }
        })
        .collect();
    let expected: Vec<Vec<u32>> = tensors.iter().map(|t| bits(&t.to_vec().unwrap())).collect();
    let mut refs: Vec<&mut Tensor> = tensors.iter_mut().collect();
    comm.all_reduce_sum(&mut refs).unwrap();
    for ((t, want), shape) in tensors.iter().zip(&expected).zip(&shapes) {
        assert_eq!(t.shape(), shape.as_slice());
        assert_eq!(&bits(&t.to_vec().unwrap()), want, "shape {shape:?}");
    }
}

#[test]
fn broadcast_and_f64_sums_on_one_rank() {
    let Some(mut comm) = single("broadcast") else {
        return;
    };
    let be = backend().unwrap();
    let mut d = device_tensor(be, &[5, 5], 9);
    let mut h = Tensor::from_vec(values(10, 10), &[10]).unwrap();
    let (want_d, want_h) = (d.to_vec().unwrap(), h.to_vec().unwrap());
    comm.broadcast(&mut [&mut d, &mut h], 0).unwrap();
    assert_eq!(bits(&d.to_vec().unwrap()), bits(&want_d));
    assert_eq!(bits(&h.to_vec().unwrap()), bits(&want_h));
    assert_eq!(h.memory_kind(), MemoryKind::Host);
    let err = comm.broadcast(&mut [&mut d], 1).unwrap_err().to_string();
    assert!(err.contains("rank 1") && err.contains("of 1"), "{err}");

    let original = [1e300, -2.5, 0.1, 3.0e-310, 123_456_789.123_456_78, 0.0];
    let mut sums = original;
    comm.all_reduce_sum_f64(&mut sums).unwrap();
    let to_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(to_bits(&sums), to_bits(&original));
    comm.all_reduce_sum_f64(&mut []).unwrap();
    // Larger than the first scratch buffer.
    let many: Vec<f64> = (0..1000).map(|i| i as f64 * 0.001 - 0.3).collect();
    let mut got = many.clone();
    comm.all_reduce_sum_f64(&mut got).unwrap();
    assert_eq!(to_bits(&got), to_bits(&many));
    comm.barrier().unwrap();
}

#[test]
fn the_file_bootstrap_makes_a_one_rank_communicator_and_cleans_up() {
    let Some(be) = backend() else { return };
    if single("file_bootstrap").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = FileBootstrap::new(dir.path(), "one-rank").unwrap();
    let mut comm = NcclCommunicator::with_file_bootstrap(be, 0, 1, &bootstrap).unwrap();
    assert!(
        !bootstrap.path().exists(),
        "rank 0 removes the id once all joined"
    );
    let mut t = device_tensor(be, &[33], 11);
    let want = t.to_vec().unwrap();
    comm.all_reduce_sum(&mut [&mut t]).unwrap();
    assert_eq!(bits(&t.to_vec().unwrap()), bits(&want));
    assert!(NcclCommunicator::with_file_bootstrap(be, 1, 1, &bootstrap).is_err());
}

/// Exact test values for the two-rank test: quarters, so that sums are exact.
fn quarters(n: usize, rank: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i % 1000) as f32 - 300.0) * 0.25 * (rank + 1) as f32)
        .collect()
}

/// What both ranks of the two-process test do; panics on any mismatch.
fn two_rank_body(rank: usize, be: &CudaBackend, dir: &std::path::Path) {
    let bootstrap = FileBootstrap::new(dir, "two-ranks")
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    let mut comm = NcclCommunicator::with_file_bootstrap(be, rank, 2, &bootstrap).unwrap();
    println!("{}", comm.describe());
    assert_eq!((comm.rank(), comm.size()), (rank, 2));

    let sizes = [1usize, 1000, 250_001, 7];
    let mut tensors: Vec<Tensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let t = Tensor::from_vec(quarters(n, rank), &[n]).unwrap();
            if i == 3 {
                t
            } else {
                be.device().upload(&t).unwrap()
            }
        })
        .collect();
    let mut refs: Vec<&mut Tensor> = tensors.iter_mut().collect();
    comm.all_reduce_sum(&mut refs).unwrap();
    for (t, &n) in tensors.iter().zip(&sizes) {
        let want: Vec<f32> = quarters(n, 0).iter().map(|x| x * 3.0).collect();
        assert_eq!(t.to_vec().unwrap(), want, "all-reduce of {n} values");
    }

    let mut b = be
        .device()
        .upload(&Tensor::from_vec(quarters(513, rank), &[513]).unwrap())
        .unwrap();
    comm.broadcast(&mut [&mut b], 1).unwrap();
    assert_eq!(
        b.to_vec().unwrap(),
        quarters(513, 1),
        "broadcast from rank 1"
    );

    let mut scalars = [rank as f64 + 0.5, 1e-3, -(rank as f64)];
    comm.all_reduce_sum_f64(&mut scalars).unwrap();
    assert_eq!(scalars, [2.0, 2e-3, -1.0]);
    comm.barrier().unwrap();
}

/// Rank 1 of `two_ranks_in_two_processes_when_there_are_two_gpus`: does nothing unless that test
/// started this process.
#[test]
fn nccl_rank_1_worker() {
    let Ok(dir) = std::env::var(WORKER_DIR) else {
        return;
    };
    let be = CudaBackend::new(1).expect("rank 1 needs GPU 1");
    two_rank_body(1, &be, std::path::Path::new(&dir));
    println!("rank 1: PASS");
}

#[test]
fn two_ranks_in_two_processes_when_there_are_two_gpus() {
    if std::env::var_os(WORKER_DIR).is_some() {
        return;
    }
    let gpus = CudaDevice::count();
    if gpus < 2 {
        eprintln!("two_ranks: skipped, {gpus} GPU(s) (needs 2)");
        return;
    }
    let Some(be) = backend() else { return };
    if single("two_ranks").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nccl_rank_1_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_DIR, dir.path())
        .stdin(Stdio::null())
        .spawn()
        .expect("starting rank 1");
    let child_pid = child.id();
    // A watchdog: when rank 1 fails or hangs, rank 0 may wait forever inside NCCL, so the
    // whole test process ends then.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    let _ = done.send(());
                    return;
                }
                Ok(Some(status)) => {
                    eprintln!("two_ranks: FAILED, rank 1 exited with {status}");
                    std::process::exit(1);
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    eprintln!("two_ranks: FAILED, rank 1 did not finish within 180 s");
                    std::process::exit(1);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    eprintln!("two_ranks: FAILED, cannot wait for rank 1: {e}");
                    std::process::exit(1);
                }
            }
        }
    });
    let pid = child_pid.to_string();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        two_rank_body(0, be, dir.path())
    }));
    if let Err(panic) = outcome {
        // Rank 1 may be stuck in a collective that rank 0 will never join.
        let _ = Command::new("kill").args(["-9", &pid]).status();
        std::panic::resume_unwind(panic);
    }
    finished
        .recv()
        .expect("the watchdog reports rank 1's success");
}
