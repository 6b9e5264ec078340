//! The heavy half of the magma-dnn runner: every task that links the model and data crates.
//! Users run it through `cargo xtask <command>` (the light `xtask` package), which installs the
//! system packages first.

mod bench_unet;
mod convert_hdf5;
mod download_pets;
mod train_classifier;
mod unet_cmds;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "magma-dnn tasks (also: `cargo xtask test`, `cargo xtask setup`, `cargo xtask bench gemm|decode|conv`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a U-Net for image segmentation (the main job). With no options: a small U-Net on
    /// data/oxford-iiit-pet if present, else on the embedded synthetic set, on the CPU.
    TrainUnet(unet_cmds::TrainUnetArgs),
    /// Evaluate a checkpoint; prints one JSON object as its last line.
    EvalUnet(unet_cmds::EvalUnetArgs),
    /// Predict masks (PNG, trimap values) and overlays for an image or a folder of images.
    PredictUnet(unet_cmds::PredictUnetArgs),
    /// Train a LeNet-5-style CNN on MNIST, Fashion-MNIST or CIFAR-10 (CPU).
    TrainClassifier(train_classifier::TrainClassifierArgs),
    /// Convert a Pet folder, an images/ + masks/ folder or a .h5 file into one HDF5 file.
    ConvertHdf5(convert_hdf5::ConvertHdf5Args),
    /// U-Net training-step and inference throughput, optionally beside the PyTorch peer.
    BenchUnet(bench_unet::BenchUnetArgs),
    /// Download the real Oxford-IIIT Pet dataset into data/oxford-iiit-pet (resumable, verified).
    DownloadPets(download_pets::DownloadPetsArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Paths given on the command line are relative to where the user ran the command; tasks
    // run from the workspace root.
    let cwd = std::env::current_dir()?;
    // A binary carried to another machine (`cargo xtask gpu-bundle`) has no workspace there:
    // it then works from the current directory.
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap_or_else(|_| cwd.clone());
    std::env::set_current_dir(&root)?;
    match cli.command {
        Cmd::TrainUnet(args) => unet_cmds::train(args, &cwd, &root),
        Cmd::EvalUnet(args) => unet_cmds::eval(args, &cwd),
        Cmd::PredictUnet(args) => unet_cmds::predict(args, &cwd),
        Cmd::ConvertHdf5(args) => convert_hdf5::run(args, &cwd),
        Cmd::DownloadPets(args) => download_pets::run(args, &cwd),
        Cmd::TrainClassifier(args) => train_classifier::run(args, &cwd),
        Cmd::BenchUnet(args) => bench_unet::run(args, &root),
    }
}
