//! `cargo xtask setup-cuda [--force] [--prefix DIR]`: a CUDA 13.0 + cuDNN 9 build SDK from PyPI,
//! with the NCCL 2 headers (for regenerating `nccl-sys`' bindings; nothing links NCCL).
//!
//! When no system CUDA (nvcc on `PATH`, or `/usr/local/cuda/include/cuda.h`) with cuDNN is found,
//! or with `--force`, installs into the git-ignored `.cuda-sdk/` of the workspace (or `--prefix`):
//!
//! 1. the pinned NVIDIA wheels ([`CUDA_WHEELS`]) with `pip install --no-deps --target`, all in one
//!    pip call into a staging folder that is then moved into place (pip `--target` skips a
//!    top-level folder that already exists, and every wheel shares `nvidia/`);
//! 2. CMake ([`CMAKE_WHEEL`]) into `cmake/`, for building HDF5 from source (`hdf5-static`: needs
//!    CMake >= 3.26, Debian 12 has 3.25);
//! 3. the `nvidia/cu13/lib64 -> lib` symlink (cust's build script looks only at `<root>/lib64`);
//! 4. a link-time-only stub `libcuda.so` in `nvidia/cu13/lib/stubs/` (no wheel ships one): every
//!    driver-API function name that `cuda.h` can declare (and that cust_raw binds) as a function
//!    returning 34 (`CUDA_ERROR_STUB_LIBRARY`), SONAME `libcuda.so.1`. Binaries record only the
//!    SONAME, and the GPU machine's driver provides the real `libcuda.so.1`; the stub folder must
//!    never be put in a RUNPATH.
//!
//! Every step is skipped when its result is already there (`--force` redoes them). The build
//! finds the SDK without exports: `.cargo/config.toml` sets `CUDA_LIBRARY_PATH` (for cust) to
//! `.cuda-sdk/nvidia/cu13` unless the user set it, and `crates/dnn-ops/build.rs` finds nvcc in
//! `.cuda-sdk`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::apt;

/// The SDK folder, relative to the workspace root (git-ignored).
pub const SDK_DIR: &str = ".cuda-sdk";

/// The pinned wheels: CUDA 13.0 (the GPU machine's driver 580 JIT-compiles PTX up to 13.0 only),
/// cuDNN 9, and NCCL 2.28.9 (what torch 2.11+cu130 pins and the GPU machine's venv has; its
/// headers regenerate `crates/nccl-sys`, its library is opened at run time, never linked). All in
/// one pip call: they share the `nvidia/` folder, which `--target` installs only once.
pub const CUDA_WHEELS: [&str; 7] = [
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cudnn-cu13==9.13.0.50",
    "nvidia-nccl-cu13==2.28.9",
];

/// CMake for the static HDF5 build (3.x: HDF5's CMake files predate CMake 4).
pub const CMAKE_WHEEL: &str = "cmake==3.31.10";

/// `CUDA_ERROR_STUB_LIBRARY`: what every function of the stub returns.
const STUB_RESULT: u32 = 34;

/// The layout of an SDK installed by this command.
#[derive(Debug, Clone)]
pub struct Sdk {
    pub prefix: PathBuf,
}

impl Sdk {
    /// The SDK of the workspace at `root` (`root/.cuda-sdk`).
    pub fn in_workspace(root: &Path) -> Self {
        Self {
            prefix: root.join(SDK_DIR),
        }
    }

    /// The CUDA root (`nvidia/cu13`: bin, include, lib, lib64 -> lib, nvvm).
    pub fn cuda(&self) -> PathBuf {
        self.prefix.join("nvidia/cu13")
    }

    pub fn cudnn(&self) -> PathBuf {
        self.prefix.join("nvidia/cudnn")
    }

    /// NCCL's headers (`include/nccl.h`) and library (`lib/libnccl.so.2`).
    pub fn nccl(&self) -> PathBuf {
        self.prefix.join("nvidia/nccl")
    }

    pub fn nvcc(&self) -> PathBuf {
        self.cuda().join("bin/nvcc")
    }

    pub fn stub_dir(&self) -> PathBuf {
        self.cuda().join("lib/stubs")
    }

