//! `cargo xtask train-classifier`: a LeNet-5-style CNN on MNIST, Fashion-MNIST or CIFAR-10.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use dnn_data::{LabeledImages, Split};
use dnn_layers::loss::CrossEntropyLoss;
use dnn_layers::models::lenet5;
use dnn_layers::optim::{Adam, CosineLr};
use dnn_layers::{FitConfig, Model, Module};
use dnn_ops::CpuBackend;
use magma_tensor::SeededRng;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DatasetKind {
    FashionMnist,
    Mnist,
    Cifar10,
}

#[derive(Debug, Args)]
pub struct TrainClassifierArgs {
    /// Which dataset format to read.
    #[arg(long, value_enum, default_value = "fashion-mnist")]
    dataset: DatasetKind,
    /// Folder with the dataset files (default: Debian's Fashion-MNIST, or data/<dataset>).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Write the trained weights here (HDF5).
    #[arg(long)]
    save: Option<PathBuf>,
}

fn default_dir(kind: DatasetKind) -> PathBuf {
    match kind {
        DatasetKind::FashionMnist => PathBuf::from("/usr/share/datasets/fashion-mnist"),
        DatasetKind::Mnist => PathBuf::from("data/mnist"),
        DatasetKind::Cifar10 => PathBuf::from("data/cifar-10-batches-bin"),
    }
}

fn load(kind: DatasetKind, dir: &std::path::Path, split: Split) -> Result<LabeledImages> {
    let data = match kind {
        DatasetKind::FashionMnist => dnn_data::load_fashion_mnist(dir, split),
        DatasetKind::Mnist => dnn_data::load_mnist(dir, split),
        DatasetKind::Cifar10 => dnn_data::load_cifar10(dir, split),
    };
    data.with_context(|| format!("loading {kind:?} ({split:?}) from {}", dir.display()))
}

pub fn run(args: TrainClassifierArgs, cwd: &std::path::Path) -> Result<()> {
    if args.epochs == 0 || args.batch == 0 || args.lr.is_nan() || args.lr <= 0.0 {
        bail!(
            "--epochs, --batch and --lr must be positive (got {}, {}, {})",
            args.epochs,
            args.batch,
            args.lr
        );
    }
    if let Some(t) = args.threads {
        CpuBackend::set_threads(t).map_err(anyhow::Error::msg)?;
    }
    let dir = args
        .data
        .as_ref()
        .map(|p| cwd.join(p))
        .unwrap_or_else(|| default_dir(args.dataset));
    if !dir.exists() {
        let hint = match args.dataset {
            DatasetKind::FashionMnist => {
                "install Debian's dataset-fashion-mnist package or pass --data"
            }
            _ => "pass --data with the dataset's folder",
        };
        bail!("{} does not exist: {hint}", dir.display());
    }
    let mut train = load(args.dataset, &dir, Split::Train)?;
    let test = load(args.dataset, &dir, Split::Test)?;
    if let Some(n) = args.limit {
        let idx: Vec<usize> = (0..n.min(train.len())).collect();
        train = train.subset(&idx)?;
    }
    let [c, h, w] = train.image_shape();
    if h != w {
        bail!("expected square images, got {h}×{w}");
    }
    println!(
        "train-classifier: {:?} from {} — {} train / {} test images {c}×{h}×{w}, {} classes; {} CPU threads",
        args.dataset,
        dir.display(),
        train.len(),
        test.len(),
        train.classes(),
        CpuBackend::threads()
    );
    let mut rng = SeededRng::new(args.seed);
    let net = lenet5(c, h, train.classes(), 0.3, &mut rng)?;
    println!("{}", net.summary(&[args.batch, c, h, w]));
    let optimizer = Adam::new(args.lr);
    println!(
        "optimizer: {}, cosine schedule over {} epochs, batch {}",
        optimizer.describe_short(),
        args.epochs,
        args.batch
    );
    let mut model = Model::new(net, CrossEntropyLoss::new(), optimizer, CpuBackend::new())
        .with_schedule(CosineLr {
            total_epochs: args.epochs,
            min_lr: args.lr * 0.01,
        });
    let started = Instant::now();
    let cfg = FitConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        seed: args.seed,
        ..Default::default()
    };
    model.fit(&train, Some(&test), &cfg)?;
    let wall = started.elapsed().as_secs_f64();
    let eval = model.evaluate(&test, 256)?;
    let acc = eval.accuracy.unwrap_or(f32::NAN);
    println!(
        "final: test_accuracy={acc:.4} test_loss={:.4} wall_time={wall:.1}s ({:.0} train img/s) parameters={}",
        eval.loss,
        (train.len() * args.epochs) as f64 / wall,
        model.network.parameter_count()
    );
    if let Some(path) = &args.save {
        let path = cwd.join(path);
        model.save_weights(&path)?;
        println!("weights written to {}", path.display());
    }
    Ok(())
}
