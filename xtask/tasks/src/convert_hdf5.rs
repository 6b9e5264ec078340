//! `cargo xtask convert-hdf5`: a Pet folder, an images/ + masks/ folder or an HDF5 file into one
//! HDF5 segmentation file (schema in docs/data.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use dnn_data::{Hdf5WriteOptions, open_segmentation_detailed, write_segmentation_hdf5};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct ConvertHdf5Args {
    /// The dataset: an Oxford-IIIT Pet folder, an images/ + masks/ folder, or a .h5 file
    /// (a build without the `opencv` feature reads only .h5 files).
    #[arg(long)]
    data: PathBuf,
    /// The HDF5 file to write (replaced atomically when complete).
    #[arg(long)]
    out: PathBuf,
    /// Resize every sample to SIZE x SIZE (image by area averaging, mask nearest neighbour);
    /// without it every sample must already have the same size.
    #[arg(long)]
    size: Option<usize>,
    /// Which split: trainval, test or all (all keeps each sample's split in the file).
    #[arg(long, default_value = "all")]
    split: String,
    /// Decoding threads (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn run(args: ConvertHdf5Args, cwd: &Path) -> Result<()> {
    let data = cwd.join(&args.data);
    let out = cwd.join(&args.out);
    if args.size == Some(0) {
        bail!("--size must be at least 1");
    }
    let opened = open_segmentation_detailed(&data, &args.split)
        .with_context(|| format!("opening {}", data.display()))?;
    for w in &opened.warnings {
        eprintln!("warning: {w}");
    }
    let n = opened.source.len();
    println!(
        "convert-hdf5: {} ({}), {n} samples -> {}",
        opened.source.describe(),
        opened.layout,
        out.display()
    );
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} samples ({per_sec}, eta {eta})",
        )
        .context("progress bar template")?,
    );
    let progress_bar = bar.clone();
    let mut options = Hdf5WriteOptions::new(format!("{} ({})", data.display(), args.split))
        .with_splits(opened.split_names.clone(), opened.splits.clone())
        .with_progress(Arc::new(move |done, _| {
            progress_bar.set_position(done as u64)
        }));
    options.size = args.size;
    if let Some(w) = args.workers {
        options.workers = w.max(1);
    }
    let result = write_segmentation_hdf5(opened.source.as_ref(), &out, &options);
    bar.finish_and_clear();
    let summary = result.with_context(|| format!("writing {}", out.display()))?;
    let splits = summary
        .split_counts
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "wrote {}: {} samples {}x{} ({splits}), {} classes, {:.1} s, {}",
        summary.path.display(),
        summary.samples,
        summary.size[1],
        summary.size[0],
        summary.classes,
        summary.seconds,
        human_bytes(summary.file_bytes)
    );
    Ok(())
}
