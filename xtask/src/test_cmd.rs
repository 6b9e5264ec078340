//! `cargo xtask test`: system packages, formatting, lints (with and without the `cuda` feature)
//! and every test, each step timed.
//!
//! The `cuda` lint runs on machines without nvcc or a GPU (`MAGMA_SKIP_NVCC=1`, a fake CUDA
//! root), so GPU code is type-checked and linted everywhere.

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
}

fn cargo_step(label: &'static str, args: &[&'static str]) -> Step {
    Step {
        label,
        args: args.to_vec(),
        env: Vec::new(),
    }
}

/// The fake CUDA root of the check-only build (relative to the workspace root): an empty
/// `lib64/` is all cust_raw's build script needs, and clippy links nothing.
const CHECK_ROOT: &str = "target/cuda-check-root";

/// Clippy over every crate with its `cuda` feature (features unify, so `xtask-tasks/cuda` turns
/// on unet, dnn-ops and magma-tensor's), on any machine: `MAGMA_SKIP_NVCC=1` skips the kernels,
/// and without a CUDA install `CUDA_LIBRARY_PATH` points at an empty fake root.
fn cuda_clippy_step() -> Step {
    let mut step = cargo_step(
        "clippy (cuda)",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "xtask-tasks/cuda",
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
    if let Some(paths) = std::env::var_os("CUDA_LIBRARY_PATH") {
        if std::env::split_paths(&paths).any(|p| has_lib64(&p)) {
            return None;
        }
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
        cargo_step("tests", &["test", "--workspace", "--no-fail-fast"]),
        cargo_step(
            "tests (cuda seam)",
            &["test", "-p", "magma-tensor", "--features", "device-seam"],
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
        let (ok, counts) = run_and_count(&step.args, &step.env)?;
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
