//! `cargo xtask download-pets`: the official Oxford-IIIT Pet archives, resumable, verified
//! (size, MD5, SHA-256) and safely extracted into `data/oxford-iiit-pet/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Args;
use dnn_data::{DownloadEvent, DownloadOptions, download_pets, pet_archives};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct DownloadPetsArgs {
    /// Destination folder (default: data/oxford-iiit-pet in the workspace).
    #[arg(long)]
    dest: Option<PathBuf>,
    /// Keep the .tar.gz archives after extraction.
    #[arg(long)]
    keep_archives: bool,
}

pub fn run(args: DownloadPetsArgs, cwd: &Path) -> Result<()> {
    // The process runs from the workspace root; a path given by the user is relative to where
    // they ran the command.
    let dest = match &args.dest {
        Some(p) => cwd.join(p),
        None => PathBuf::from("data/oxford-iiit-pet"),
    };
    let total: u64 = pet_archives().iter().filter_map(|a| a.size).sum();
    println!(
        "download-pets: Oxford-IIIT Pet (CC BY-SA 4.0; Parkhi et al., CVPR 2012), about {} MB, into {}",
        total / 1_000_000,
        dest.display()
    );
    let bars: Arc<Mutex<HashMap<String, ProgressBar>>> = Arc::default();
    let style = ProgressStyle::with_template(
        "{msg:20} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    )
    .context("progress bar template")?;
    let bars2 = Arc::clone(&bars);
    let progress = move |event: &DownloadEvent| {
        let mut bars = bars2.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            DownloadEvent::Started {
                file_name,
                offset,
                total,
                url,
            } => {
                let bar = bars.entry(file_name.clone()).or_insert_with(|| {
                    let b = ProgressBar::new(total.unwrap_or(0));
                    b.set_style(style.clone());
                    b.set_message(file_name.clone());
                    b
                });
                if *offset > 0 {
                    bar.println(format!("resuming {file_name} at byte {offset} from {url}"));
                }
                if let Some(t) = total {
                    bar.set_length(*t);
                }
                bar.set_position(*offset);
            }
            DownloadEvent::Progress { file_name, done } => {
                if let Some(bar) = bars.get(file_name) {
                    bar.set_position(*done);
                }
            }
            DownloadEvent::Verifying { file_name } => {
                if let Some(bar) = bars.get(file_name) {
                    bar.finish_and_clear();
                }
                println!("verifying {file_name} (size, MD5, SHA-256)");
            }
            DownloadEvent::Extracting { file_name } => println!("extracting {file_name}"),
            DownloadEvent::AlreadyPresent { file_name } => {
                println!("{file_name}: already downloaded and extracted")
            }
            DownloadEvent::Retrying { file_name, reason } => {
                eprintln!("{file_name}: {reason}; retrying")
            }
        }
    };
    let options = DownloadOptions {
        keep_archives: args.keep_archives,
        progress: Some(Arc::new(progress)),
        ..DownloadOptions::default()
    };
    let result = download_pets(&dest, &options);
    for bar in bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
        bar.finish_and_clear();
    }
    result.with_context(|| format!("downloading Oxford-IIIT Pet into {}", dest.display()))?;
    println!(
        "done: {} holds images/ and annotations/ (trimaps, list.txt, trainval.txt, test.txt)",
        dest.display()
    );
    Ok(())
}