    /// The real CMake binary of the pip wheel (its `bin/cmake` launcher needs the package on
    /// Python's path, which `--target` installs are not).
    pub fn cmake(&self) -> PathBuf {
        self.prefix.join("cmake/cmake/data/bin/cmake")
    }

    fn wheel_installed(&self, spec: &str) -> bool {
        let (name, version) = spec.split_once("==").expect("pinned spec");
        self.prefix
            .join(format!("{}-{version}.dist-info", name.replace('-', "_")))
            .is_dir()
    }

    /// Whether nvcc, cuDNN, NCCL, the lib64 link and the stub are all in place.
    pub fn is_complete(&self) -> bool {
        CUDA_WHEELS.iter().all(|w| self.wheel_installed(w))
            && self.nvcc().is_file()
            && self.cudnn().join("include/cudnn.h").is_file()
            && self.nccl().join("include/nccl.h").is_file()
            && self.cuda().join("lib64").is_dir()
            && self.stub_dir().join("libcuda.so").is_file()
    }

    /// The variables a build with this SDK needs when it is not the workspace's own (which
    /// `.cargo/config.toml` and `dnn-ops/build.rs` find by themselves).
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let cu = self.cuda();
        let mut path = OsString::from(cu.join("bin"));
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        vec![
            ("PATH", path),
            ("NVCC", self.nvcc().into()),
            ("CUDA_LIBRARY_PATH", cu.clone().into()),
            ("CUDA_PATH", cu.into()),
            ("CMAKE", self.cmake().into()),
        ]
    }
}

struct Options {
    force: bool,
    prefix: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        force: false,
        prefix: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--force" => options.force = true,
            "--prefix" => {
                let dir = it.next().context("--prefix needs a folder")?;
                options.prefix = Some(PathBuf::from(dir));
            }
            "-h" | "--help" => {
                println!(
                    "cargo xtask setup-cuda [--force] [--prefix DIR]\n\n\
                     Installs a CUDA 13.0 + cuDNN 9 build SDK (with the NCCL 2 headers, and CMake)\n\
                     from PyPI into .cuda-sdk/ when no system CUDA with cuDNN is found. --force:\n\
                     install (and redo every step) even then. --prefix: install elsewhere (then\n\
                     export what it prints)."
                );
                std::process::exit(0);
            }
            other => bail!("cargo xtask setup-cuda takes --force and --prefix DIR, got {other:?}"),
        }
    }
    Ok(options)
}

