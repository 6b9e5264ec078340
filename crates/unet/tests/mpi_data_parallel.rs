//! Data-parallel training under MPI is the same training as one process with the global batch.
//!
//! Run under an MPI launcher, any number of ranks (`cargo xtask test` runs 2):
//!
//! ```sh
//! cargo test --release -p unet --features mpi --test mpi_data_parallel --no-run
//! mpirun -np 2 --oversubscribe target/release/deps/mpi_data_parallel-<hash>
//! ```
//!
//! A `harness = false` binary: MPI can be initialised only once per process, so every check
//! runs in order in `main`. A failed check on any rank aborts the whole job (`MPI_Abort`), since
//! the other ranks may be waiting in a collective; on success rank 0 prints a libtest-style
//! `test result:` line. `MPI_TEST_VERBOSE=1` (pass it on with `mpirun -x MPI_TEST_VERBOSE`)
//! prints every parameter's difference.
//!
//! The gradient check compares one step's averaged gradients with one process's gradients of
//! the whole batch: they agree to about 2e-7 relative, although a smaller per-process batch may
//! choose another convolution algorithm (the CPU filter gradient takes Winograd only with enough
//! tiles per thread, as cuDNN picks algorithms by shape). The weight check after 3 Adam steps
//! allows 1e-4: Adam's update `m̂ / (√v̂ + ε)` turns rounding-level gradient differences into far
//! larger step differences wherever the moment `m` nearly cancels (measured: gradients 2.3e-7,
//! weights 1.7e-5 relative with 1 thread per rank, where batch 2 and batch 4 take different
//! filter-gradient algorithms; 7e-7 where they take the same). Gradients left out of the
//! collective are far off (one layer's: 0.6 relative, tried). Both checks want a power-of-two number of ranks: then
//! dividing the summed gradients by N is exact. With 3 ranks Adam's first steps, nearly
//! `lr · sign(g)`, turn gradient elements that are almost zero into differences of ~1e-3
//! relative in 3 steps; the checks are then reported as ignored.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dnn_layers::distributed::Communicator;
use dnn_layers::distributed::bucket::DEFAULT_BUCKET_BYTES;
use dnn_layers::distributed::mpi::MpiCommunicator;
use dnn_layers::{Mode, Module};
use dnn_ops::{CpuBackend, Graph, Tensor};
use magma_tensor::SeededRng;
use unet::train::{
    AugmentKind, LossKind, TrainConfig, TrainRun, TrainSummary, all_reduce_gradients,
};
use unet::{UNet, UNetConfig, checkpoint};

type Check = Result<(), String>;

fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(msg()) }
}

/// All-reduce across several buckets, the f64 sums, broadcast and barrier.
fn collectives(comm: &mut MpiCommunicator) -> Check {
    let (rank, n) = (comm.rank() as f32, comm.size() as f32);
    // 3 + 1 + 0 + 40 values through buckets of 10: five collective calls.
    let mut ts = [
        Tensor::from_vec(vec![rank + 1.0, 2.0, rank * 3.0], &[3]).map_err(|e| e.to_string())?,
        Tensor::scalar(rank),
        Tensor::zeros(&[0]),
        Tensor::from_vec((0..40).map(|i| i as f32 * (rank + 1.0)).collect(), &[4, 10])
            .map_err(|e| e.to_string())?,
    ];
    let calls = comm.collective_calls();
    let mut refs: Vec<&mut Tensor> = ts.iter_mut().collect();
    comm.all_reduce_sum(&mut refs).map_err(|e| e.to_string())?;
    if comm.size() > 1 {
        ensure(comm.collective_calls() - calls == 5, || {
            format!(
                "{} collective calls, wanted 5",
                comm.collective_calls() - calls
            )
        })?;
    }
    let ranks_sum = n * (n - 1.0) / 2.0;
    let want = [
        vec![ranks_sum + n, 2.0 * n, 3.0 * ranks_sum],
        vec![ranks_sum],
        vec![],
        (0..40).map(|i| i as f32 * (ranks_sum + n)).collect(),
    ];
    for (t, w) in ts.iter().zip(&want) {
        let got = t.to_vec().map_err(|e| e.to_string())?;
        ensure(&got == w, || {
            format!("all_reduce_sum gave {got:?}, wanted {w:?}")
        })?;
    }
    ensure(ts[3].shape() == [4, 10], || {
        "all_reduce_sum lost a shape".into()
    })?;

    let mut values = [1.5, f64::from(rank)];
    comm.all_reduce_sum_f64(&mut values)
        .map_err(|e| e.to_string())?;
    ensure(values == [1.5 * f64::from(n), f64::from(ranks_sum)], || {
        format!("all_reduce_sum_f64 gave {values:?}")
    })?;

    let root = comm.size() - 1;
    let mut mine = Tensor::full(&[7], rank);
    comm.broadcast(&mut [&mut mine], root)
        .map_err(|e| e.to_string())?;
    let got = mine.to_vec().map_err(|e| e.to_string())?;
    ensure(got == vec![root as f32; 7], || {
        format!("broadcast gave {got:?}")
    })?;
    ensure(comm.broadcast(&mut [], comm.size()).is_err(), || {
        "broadcast from a rank outside the world was accepted".into()
    })?;
    comm.barrier().map_err(|e| e.to_string())
}

