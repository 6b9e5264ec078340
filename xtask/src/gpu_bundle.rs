//! `cargo xtask gpu-bundle [--out DIR]`: everything the GPU machine needs, in one folder.
//!
//! Builds in release with the CUDA SDK (`cargo xtask setup-cuda`):
//!
//! - the test binaries of `dnn-ops` and `unet` with `--features cuda`, and the NCCL test of
//!   `dnn-layers` (`tests/nccl.rs`, feature `nccl`; libnccl.so.2 is not bundled: `run.sh` finds
//!   the GPU machine's in its PyTorch venv);
//! - the tasks binary (`xtask-tasks`, the `train-unet`/`eval-unet` of `cargo xtask`) with
//!   `--no-default-features --features cuda,nccl,hdf5-static`: no OpenCV, HDF5 built in;
//!
//! all without OpenCV and with HDF5 linked statically (the GPU machine has neither library),
//! stripped, plus `run.sh`, which runs every test binary there and optionally a short training on
//! an `.h5` file. `ldd` checks that no binary needs libopencv or libhdf5.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::setup_cuda::{self, Sdk};

/// The bundle must fit the device machine's transfer limit (64 MiB) with room to spare: the
/// working tree travels with it (≈ 3 MiB of tracked files).
const SIZE_LIMIT: u64 = 56 << 20;

const RUN_SH: &str = include_str!("gpu_bundle_run.sh");

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// What the build needs from the SDK: the workspace's own SDK needs nothing but CMake (nvcc and
/// CUDA_LIBRARY_PATH are found through dnn-ops/build.rs and .cargo/config.toml), a system CUDA
/// nothing at all except a CMake >= 3.26 somewhere.
fn build_env(root: &Path) -> Result<Vec<(&'static str, OsString)>> {
    let sdk = Sdk::in_workspace(root);
    let mut env = Vec::new();
    if std::env::var_os("CMAKE").is_none() {
        if sdk.cmake().is_file() {
            env.push(("CMAKE", sdk.cmake().into()));
        } else {
            bail!(
                "no CMake >= 3.26 for the static HDF5 build: run `cargo xtask setup-cuda` (it \
                 installs one into {}) or set CMAKE",
                sdk.prefix.join("cmake").display()
            );
        }
    }
    let have_nvcc = std::env::var_os("NVCC").is_some()
        || sdk.nvcc().is_file()
        || Path::new("/usr/local/cuda/bin/nvcc").is_file();
    if !have_nvcc {
        bail!(
            "no nvcc: run `cargo xtask setup-cuda` first (it installs CUDA 13.0 + cuDNN 9 into {})",
            setup_cuda::SDK_DIR
        );
    }
    if sdk.is_complete() && std::env::var_os("CUDA_LIBRARY_PATH").is_none() {
        env.push(("CUDA_LIBRARY_PATH", sdk.cuda().into()));
    }
    Ok(env)
}

