//! Compiles the CUDA kernels of `cuda/*.cu` (workspace root) with nvcc through `cc`, only with
//! the `cuda` feature.
//!
//! - nvcc: `NVCC`, else the project's `.cuda-sdk` (from `cargo xtask setup-cuda`), else `PATH`,
//!   else `/usr/local/cuda/bin`.
//! - `MAGMA_CUDA_ARCHS` (default `90`): SASS and PTX for each listed compute capability.
//! - `MAGMA_SKIP_NVCC=1`: compile nothing, for type-checking (`cargo clippy --features cuda`) on
//!   a machine without nvcc; linking a binary then fails on the missing `mg_*` symbols.
//! - `MAGMA_CUDA_RPATH`: overrides the RUNPATH given to this crate's test binaries (where
//!   libcudnn.so.9 and its companions are looked for at run time).

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for v in [
        "NVCC",
        "MAGMA_CUDA_ARCHS",
        "MAGMA_SKIP_NVCC",
        "MAGMA_CUDA_RPATH",
        "CUDA_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..");
    let kernel_dir = root.join("cuda");
    println!("cargo:rerun-if-changed={}", kernel_dir.display());
    println!(
        "cargo:rustc-link-arg-tests=-Wl,--enable-new-dtags,-rpath,{}",
        runpath()
    );
    if env::var("MAGMA_SKIP_NVCC").as_deref() == Ok("1") {
        println!("cargo:warning=MAGMA_SKIP_NVCC=1: CUDA kernels not compiled (check-only build)");
        return;
    }
    let nvcc = find_nvcc(&root).unwrap_or_else(|| {
        panic!(
            "nvcc not found: run `cargo xtask setup-cuda`, set NVCC, or set MAGMA_SKIP_NVCC=1 \
             for a check-only build"
        )
    });
    // C++20 (templated lambdas in the kernels) needs CUDA 12; the strongest fatbin compression
    // CUDA 12.8.
    let version = nvcc_version(&nvcc);
    if version.is_some_and(|v| v < (12, 0)) {
        panic!(
            "{} is CUDA {version:?}: the kernels need CUDA 12.0 or newer",
            nvcc.display()
        );
    }
    let cuda_root = nvcc
        .parent()
        .and_then(Path::parent)
        .expect("nvcc lives in <cuda>/bin");
    for lib in ["lib64", "lib", "targets/x86_64-linux/lib"] {
        let dir = cuda_root.join(lib);
        if dir.join("libcudart_static.a").is_file() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&kernel_dir)
        .expect("cuda/ folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    for f in std::fs::read_dir(&kernel_dir)
        .expect("cuda/ folder")
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", f.path().display());
    }
    let archs = env::var("MAGMA_CUDA_ARCHS").unwrap_or_else(|_| "90".into());
    // `cc` takes nvcc from the NVCC variable.
    // SAFETY: the build script is single-threaded; nothing reads the environment concurrently.
    unsafe { env::set_var("NVCC", &nvcc) };
    let mut build = cc::Build::new();
    build
        .cuda(true)
        .cudart("static")
        .debug(false)
        .files(&files)
        .include(&kernel_dir)
        .flag("-std=c++20")
        .flag("-O3")
        .flag("-lineinfo");
    if version.is_some_and(|v| v >= (12, 8)) {
        // The strongest fatbin compression (the driver inflates it at load time): 2.9x smaller
        // kernels in each of the binaries the GPU bundle carries.
        build.flag("--compress-mode=size");
    }
    for arch in archs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        build.flag(format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
        build.flag(format!("-gencode=arch=compute_{arch},code=compute_{arch}"));
    }
    build.compile("magma_kernels");
}

/// Where binaries look for cuDNN and its companions at run time.
fn runpath() -> String {
    env::var("MAGMA_CUDA_RPATH").unwrap_or_else(|_| {
        let venv = "/opt/torch/.venv/lib/python3.12/site-packages/nvidia";
        format!(
            "$ORIGIN:$ORIGIN/lib:{venv}/cudnn/lib:{venv}/cu13/lib:/usr/local/cuda/lib64:\
             /usr/lib/x86_64-linux-gnu"
        )
    })
}

/// `(major, minor)` of `nvcc --version` ("Cuda compilation tools, release 13.0, ..."), `None`
/// when it cannot be read.
fn nvcc_version(nvcc: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(nvcc)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let release = text.split("release ").nth(1)?;
    let number = release.split([',', ' ', '\n']).next()?;
    let (major, minor) = number.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    let sdk = root.join(".cuda-sdk/nvidia/cu13/bin/nvcc");
    if sdk.is_file() {
        return Some(sdk.canonicalize().unwrap_or(sdk));
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let candidate = dir.join("nvcc");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    for base in [env::var("CUDA_PATH").ok(), Some("/usr/local/cuda".into())]
        .into_iter()
        .flatten()
    {
        let candidate = Path::new(&base).join("bin/nvcc");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    None
}