/// Per-rank batch of the training check, and its steps per epoch.
const BATCH: usize = 2;
const STEPS: usize = 3;
/// Largest relative weight difference after [`STEPS`] Adam steps (see the module's notes).
const WEIGHT_TOLERANCE: f64 = 1e-4;

fn train_config(data: &Path, batch: usize, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: data.to_path_buf(),
        split: "all".into(),
        val_data: None,
        val_split: "all".into(),
        size: 32,
        loss: LossKind::Ce,
        epochs,
        batch,
        lr: 2e-3,
        seed: 5,
        // Identical data: no augmentation (it would be identical too, seeded per image, but this
        // keeps the check to the data-parallel arithmetic).
        augment: AugmentKind::None,
        workers: 1,
        skip_nonfinite: 0,
    }
}

/// Frozen-free, BN-free U-Net: batch statistics would differ between B and N·B by design.
fn unet_config() -> UNetConfig {
    UNetConfig::new(3, 3)
        .with_base(4)
        .with_depth(2)
        .with_batch_norm(false)
}

fn weights(path: &Path) -> Result<Vec<(String, Vec<f32>)>, String> {
    let ck = checkpoint::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let model = ck.build_model(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    model.visit_parameters(&mut |p| {
        out.push((p.name().to_string(), p.value().to_vec().unwrap_or_default()))
    });
    Ok(out)
}

/// Largest relative difference of any parameter tensor (max |a − b| over max |b|).
fn max_relative_difference(a: &Path, b: &Path) -> Result<(f64, String), String> {
    let (wa, wb) = (weights(a)?, weights(b)?);
    ensure(wa.len() == wb.len() && !wa.is_empty(), || {
        format!(
            "{} and {} hold different parameters",
            a.display(),
            b.display()
        )
    })?;
    worst_relative_difference(&wa, &wb, "w")
}

/// The parameter with the largest relative difference between two lists of named values in the
/// same order (max |a − b| over max |b|, each printed with `MPI_TEST_VERBOSE`; `symbol` names
/// the values there).
fn worst_relative_difference(
    a: &[(String, Vec<f32>)],
    b: &[(String, Vec<f32>)],
    symbol: &str,
) -> Result<(f64, String), String> {
    let mut worst = (0.0f64, String::new());
    for ((name, x), (other, y)) in a.iter().zip(b) {
        ensure(name == other && x.len() == y.len(), || {
            format!("parameter {name} vs {other}")
        })?;
        let scale = y.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
        let diff = x
            .iter()
            .zip(y)
            .fold(0.0f64, |m, (p, q)| m.max(f64::from((p - q).abs())));
        let rel = diff / scale.max(1e-12);
        if std::env::var_os("MPI_TEST_VERBOSE").is_some() {
            println!(
                "  {name}: max |diff| {diff:.3e}, max |{symbol}| {scale:.3e}, relative {rel:.3e}"
            );
        }
        if rel > worst.0 || worst.1.is_empty() {
            worst = (rel, name.clone());
        }
    }
    Ok(worst)
}

fn run(
    config: &TrainConfig,
    out: &Path,
    resume: Option<&Path>,
    comm: Option<&mut MpiCommunicator>,
) -> Result<TrainSummary, String> {
    let backend = CpuBackend::new();
    let run = TrainRun {
        out: out.to_path_buf(),
        progress: false,
    };
    let ck = match resume {
        Some(p) => Some(checkpoint::load(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let resume = ck.as_ref().zip(resume);
    let mut log = |_: &str| {};
    let result = match comm {
        Some(comm) => unet::train::train_distributed(
            config,
            &unet_config(),
            &run,
            &backend,
            resume,
            comm,
            &mut log,
        ),
        None => unet::train::train(config, &unet_config(), &run, &backend, resume, &mut log),
    };
    result.map_err(|e| e.to_string())
}

/// One step's gradients, summed across N ranks of B images and divided by N (what training
/// applies), against one process's gradients of all N·B images: equal to rounding, whatever
/// convolution algorithm each batch size chooses. A wrong averaging factor, a parameter left out
/// of the collective or a rank's images counted twice would be off by far more than 1e-5.
fn gradients_are_the_full_batch_gradient(comm: &mut MpiCommunicator) -> Check {
    let (rank, n) = (comm.rank(), comm.size());
    let backend = CpuBackend::new();
    let side = 32;
    let mut rng = SeededRng::new(11);
    let images: Vec<f32> = (0..n * BATCH * 3 * side * side)
        .map(|_| rng.normal(0.0, 1.0))
        .collect();
    let masks: Vec<f32> = (0..n * BATCH * side * side)
        .map(|_| rng.below(3) as f32)
        .collect();
    let mut gradients = |first: usize, count: usize| -> Result<Vec<(String, Vec<f32>)>, String> {
        let (px, pm) = (3 * side * side, side * side);
        let x = Tensor::from_vec(
            images[first * px..(first + count) * px].to_vec(),
            &[count, 3, side, side],
        )
        .map_err(|e| e.to_string())?;
        let y = Tensor::from_vec(
            masks[first * pm..(first + count) * pm].to_vec(),
            &[count, side, side],
        )
        .map_err(|e| e.to_string())?;
        let mut model =
            UNet::new(&unet_config(), &mut SeededRng::new(7)).map_err(|e| e.to_string())?;
        let g = Graph::new(&backend);
        let input = g.input(x);
        let logits = model
            .forward(&g, input, Mode::Train)
            .map_err(|e| e.to_string())?;
        let loss = LossKind::Ce
            .build()
            .compute(&g, logits, &y)
            .map_err(|e| e.to_string())?;
        let mut grads = g.backward(loss).map_err(|e| e.to_string())?;
        drop(g);
        if count == BATCH && n > 1 {
            all_reduce_gradients(comm, &backend, &model, &mut grads, &mut [])
                .map_err(|e| e.to_string())?;
        }
        let mut out = Vec::new();
        model.visit_parameters(&mut |p| {
            if let Some(t) = grads.param(p.id()) {
                out.push((p.name().to_string(), t.to_vec().unwrap_or_default()));
            }
        });
        Ok(out)
    };
    let reduced = gradients(rank * BATCH, BATCH)?;
    if rank != 0 {
        return share_outcome(comm, Ok(()));
    }
    let outcome = (|| {
        let whole = gradients(0, n * BATCH)?;
        ensure(reduced.len() == whole.len() && !whole.is_empty(), || {
            format!(
                "{} reduced gradients, {} whole-batch ones",
                reduced.len(),
                whole.len()
            )
        })?;
        let worst = worst_relative_difference(&reduced, &whole, "g")?;
        println!(
            "one step: {n} ranks × batch {BATCH} vs 1 × {}: max relative gradient difference {:.2e} ({})",
            n * BATCH,
            worst.0,
            worst.1
        );
        ensure(worst.0 < 1e-5, || {
            format!("gradients differ: {:.3e} relative in {}", worst.0, worst.1)
        })
    })();
    share_outcome(comm, outcome)
}

/// N ranks with batch B, then resumed by every rank, against one process with batch N·B.
fn same_weights_as_one_process(comm: &mut MpiCommunicator, dir: &Path) -> Check {
    let (rank, n) = (comm.rank(), comm.size());
    let data = dir.join("pets");
    if rank == 0 {
        let _ = std::fs::remove_dir_all(dir);
        // Square images of one size: nothing is padded, so no pixel is ignored and every
        // rank's mean loss weighs its pixels alike.
        let config = dnn_data::SyntheticConfig {
            images: n * BATCH * STEPS,
            size: [36, 36],
            size_jitter: 0.0,
            test_fraction: 0.0,
            seed: 21,
            ..dnn_data::SyntheticConfig::default()
        };
        dnn_data::generate_synthetic_pets(&data, &config).map_err(|e| e.to_string())?;
    }
    comm.barrier().map_err(|e| e.to_string())?;

    let (parallel, single) = (dir.join("parallel"), dir.join("single"));
    let p1 = run(&train_config(&data, BATCH, 1), &parallel, None, Some(comm))?;
    ensure(rank != 0 || parallel.join("last.h5").exists(), || {
        "rank 0 wrote no last.h5".into()
    })?;
    let mut outcome = Ok(());
    if rank == 0 {
        outcome = (|| {
            let s1 = run(&train_config(&data, n * BATCH, 1), &single, None, None)?;
            let (rel, name) =
                max_relative_difference(&parallel.join("last.h5"), &single.join("last.h5"))?;
            println!(
                "after {STEPS} steps: {n} ranks × batch {BATCH} vs 1 × {}: max relative weight \
                 difference {rel:.2e} ({name}); train loss {:.6} vs {:.6}",
                n * BATCH,
                p1.history[0].train_loss,
                s1.history[0].train_loss
            );
            ensure(rel < WEIGHT_TOLERANCE, || {
                format!("weights differ after one epoch: {rel:.3e} relative in {name}")
            })?;
            let (lp, ls) = (p1.history[0].train_loss, s1.history[0].train_loss);
            ensure((lp - ls).abs() <= 1e-5 * ls.abs(), || {
                format!("train loss {lp} (parallel) vs {ls} (single)")
            })
        })();
    }
    share_outcome(comm, outcome)?;

    // Every rank resumes from rank 0's checkpoint for a second epoch.
    let p2 = run(
        &train_config(&data, BATCH, 2),
        &parallel,
        Some(&parallel.join("last.h5")),
        Some(comm),
    )?;
    ensure(p2.history.len() == 2, || {
        format!(
            "rank {rank}: resumed history has {} epochs",
            p2.history.len()
        )
    })?;
    let mut outcome = Ok(());
    if rank == 0 {
        outcome = (|| {
            run(
                &train_config(&data, n * BATCH, 2),
                &single,
                Some(&single.join("last.h5")),
                None,
            )?;
            let (rel, name) =
                max_relative_difference(&parallel.join("last.h5"), &single.join("last.h5"))?;
            println!(
                "after resuming for {STEPS} more steps: max relative difference {rel:.2e} ({name})"
            );
            ensure(rel < WEIGHT_TOLERANCE, || {
                format!("weights differ after the resumed epoch: {rel:.3e} relative in {name}")
            })
        })();
    }
    share_outcome(comm, outcome)
}

/// Rank 0's verdict on every rank.
fn share_outcome(comm: &mut MpiCommunicator, outcome: Check) -> Check {
    let mut failed = [if outcome.is_err() { 1.0 } else { 0.0 }];
    comm.all_reduce_sum_f64(&mut failed)
        .map_err(|e| e.to_string())?;
    match outcome {
        Err(e) => Err(e),
        Ok(()) if failed[0] > 0.0 => Err("another rank's check failed".into()),
        ok => ok,
    }
}

fn main() -> ExitCode {
    let mut comm = match MpiCommunicator::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi_data_parallel: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rank = comm.rank();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mpi_data_parallel");
    type Test = fn(&mut MpiCommunicator, &Path) -> Check;
    let mut ignored = 0;
    let tests: [(&str, Test); 3] = [
        ("collectives_sum_broadcast_and_bucket", |c, _| {
            c.set_bucket_bytes(40);
            let r = collectives(c);
            c.set_bucket_bytes(DEFAULT_BUCKET_BYTES);
            r
        }),
        ("n_ranks_gradients_equal_the_full_batch_gradient", |c, _| {
            c.set_bucket_bytes(64 * 1024);
            gradients_are_the_full_batch_gradient(c)
        }),
        ("n_ranks_batch_b_equal_one_process_batch_nb", |c, dir| {
            // Buckets of 64 KiB: the model's gradients (about 30 k values) take two.
            c.set_bucket_bytes(64 * 1024);
            same_weights_as_one_process(c, dir)
        }),
    ];
    if rank == 0 {
        println!("running {} tests on {} ranks", tests.len(), comm.size());
    }
    for (name, test) in tests {
        if name.starts_with("n_ranks") && !comm.size().is_power_of_two() {
            if rank == 0 {
                println!(
                    "test {name} ... ignored ({} ranks: run it with a power of two)",
                    comm.size()
                );
            }
            ignored += 1;
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| test(&mut comm, &dir)))
            .unwrap_or_else(|_| Err("panicked".into()));
        match outcome {
            Ok(()) => {
                if rank == 0 {
                    println!("test {name} ... ok");
                }
            }
            Err(e) => {
                eprintln!("test {name} ... FAILED on {}: {e}", comm.describe());
                println!(
                    "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
                );
                comm.abort(1);
            }
        }
    }
    if rank == 0 {
        println!(
            "test result: ok. {} passed; 0 failed; {ignored} ignored; 0 measured; 0 filtered out",
            tests.len() - ignored
        );
    }
    ExitCode::SUCCESS
}
