//! System packages the workspace needs, installed with apt when missing (saying so).

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian/Ubuntu packages the workspace builds against, and why.
pub const REQUIRED: &[(&str, &str)] = &[
    ("pkg-config", "finds the C libraries that -sys crates link"),
    ("build-essential", "C compiler and linker for -sys crates"),
    (
        "libhdf5-dev",
        "HDF5 weights, checkpoints and datasets (hdf5-metno)",
    ),
    (
        "python3-h5py",
        "tests check that h5py reads the HDF5 files we write",
    ),
    (
        "libopencv-dev",
        "image decoding and resizing (opencv crate: imgcodecs, imgproc)",
    ),
    (
        "clang",
        "the opencv crate generates its bindings with libclang",
    ),
    (
        "libclang-dev",
        "the opencv crate generates its bindings with libclang",
    ),
    ("fonts-dejavu-core", "the font of curves.png"),
    (
        "openmpi-bin",
        "mpirun for data-parallel training and its 2-rank test",
    ),
    (
        "libopenmpi-dev",
        "MPI headers and libraries the mpi crate builds against (train-unet --distributed)",
    ),
    (
        "dataset-fashion-mnist",
        "the default data of train-classifier and its reader tests",
    ),
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs every missing package of `wanted`, printing what and why.
pub fn ensure(wanted: &[(&str, &str)]) -> Result<()> {
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "xtask: no dpkg on this system; make sure these are installed: {}",
            names(wanted)
        );
        return Ok(());
    }
    let missing: Vec<&(&str, &str)> = wanted.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (p, why) in &missing {
        println!("xtask: installing apt package {p} ({why})");
    }
    let sudo = !is_root();
    let run = |args: &[&str]| -> Result<()> {
        let mut cmd = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            cmd.arg("apt-get");
        }
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    run(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(|(p, _)| *p));
    run(&args)
}

fn names(wanted: &[(&str, &str)]) -> String {
    wanted.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(" ")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