/// Runs the command from the workspace root `root` with the arguments after `setup-cuda`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let started = Instant::now();
    let own = Sdk::in_workspace(root);
    let sdk = match &options.prefix {
        Some(p) => Sdk {
            prefix: std::env::current_dir()?.join(p),
        },
        None => own.clone(),
    };
    if !options.force {
        if let Some(found) = system_cuda(&sdk.prefix) {
            println!(
                "setup-cuda: system CUDA found: {} (nvcc {}), cuDNN: {}",
                found.root.display(),
                found.nvcc.display(),
                found.cudnn.display()
            );
            println!(
                "setup-cuda: nothing to do (--force installs the pinned SDK into {} anyway)",
                sdk.prefix.display()
            );
            return Ok(());
        }
        if sdk.is_complete() && sdk.cmake().is_file() {
            println!(
                "setup-cuda: the SDK in {} is complete (--force reinstalls it)",
                sdk.prefix.display()
            );
            print_usage(&sdk, &own);
            return Ok(());
        }
    }
    std::fs::create_dir_all(&sdk.prefix)
        .with_context(|| format!("creating {}", sdk.prefix.display()))?;

    // 1. The CUDA, cuDNN and NCCL wheels.
    let missing: Vec<&str> = CUDA_WHEELS
        .iter()
        .copied()
        .filter(|w| options.force || !sdk.wheel_installed(w))
        .collect();
    if missing.is_empty() && sdk.nvcc().is_file() {
        println!("setup-cuda: CUDA, cuDNN and NCCL wheels already installed, skipped");
    } else {
        let t = Instant::now();
        println!(
            "setup-cuda: installing {} (about 630 MB to download, 930 MB installed) into {}",
            CUDA_WHEELS.join(" "),
            sdk.prefix.display()
        );
        let pip = Pip::find(&sdk.prefix)?;
        pip.install_staged(&CUDA_WHEELS, &sdk.prefix, ".staging-cuda")?;
        println!(
            "setup-cuda: CUDA, cuDNN and NCCL wheels installed in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }

    // 2. CMake for the static HDF5 build.
    let cmake_dir = sdk.prefix.join("cmake");
    if sdk.cmake().is_file() && !options.force {
        println!(
            "setup-cuda: CMake already installed ({}), skipped",
            sdk.cmake().display()
        );
    } else {
        let t = Instant::now();
        println!(
            "setup-cuda: installing {CMAKE_WHEEL} into {}",
            cmake_dir.display()
        );
        let pip = Pip::find(&sdk.prefix)?;
        // Its own folder, so that it is replaced as a whole.
        std::fs::create_dir_all(&cmake_dir)
            .with_context(|| format!("creating {}", cmake_dir.display()))?;
        pip.install_staged(&[CMAKE_WHEEL], &cmake_dir, ".staging-cmake")?;
        if !sdk.cmake().is_file() {
            bail!(
                "pip installed {CMAKE_WHEEL} but {} is missing (wheel layout changed?)",
                sdk.cmake().display()
            );
        }
        println!(
            "setup-cuda: CMake installed in {:.0} s: {}",
            t.elapsed().as_secs_f64(),
            sdk.cmake().display()
        );
    }

    // 3. lib64 -> lib.
    let lib64 = sdk.cuda().join("lib64");
    if lib64.is_dir() {
        println!("setup-cuda: {} exists, skipped", lib64.display());
    } else {
        if lib64.symlink_metadata().is_ok() {
            std::fs::remove_file(&lib64)
                .with_context(|| format!("removing the broken link {}", lib64.display()))?;
        }
        std::os::unix::fs::symlink("lib", &lib64)
            .with_context(|| format!("creating the symlink {} -> lib", lib64.display()))?;
        println!("setup-cuda: linked {} -> lib", lib64.display());
    }

    // 4. The libcuda stub.
    let stub = sdk.stub_dir().join("libcuda.so");
    if stub.is_file() && !options.force {
        println!("setup-cuda: {} exists, skipped", stub.display());
    } else {
        let extra = cust_raw_bindings(root);
        let count = make_libcuda_stub(&sdk.cuda().join("include"), &sdk.stub_dir(), &extra)?;
        println!(
            "setup-cuda: wrote the link-time stub {} ({count} driver-API functions, each \
             returning {STUB_RESULT} = CUDA_ERROR_STUB_LIBRARY; SONAME libcuda.so.1)",
            stub.display()
        );
    }
    println!(
        "setup-cuda: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    print_usage(&sdk, &own);
    Ok(())
}

fn print_usage(sdk: &Sdk, own: &Sdk) {
    if sdk.prefix == own.prefix {
        println!(
            "setup-cuda: `cargo build --features cuda` uses it without exports: .cargo/config.toml \
             sets CUDA_LIBRARY_PATH (for cust) and dnn-ops/build.rs finds nvcc there; for a static \
             HDF5 build pass CMAKE={}",
            sdk.cmake().display()
        );
    } else {
        println!("setup-cuda: to build with this SDK, export:");
        for (k, v) in sdk.env() {
            if k == "PATH" {
                println!("export PATH={}:$PATH", sdk.cuda().join("bin").display());
            } else {
                println!("export {k}={}", v.to_string_lossy());
            }
        }
    }
}

/// A system CUDA install with cuDNN.
struct SystemCuda {
    root: PathBuf,
    nvcc: PathBuf,
    cudnn: PathBuf,
}

/// nvcc on `PATH` (outside `ignore`, our own SDK) or `/usr/local/cuda`, plus a cuDNN 9 library or
/// header next to it or in the system folders.
fn system_cuda(ignore: &Path) -> Option<SystemCuda> {
    let ignore = ignore
        .canonicalize()
        .unwrap_or_else(|_| ignore.to_path_buf());
    let mut roots = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let nvcc = dir.join("nvcc");
            if nvcc.is_file() {
                let real = nvcc.canonicalize().unwrap_or(nvcc);
                if real.starts_with(&ignore) {
                    continue;
                }
                if let Some(root) = real.parent().and_then(Path::parent) {
                    roots.push((root.to_path_buf(), real.clone()));
                }
            }
        }
    }
    let usr = PathBuf::from("/usr/local/cuda");
    if usr.join("include/cuda.h").is_file() && usr.join("bin/nvcc").is_file() {
        roots.push((usr.clone(), usr.join("bin/nvcc")));
    }
    for (root, nvcc) in roots {
        let candidates = [
            root.join("include/cudnn.h"),
            root.join("lib64/libcudnn.so.9"),
            root.join("lib/libcudnn.so.9"),
            PathBuf::from("/usr/include/cudnn.h"),
            PathBuf::from("/usr/include/x86_64-linux-gnu/cudnn_v9.h"),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libcudnn.so.9"),
        ];
        if let Some(cudnn) = candidates.into_iter().find(|p| p.is_file()) {
            return Some(SystemCuda { root, nvcc, cudnn });
        }
    }
    None
}

