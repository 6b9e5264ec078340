//! `cargo xtask test`: system packages, formatting, lints (with and without the `cuda` and
//! `nccl` features)
//! and every test, each step timed.
//!
//! The `cuda` lint runs on machines without nvcc or a GPU (`MAGMA_SKIP_NVCC=1`, a fake CUDA
//! root), so GPU code is type-checked and linted everywhere.
//!
//! The MPI steps lint the `mpi` features and run the data-parallel test of `unet`
//! (`tests/mpi_data_parallel.rs`) as a 2-rank job on this machine: `mpirun -np 2
//! --oversubscribe`, allowed to run as root (CI is root), with a time limit so that a rank
//! stuck in a collective cannot hang the run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::apt;
use crate::setup_cuda::Sdk;

/// One step of the test command.
struct Step {
    label: &'static str,
    args: Vec<&'static str>,
    /// Extra environment of the step.
    env: Vec<(&'static str, OsString)>,
    /// `Some(n)`: `args` build one test binary (`--no-run`), which then runs as `n` MPI ranks.
    mpi_ranks: Option<usize>,
}

fn cargo_step(label: &'static str, args: &[&'static str]) -> Step {
    Step {
        label,
        args: args.to_vec(),
        env: Vec::new(),
        mpi_ranks: None,
    }
}

/// Ranks of the data-parallel test.
const MPI_RANKS: usize = 2;
/// mpirun's time limit for it, in seconds (it takes a few seconds).
const MPI_TIMEOUT_S: &str = "600";

/// The data-parallel test (`unet/tests/mpi_data_parallel.rs`), built by cargo, run by mpirun.
fn mpi_test_step() -> Step {
    Step {
        mpi_ranks: Some(MPI_RANKS),
        ..cargo_step(
            "tests (mpi, 2 ranks)",
            &[
                "test",
                "-p",
                "unet",
                "--features",
                "mpi",
                "--test",
                "mpi_data_parallel",
                "--no-run",
            ],
        )
    }
}

/// The fake CUDA root of the check-only build (relative to the workspace root): an empty
/// `lib64/` is all cust_raw's build script needs, and clippy links nothing.
const CHECK_ROOT: &str = "target/cuda-check-root";

/// Clippy over every crate with its `cuda` and `nccl` features (features unify, so
/// `xtask-tasks/cuda` turns on unet, dnn-ops and magma-tensor's, `xtask-tasks/nccl` dnn-layers'
/// and nccl-sys, which needs no NCCL to build: it opens libnccl at run time), on any machine:
/// `MAGMA_SKIP_NVCC=1` skips the kernels, and without a CUDA install `CUDA_LIBRARY_PATH` points
/// at an empty fake root.
fn cuda_clippy_step() -> Step {
    let mut step = cargo_step(
        "clippy (cuda, nccl)",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "xtask-tasks/cuda,xtask-tasks/nccl",
            "--",
            "-D",
            "warnings",
        ],
    );
    step.env.push(("MAGMA_SKIP_NVCC", "1".into()));
    if let Some(root) = cuda_check_root() {
        step.env.push(("CUDA_LIBRARY_PATH", root.into()));
    }
    step
}

/// `None` when a CUDA install exists (the user's `CUDA_LIBRARY_PATH`, the project's SDK that
/// .cargo/config.toml points at, or /usr/local/cuda); else the fake root, as an absolute path.
fn cuda_check_root() -> Option<PathBuf> {
    let has_lib64 = |p: &Path| p.join("lib64").is_dir();
    if let Some(paths) = std::env::var_os("CUDA_LIBRARY_PATH")
        && std::env::split_paths(&paths).any(|p| has_lib64(&p))
    {
        return None;
    }
    let sdk = Sdk::in_workspace(Path::new("."));
    if has_lib64(&sdk.cuda()) || has_lib64(Path::new("/usr/local/cuda")) {
        return None;
    }
    std::env::current_dir().ok().map(|d| d.join(CHECK_ROOT))
}

