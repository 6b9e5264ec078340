//! The magma-dnn runner. `cargo xtask <command>`; see `cargo xtask --help`.

mod apt;
mod bench;
mod test_cmd;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "magma-dnn tasks: training, tests, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a U-Net for image segmentation (the main job).
    TrainUnet,
    /// Install missing system packages, then run fmt check, clippy -D warnings and every test.
    Test {
        /// Only run the tests (skip fmt and clippy).
        #[arg(long)]
        quick: bool,
    },
    /// Benchmarks (results are recorded in docs/perf/).
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The `gemm` crate against `matrixmultiply` on conv-shaped problems.
    Gemm,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Run from the workspace root whatever the caller's directory.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))?;
    match cli.command {
        Cmd::TrainUnet => bail!(
            "train-unet is not available yet: the U-Net, its data pipeline and its training loop \
             arrive with the segmentation issue. Today the foundation (tensors, CPU ops with exact \
             gradients, autodiff) is in place; `cargo xtask test` exercises it."
        ),
        Cmd::Test { quick } => test_cmd::run(quick),
        Cmd::Bench { which } => match which {
            BenchCmd::Gemm => bench::gemm(),
        },
    }
}