/// Runs `cargo <args> --message-format=json` and returns the `executable` of every artifact
/// that `keep` accepts (given the JSON line), echoing compiler diagnostics as cargo renders them.
fn cargo_executables(
    args: &[&str],
    env: &[(&'static str, OsString)],
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<PathBuf>> {
    let shown = format!("cargo {}", args.join(" "));
    println!("gpu-bundle: {shown}");
    let mut child = Command::new(cargo())
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    let mut found = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        if !line.contains(r#""reason":"compiler-artifact""#) || !keep(&line) {
            continue;
        }
        if let Some(exe) = json_string(&line, "executable") {
            found.push(PathBuf::from(exe));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(found)
}

/// The string value of `"key":"…"` in a JSON line (cargo escapes only `"` and `\` in paths);
/// `None` for `null` or a missing key.
pub(crate) fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

fn copy_stripped(from: &Path, to: &Path) -> Result<u64> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    let status = Command::new("strip")
        .arg("--strip-unneeded")
        .arg(to)
        .status()
        .context("running strip (install binutils)")?;
    if !status.success() {
        bail!("strip {} failed", to.display());
    }
    Ok(std::fs::metadata(to)?.len())
}

/// Fails when `ldd` shows that `bin` needs OpenCV or HDF5 shared libraries.
fn check_ldd(bin: &Path) -> Result<()> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("libopencv") || l.contains("libhdf5"))
        .collect();
    if !bad.is_empty() {
        bail!(
            "{} needs libraries the GPU machine lacks:\n  {}",
            bin.display(),
            bad.join("\n  ")
        );
    }
    Ok(())
}

fn human(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
}

/// Runs the command from the workspace root `root` with the arguments after `gpu-bundle`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut out = root.join("gpu-bundle");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = root.join(it.next().context("--out needs a folder")?),
            "-h" | "--help" => {
                println!(
                    "cargo xtask gpu-bundle [--out DIR]\n\n\
                     Builds (release, CUDA, no OpenCV, static HDF5) the GPU test binaries of\n\
                     dnn-ops and unet, the NCCL test of dnn-layers and the xtask-tasks binary\n\
                     into DIR (default gpu-bundle/) with run.sh. On the GPU machine:\n\
                     ./run.sh [DATA.h5]"
                );
                return Ok(());
            }
            other => bail!("cargo xtask gpu-bundle takes --out DIR, got {other:?}"),
        }
    }
    let started = Instant::now();
    let env = build_env(root)?;

    // The test binaries with GPU tests (CPU-only ones stay home: the transfer limit is 64 MiB);
    // features unify, so OpenCV is off and HDF5 static for all of them.
    let t = Instant::now();
    let tests = cargo_executables(
        &[
            "test",
            "--release",
            "--no-run",
            "-p",
            "dnn-ops",
            "-p",
            "unet",
            "-p",
            "dnn-layers",
            "--test",
            "cuda_parity_cudnn",
            "--test",
            "cuda_parity_kernels",
            "--test",
            "gradient_check",
            "--test",
            "ops_contracts",
            "--test",
            "cuda_training_parity",
            "--test",
            "nccl",
            "--no-default-features",
            "--features",
            "dnn-ops/cuda,unet/cuda,dnn-layers/nccl,dnn-data/hdf5-static",
        ],
        &env,
        |line| line.contains(r#""test":true"#),
    )?;
    println!(
        "gpu-bundle: {} test binaries built in {:.0} s",
        tests.len(),
        t.elapsed().as_secs_f64()
    );
    if tests.is_empty() {
        bail!("cargo test --no-run reported no test binaries");
    }

    let t = Instant::now();
    let tasks = cargo_executables(
        &[
            "build",
            "--release",
            "-p",
            "xtask-tasks",
            "--no-default-features",
            "--features",
            "cuda,nccl,hdf5-static",
        ],
        &env,
        |line| line.contains(r#""name":"xtask-tasks""#) && line.contains(r#""kind":["bin"]"#),
    )?;
    let [tasks] = tasks.as_slice() else {
        bail!("expected one xtask-tasks binary from cargo build, got {tasks:?}");
    };
    println!(
        "gpu-bundle: xtask-tasks built in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let tests_dir = out.join("tests");
    std::fs::create_dir_all(&tests_dir)
        .with_context(|| format!("creating {}", tests_dir.display()))?;
    let mut total = 0;
    let mut names = Vec::new();
    for exe in &tests {
        let name = exe
            .file_name()
            .context("test binary without a file name")?
            .to_owned();
        let to = tests_dir.join(&name);
        total += copy_stripped(exe, &to)?;
        check_ldd(&to)?;
        names.push(name.to_string_lossy().into_owned());
    }
    let tasks_to = out.join("xtask-tasks");
    total += copy_stripped(tasks, &tasks_to)?;
    check_ldd(&tasks_to)?;
    let run_sh = out.join("run.sh");
    std::fs::write(&run_sh, RUN_SH).with_context(|| format!("writing {}", run_sh.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run_sh, std::fs::Permissions::from_mode(0o755))?;
    }
    total += RUN_SH.len() as u64;
    println!("gpu-bundle: tests: {}", names.join(" "));
    println!(
        "gpu-bundle: no binary needs libopencv or libhdf5 (ldd); {} in {} ({:.0} s)",
        human(total),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    if total > SIZE_LIMIT {
        bail!(
            "the bundle is {}, over the {} budget (the device transfer limit is 64 MiB)",
            human(total),
            human(SIZE_LIMIT)
        );
    }
    println!("gpu-bundle: on the GPU machine: ./run.sh [DATA.h5]   (see docs/cuda.md)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn executables_are_read_from_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/w/target/release/deps/a-1\"b","fresh":true}"#;
        assert_eq!(
            json_string(line, "executable").as_deref(),
            Some(r#"/w/target/release/deps/a-1"b"#)
        );
        assert_eq!(json_string(r#"{"executable":null}"#, "executable"), None);
    }
}