/// How pip is run: `python3 -m pip`, or a venv's pip when the system Python has none.
struct Pip {
    python: PathBuf,
}

impl Pip {
    fn works(python: &Path) -> bool {
        Command::new(python)
            .args(["-m", "pip", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `python3 -m pip` when it works, else a venv in `prefix/.venv` (installing python3-venv
    /// with apt when even that is missing).
    fn find(prefix: &Path) -> Result<Self> {
        let system = PathBuf::from("python3");
        if Self::works(&system) {
            return Ok(Self { python: system });
        }
        let venv = prefix.join(".venv");
        let python = venv.join("bin/python3");
        if Self::works(&python) {
            return Ok(Self { python });
        }
        println!(
            "setup-cuda: python3 has no pip; creating a virtual environment in {}",
            venv.display()
        );
        let make = || {
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !make() {
            apt::ensure(&[
                (
                    "python3-venv",
                    "a virtual environment with pip for setup-cuda",
                ),
                ("python3-pip", "pip for setup-cuda"),
            ])?;
            if !make() {
                bail!(
                    "`python3 -m venv {}` failed: install Python 3 with pip or venv",
                    venv.display()
                );
            }
        }
        if !Self::works(&python) {
            bail!("{} -m pip does not work", python.display());
        }
        Ok(Self { python })
    }

    /// Installs `specs` (no dependencies) into a fresh `staging` folder under `dest`, then moves
    /// every top-level entry into `dest`, replacing entries of the same name.
    fn install_staged(&self, specs: &[&str], dest: &Path, staging: &str) -> Result<()> {
        let stage = dest.join(staging);
        if stage.exists() {
            std::fs::remove_dir_all(&stage)
                .with_context(|| format!("removing {}", stage.display()))?;
        }
        let mut cmd = Command::new(&self.python);
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
        ])
        .arg(&stage)
        .args(specs)
        .env("PIP_ROOT_USER_ACTION", "ignore");
        let shown = format!(
            "{} -m pip install --no-deps --target {} {}",
            self.python.display(),
            stage.display(),
            specs.join(" ")
        );
        let status = cmd.status().with_context(|| format!("running {shown}"))?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&stage);
            bail!("{shown} failed ({status}); is PyPI reachable?");
        }
        let entries =
            std::fs::read_dir(&stage).with_context(|| format!("reading {}", stage.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            // pip --target also writes launcher scripts (bin/) that point at this staging
            // folder's Python path; the SDK does not use them.
            if name == "bin" && staging == ".staging-cmake" {
                continue;
            }
            let to = dest.join(&name);
            if let Ok(meta) = to.symlink_metadata() {
                if meta.is_dir() {
                    std::fs::remove_dir_all(&to)
                } else {
                    std::fs::remove_file(&to)
                }
                .with_context(|| format!("replacing {}", to.display()))?;
            }
            std::fs::rename(entry.path(), &to).with_context(|| {
                format!("moving {} to {}", entry.path().display(), to.display())
            })?;
        }
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))
    }
}