fn ensure_components() -> Result<()> {
    for (component, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let ok = Command::new(cargo())
            .args([probe, "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            println!("xtask: installing rustup component {component}");
            let status = Command::new("rustup")
                .args(["component", "add", component])
                .status()
                .context("running rustup")?;
            if !status.success() {
                bail!("rustup component add {component} failed");
            }
        }
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

pub fn run(quick: bool) -> Result<()> {
    let started = Instant::now();
    apt::ensure(apt::REQUIRED)?;
    ensure_components()?;
    let mut steps = vec![
        cargo_step("format", &["fmt", "--all", "--", "--check"]),
        cargo_step(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        cuda_clippy_step(),
        cargo_step(
            "clippy (mpi)",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--features",
                "xtask-tasks/mpi",
                "--",
                "-D",
                "warnings",
            ],
        ),
        cargo_step("tests", &["test", "--workspace", "--no-fail-fast"]),
        mpi_test_step(),
        cargo_step(
            "tests (cuda seam)",
            &["test", "-p", "magma-tensor", "--features", "device-seam"],
        ),
        // Fuzzes each target of fuzz/ for 10 s where cargo-fuzz and nightly are installed,
        // else replays the committed seeds (CI); see docs/reliability.md.
        cargo_step(
            "fuzz smoke",
            &[
                "run",
                "--quiet",
                "--release",
                "-p",
                "xtask",
                "--",
                "fuzz-smoke",
            ],
        ),
    ];
    if quick {
        steps.retain(|s| s.label == "tests");
    }
    std::fs::create_dir_all(Path::new(CHECK_ROOT).join("lib64"))
        .with_context(|| format!("creating {CHECK_ROOT}/lib64"))?;
    let mut timings = Vec::new();
    let mut totals = TestCounts::default();
    for step in &steps {
        let env: String = step
            .env
            .iter()
            .map(|(k, v)| format!("{k}={} ", v.to_string_lossy()))
            .collect();
        println!(
            "xtask: == {} ==  {env}cargo {}",
            step.label,
            step.args.join(" ")
        );
        let t = Instant::now();
        let (ok, counts) = match step.mpi_ranks {
            Some(ranks) => run_under_mpirun(&step.args, &step.env, ranks)?,
            None => run_and_count(&step.args, &step.env)?,
        };
        totals.add(&counts);
        timings.push((step.label, t.elapsed().as_secs_f64()));
        if !ok {
            println!(
                "xtask: {} passed, {} failed, {} skipped",
                totals.passed, totals.failed, totals.ignored
            );
            bail!("{} failed (cargo {})", step.label, step.args.join(" "));
        }
    }
    println!(
        "xtask: all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (label, secs) in timings {
        println!("xtask:   {label:<20} {secs:>6.0} s");
    }
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

/// Test counts summed over every `test result:` line of cargo's output.
#[derive(Debug, Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    fn add(&mut self, other: &TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Parses `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
    fn parse_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }
}

/// Runs cargo with `args`, echoing its output, and counts the tests it reports.
fn run_and_count(args: &[&str], env: &[(&str, OsString)]) -> Result<(bool, TestCounts)> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(cargo())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let mut counts = TestCounts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            counts.parse_line(&line);
        }
    }
    Ok((child.wait()?.success(), counts))
}

/// Builds the one test binary of `args` (a `cargo test … --no-run`), then runs it as `ranks`
/// MPI ranks with mpirun, echoing its output and counting its `test result:` lines.
fn run_under_mpirun(
    args: &[&str],
    env: &[(&str, OsString)],
    ranks: usize,
) -> Result<(bool, TestCounts)> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(cargo())
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let mut executables = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            if line.contains(r#""reason":"compiler-artifact""#)
                && line.contains(r#""test":true"#)
                && let Some(exe) = crate::gpu_bundle::json_string(&line, "executable")
            {
                executables.push(PathBuf::from(exe));
            }
        }
    }
    if !child.wait()?.success() {
        return Ok((false, TestCounts::default()));
    }
    let [exe] = &executables[..] else {
        bail!(
            "cargo {} built {} test binaries, expected one: {executables:?}",
            args.join(" "),
            executables.len()
        );
    };
    let ranks = ranks.to_string();
    let mpirun = [
        "-np",
        ranks.as_str(),
        "--oversubscribe",
        "--timeout",
        MPI_TIMEOUT_S,
    ];
    println!("xtask: mpirun {} {}", mpirun.join(" "), exe.display());
    let mut child = Command::new("mpirun")
        .args(mpirun)
        .arg(exe)
        // CI runs as root, which OpenMPI refuses unless told twice.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::piped())
        .spawn()
        .context("running mpirun (apt package openmpi-bin)")?;
    let mut counts = TestCounts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            counts.parse_line(&line);
        }
    }
    let ok = child.wait()?.success();
    if !ok && counts.failed == 0 {
        // A rank that died or timed out printed no result line: count the test binary as one
        // failure so the summary says so.
        counts.failed += 1;
    }
    Ok((ok, counts))
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn counts_are_read_from_cargo_result_lines() {
        let mut c = TestCounts::default();
        c.parse_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.04s");
        c.parse_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.parse_line("running 5 tests");
        assert_eq!((c.passed, c.failed, c.ignored), (15, 2, 1));
    }
}
