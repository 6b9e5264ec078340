//! The magma-dnn runner: `cargo xtask <command>`.
//!
//! This package stays light (no OpenCV, HDF5 or model crates) so that it builds on a fresh
//! machine. Every command first installs the apt packages the workspace needs when they are
//! missing (saying so), then either runs here (`test`, `setup`, `setup-cuda`, `gpu-bundle`,
//! `bench`) or hands over to the heavy tasks binary (`xtask/tasks`, package `xtask-tasks`):
//! `train-unet`, `eval-unet`, `predict-unet`, `train-classifier`, `convert-hdf5`,
//! `download-pets`.

mod apt;
mod bench;
mod fuzz_smoke;
mod gpu_bundle;
mod setup_cuda;
mod test_cmd;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Result, bail};

const HELP: &str = "\
magma-dnn tasks — cargo xtask <command> [options]

  train-unet        train a U-Net for segmentation (the main job; no options = embedded default)
  eval-unet         evaluate a checkpoint (last line: one JSON object)
  predict-unet      mask and overlay PNGs for an image or a folder
  train-classifier  a LeNet-5-style CNN on Fashion-MNIST, MNIST or CIFAR-10
  convert-hdf5      a Pet or image/mask folder as one HDF5 dataset
  download-pets     the real Oxford-IIIT Pet into data/oxford-iiit-pet
  test [--quick]    install missing apt packages, then fmt check, clippy -D warnings, every test
  setup             install missing apt packages only
  setup-cuda        a CUDA 13.0 + cuDNN 9 build SDK (and CMake) from PyPI into .cuda-sdk/ when
                    no system CUDA is found [--force] [--prefix DIR]
  gpu-bundle        CUDA test binaries + a GPU training binary + run.sh for a GPU machine
                    (no OpenCV, static HDF5) [--out DIR, default gpu-bundle/]
  fuzz-smoke        each fuzz target for 10 s (cargo-fuzz + nightly), else replay the committed
                    seeds [--seconds N] [--corpus-only] (docs/reliability.md)
  bench gemm|decode|conv  benchmarks (docs/perf/)

`cargo xtask <command> --help` shows a command's options.";

fn workspace_root() -> Result<PathBuf> {
    Ok(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).canonicalize()?)
}

/// Runs the heavy tasks binary with `args`, from the caller's directory (relative paths keep
/// meaning what the user meant).
fn forward(args: &[String]) -> Result<ExitCode> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = workspace_root()?.join("Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask-tasks",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--")
        .args(args)
        .status()?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let first = args.first().map(String::as_str);
    if matches!(first, None | Some("-h" | "--help" | "help")) {
        println!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    apt::ensure(apt::REQUIRED)?;
    match first {
        Some("setup") => {
            println!("xtask: system packages are in place");
            Ok(ExitCode::SUCCESS)
        }
        Some("test") => {
            let quick = match &args[1..] {
                [] => false,
                [flag] if flag == "--quick" => true,
                other => bail!("cargo xtask test takes only --quick, got {other:?}"),
            };
            std::env::set_current_dir(workspace_root()?)?;
            test_cmd::run(quick)?;
            Ok(ExitCode::SUCCESS)
        }
        Some("setup-cuda") => {
            let root = workspace_root()?;
            setup_cuda::run(&root, &args[1..])?;
            Ok(ExitCode::SUCCESS)
        }
        Some("gpu-bundle") => {
            let root = workspace_root()?;
            std::env::set_current_dir(&root)?;
            gpu_bundle::run(&root, &args[1..])?;
            Ok(ExitCode::SUCCESS)
        }
        Some("fuzz-smoke") => {
            let root = workspace_root()?;
            fuzz_smoke::run(&root, &args[1..])?;
            Ok(ExitCode::SUCCESS)
        }
        Some("bench") => {
            std::env::set_current_dir(workspace_root()?)?;
            match args.get(1).map(String::as_str) {
                Some("gemm") => bench::gemm()?,
                Some("decode") => bench::decode()?,
                Some("conv") => bench::conv()?,
                other => bail!("cargo xtask bench takes gemm, decode or conv, got {other:?}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => forward(&args),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
