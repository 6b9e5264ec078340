//! `cargo xtask bench ...`: benchmarks, never asserted in tests; results go to docs/perf/.

use std::process::Command;

use anyhow::{Result, bail};

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Builds `example` of `package` in release mode.
fn build_example(package: &str, example: &str) -> Result<()> {
    let status = Command::new(cargo())
        .args(["build", "--release", "-p", package, "--example", example])
        .status()?;
    if !status.success() {
        bail!("building the benchmark {example} of {package} failed");
    }
    Ok(())
}

/// The `gemm` crate against `matrixmultiply` on conv-shaped GEMMs (docs/perf/gemm.md).
pub fn gemm() -> Result<()> {
    build_example("dnn-ops", "bench_gemm")?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for mm_threads in [1, threads] {
        let status = Command::new("target/release/examples/bench_gemm")
            .env("MATMUL_NUM_THREADS", mm_threads.to_string())
            .status()?;
        if !status.success() {
            bail!("the GEMM benchmark failed");
        }
    }
    Ok(())
}

/// The CPU backend's convolutions layer by layer (U-Net base 16, 128², batch 8) with the default
/// kernels (Winograd and direct AVX-512) and, for comparison, with `MAGMA_CPU_CONV=direct` (no
/// Winograd) and `MAGMA_CPU_CONV=im2col` (docs/perf/bench-unet.md). Threads: `RAYON_NUM_THREADS`,
/// default all cores.
pub fn conv() -> Result<()> {
    build_example("dnn-ops", "bench_conv")?;
    for path in ["default", "direct", "im2col"] {
        println!("\nMAGMA_CPU_CONV={path}");
        let status = Command::new("target/release/examples/bench_conv")
            .env("MAGMA_CPU_CONV", path)
            .status()?;
        if !status.success() {
            bail!("the convolution benchmark failed");
        }
    }
    Ok(())
}

/// Decode + resize to 128x128 of the Oxford-IIIT Pet sample on one core, then the PIL peer on the
/// same files (docs/perf/decode.md). Pinned to CPU 0 with `taskset` when it exists; the peer runs
/// with `$PYTHON` (default `python3`) and is skipped with a message when PIL is missing.
pub fn decode() -> Result<()> {
    build_example("dnn-data", "bench_decode")?;
    let pin = Command::new("taskset").arg("--version").output().is_ok();
    let run = |program: &str, args: &[&str]| -> std::io::Result<std::process::ExitStatus> {
        if pin {
            Command::new("taskset")
                .args(["-c", "0", program])
                .args(args)
                .status()
        } else {
            Command::new(program).args(args).status()
        }
    };
    let root = "../shared/data/oxford-pet-sample";
    if !run("target/release/examples/bench_decode", &[root])?.success() {
        bail!("the decode benchmark failed (is {root} present?)");
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    match run(&python, &["peers/python/bench_decode_pil.py", root]) {
        Ok(s) if s.success() => {}
        _ => eprintln!(
            "PIL peer skipped: `{python} peers/python/bench_decode_pil.py` failed (pip install pillow, or set PYTHON)"
        ),
    }
    Ok(())
}
