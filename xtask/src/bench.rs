//! `cargo xtask bench ...`: benchmarks, never asserted in tests; results go to docs/perf/.

use std::process::Command;

use anyhow::{Result, bail};

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// The `gemm` crate against `matrixmultiply` on conv-shaped GEMMs (docs/perf/gemm.md).
pub fn gemm() -> Result<()> {
    let status = Command::new(cargo())
        .args([
            "build",
            "--release",
            "-p",
            "dnn-ops",
            "--example",
            "bench_gemm",
        ])
        .status()?;
    if !status.success() {
        bail!("building the GEMM benchmark failed");
    }
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