/// cust_raw's pre-generated bindings (its `src/cuda.rs`), whose function names the stub must
/// export too: looked up in the cargo registry, fetched with `cargo fetch` when absent.
fn cust_raw_bindings(root: &Path) -> Vec<PathBuf> {
    let find = || -> Vec<PathBuf> {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
        let Some(registry) = home.map(|h| h.join("registry/src")) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for index in std::fs::read_dir(registry).into_iter().flatten().flatten() {
            for krate in std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if krate.file_name().to_string_lossy().starts_with("cust_raw-") {
                    let file = krate.path().join("src/cuda.rs");
                    if file.is_file() {
                        found.push(file);
                    }
                }
            }
        }
        found.sort();
        found
    };
    let mut found = find();
    if found.is_empty() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        println!("setup-cuda: fetching crates (cust_raw's bindings name functions for the stub)");
        let _ = Command::new(cargo)
            .args(["fetch", "--quiet"])
            .current_dir(root)
            .status();
        found = find();
    }
    if found.is_empty() {
        println!(
            "setup-cuda: warning: cust_raw's src/cuda.rs not found in the cargo registry; the \
             stub exports the names of cuda.h only"
        );
    }
    found
}

fn is_driver_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 3
        && b.starts_with(b"cu")
        && b[2].is_ascii_uppercase()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Names `N` in `text` of the form `<keyword> <whitespace> N <whitespace>? (`, `keyword` a whole
/// word and `N` a driver-API name (`cu[A-Z]…`). Line breaks count as whitespace.
fn names_after(text: &str, keyword: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(keyword) {
        let start = from + pos;
        from = start + keyword.len();
        if start > 0 && is_ident_byte(b[start - 1]) {
            continue;
        }
        let mut i = from;
        let ws = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
        if ws == 0 {
            continue;
        }
        i += ws;
        let len = b[i..].iter().take_while(|&&c| is_ident_byte(c)).count();
        let name = &text[i..i + len];
        i += len;
        i += b[i..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
        if b.get(i) == Some(&b'(') && is_driver_name(name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Targets of API-version macros: `#define cuFoo cuFoo_v2`.
fn define_targets(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('#')?.trim_start();
            let mut words = rest.strip_prefix("define")?.split_whitespace();
            let (from, to) = (words.next()?, words.next()?);
            (is_driver_name(from) && is_driver_name(to)).then(|| to.to_string())
        })
        .collect()
}

/// `cuFoo` of every `PFN_cuFoo_v4000)` typedef (the `*Typedefs.h` headers list every versioned
/// entry point, including those of headers the wheels lack, such as cudaProfiler.h).
fn pfn_names(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("PFN_") {
        let start = from + pos + 4;
        from = start;
        let len = b[start..].iter().take_while(|&&c| is_ident_byte(c)).count();
        if b.get(start + len) != Some(&b')') {
            continue;
        }
        let ident = &text[start..start + len];
        if let Some(cut) = ident.rfind("_v") {
            let (name, version) = (&ident[..cut], &ident[cut + 2..]);
            if !version.is_empty()
                && version.bytes().all(|c| c.is_ascii_digit())
                && is_driver_name(name)
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// Every driver-API function name that `include/cuda.h` (and `cudaProfiler.h` when present)
/// can declare, plus the names bound by the `extra` Rust files (`pub fn cuFoo(`).
fn driver_api_names(include: &Path, extra: &[PathBuf]) -> Result<BTreeSet<String>> {
    let cuda_h = include.join("cuda.h");
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let mut headers = vec![cuda_h.clone()];
    if include.join("cudaProfiler.h").is_file() {
        headers.push(include.join("cudaProfiler.h"));
    }
    let mut names = BTreeSet::new();
    for h in &headers {
        let text = read(h)?;
        // Declarations as written (`CUresult CUDAAPI cuInit(`), possibly across lines.
        names.extend(names_after(&text, "CUDAAPI"));
        names.extend(define_targets(&text));
        // After the preprocessor, under each API-version mode: the `_v2`/`_ptsz` names the
        // macros map to, and the legacy names declared for __CUDA_API_VERSION_INTERNAL.
        for defines in [
            &[][..],
            &["-DCUDA_API_PER_THREAD_DEFAULT_STREAM"][..],
            &["-D__CUDA_API_VERSION_INTERNAL"][..],
        ] {
            let file = h
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            let mut child = Command::new("gcc")
                .args(["-E", "-P"])
                .args(defines)
                .arg(format!("-I{}", include.display()))
                .args(["-x", "c", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("running gcc -E (install build-essential)")?;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(format!("#include <{file}>\n").as_bytes())?;
            let out = child.wait_with_output()?;
            // Some modes do not preprocess cleanly; what did is still used.
            names.extend(names_after(
                &String::from_utf8_lossy(&out.stdout),
                "CUresult",
            ));
        }
    }
    for entry in
        std::fs::read_dir(include).with_context(|| format!("reading {}", include.display()))?
    {
        let path = entry?.path();
        if path.to_string_lossy().ends_with("Typedefs.h") {
            names.extend(pfn_names(&read(&path)?));
        }
    }
    for file in extra {
        names.extend(names_after(&read(file)?, "fn"));
    }
    if !names.contains("cuInit") || names.len() < 100 {
        bail!(
            "found only {} driver-API names in {} (expected hundreds, cuInit among them)",
            names.len(),
            cuda_h.display()
        );
    }
    Ok(names)
}

/// Writes `libcuda.syms`, `libcuda_stub.c`, a README and the compiled `libcuda.so` into `out`;
/// returns the number of functions.
fn make_libcuda_stub(include: &Path, out: &Path, extra: &[PathBuf]) -> Result<usize> {
    let names = driver_api_names(include, extra)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let syms: String = names.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(out.join("libcuda.syms"), syms)?;
    let mut c = String::from(
        "/* Link-time-only stub of the CUDA driver library, generated by `cargo xtask setup-cuda`.\n \
         * Every function returns CUDA_ERROR_STUB_LIBRARY (34). Never load it at run time: the\n \
         * GPU machine's driver provides the real libcuda.so.1. */\n",
    );
    for n in &names {
        c.push_str(&format!("int {n}(void) {{ return {STUB_RESULT}; }}\n"));
    }
    let src = out.join("libcuda_stub.c");
    std::fs::write(&src, c).with_context(|| format!("writing {}", src.display()))?;
    std::fs::write(
        out.join("README"),
        "libcuda.so here is a link-time-only stub made by `cargo xtask setup-cuda` (no CUDA wheel\n\
         ships one). Linking against it records the SONAME libcuda.so.1, which the GPU machine's\n\
         driver provides. Every function returns 34 = CUDA_ERROR_STUB_LIBRARY. Never put this\n\
         folder in a RUNPATH or LD_LIBRARY_PATH.\n",
    )?;
    let lib = out.join("libcuda.so");
    let tmp = out.join(".libcuda.so.tmp");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O0", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .context("running gcc (install build-essential)")?;
    if !status.success() {
        bail!(
            "gcc failed to build {} from {}",
            lib.display(),
            src.display()
        );
    }
    std::fs::rename(&tmp, &lib).with_context(|| format!("writing {}", lib.display()))?;
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_defines_and_typedefs_are_recognised() {
        let h = "CUresult CUDAAPI\ncuLinkCreate(unsigned int n);\n\
                 CUresult CUDAAPI cuInit (unsigned int Flags);\n\
                 #define cuCtxCreate cuCtxCreate_v4\n\
                 #  define cuMemAlloc                  cuMemAlloc_v2\n\
                 #define CUDA_VERSION 13000\n\
                 CUDAAPI notAName(void); xCUDAAPI cuNope(void);";
        assert_eq!(names_after(h, "CUDAAPI"), ["cuLinkCreate", "cuInit"]);
        assert_eq!(define_targets(h), ["cuCtxCreate_v4", "cuMemAlloc_v2"]);
        let t = "typedef CUresult (CUDAAPI *PFN_cuProfilerStart_v4000)(void);\n\
                 typedef CUresult (CUDAAPI *PFN_cuCtxCreate_v2_v3020)(CUcontext *pctx);\n\
                 #define PFN_cuFoo PFN_cuFoo_v1000";
        assert_eq!(pfn_names(t), ["cuProfilerStart", "cuCtxCreate_v2"]);
        assert_eq!(
            names_after("pub fn cuDevicePrimaryCtxRetain(\n", "fn"),
            ["cuDevicePrimaryCtxRetain"]
        );
    }
}
