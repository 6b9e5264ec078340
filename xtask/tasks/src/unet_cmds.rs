//! `cargo xtask train-unet`, `eval-unet` and `predict-unet`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
#[cfg(feature = "opencv")]
use dnn_data::image_io::{PixelsRef, encode_png, read_rgb};
use dnn_ops::{Backend, CpuBackend, Precision};
use unet::train::{AugmentKind, LossKind, TrainConfig, TrainRun};
use unet::{BlockKind, Device, UNetConfig, UpsampleKind, checkpoint};

/// Where the real dataset goes (`cargo xtask download-pets`).
pub const PET_DIR: &str = "data/oxford-iiit-pet";
/// Where the embedded synthetic dataset is generated when no real data is present.
pub const SYNTHETIC_DIR: &str = "data/synthetic-pets";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModelArg {
    Unet,
    Resunet,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UpsampleArg {
    Transpose,
    Bilinear,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LossArg {
    Ce,
    GaussianCe,
    Dice,
    CeDice,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AugmentArg {
    None,
    Hflip,
    Standard,
}

/// Where to run, shared by the U-Net commands.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// cpu, cuda (GPU 0) or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Math of the CUDA convolutions: fp32 (default), tf32 (tensor cores, ~1e-3 relative
    /// error) or bf16 (mixed precision: bf16 NHWC operands, fp32 accumulation, fp32 weights,
    /// optimizer state and batch-norm statistics; ~1e-2 relative error).
    #[arg(long, default_value = "fp32", value_parser = parse_precision)]
    precision: Precision,
    /// Shorthand for --precision tf32.
    #[arg(long, conflicts_with = "precision")]
    tf32: bool,
    /// GPU: deterministic convolution algorithms only, so that a run (and a resumed run)
    /// repeats bit for bit (PyTorch's `cudnn.deterministic = True`; also
    /// MAGMA_CUDA_DETERMINISTIC=1). Default: the fastest algorithms, as PyTorch. The CPU is
    /// always deterministic for a given thread count.
    #[arg(long)]
    deterministic: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_device(s: &str) -> std::result::Result<Device, String> {
    s.parse().map_err(|e: unet::UnetError| e.to_string())
}

fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    s.parse()
        .map_err(|e: dnn_ops::precision::UnknownPrecision| e.to_string())
}

impl DeviceArgs {
    /// Sizes the CPU thread pool and builds the backend.
    fn backend(&self) -> Result<Box<dyn Backend>> {
        if let Some(t) = self.threads {
            if t == 0 {
                bail!("--threads must be at least 1");
            }
            CpuBackend::set_threads(t).map_err(anyhow::Error::msg)?;
        }
        if self.precision() == Precision::Tf32 && self.device == Device::Cpu {
            eprintln!("note: TF32 has no effect on the CPU (it computes in fp32)");
        }
        Ok(self.device.backend(self.precision(), self.deterministic)?)
    }

    /// The precision asked for (`--tf32` is `--precision tf32`).
    fn precision(&self) -> Precision {
        if self.tf32 {
            Precision::Tf32
        } else {
            self.precision
        }
    }

    /// The CUDA backend itself (NCCL needs its stream).
    #[cfg(feature = "nccl")]
    fn cuda_backend(&self, ordinal: usize) -> Result<dnn_ops::CudaBackend> {
        self.backend()?; // sizes the CPU pool and checks the flags the same way
        Ok(unet::cuda_backend(
            ordinal,
            self.precision(),
            self.deterministic,
        )?)
    }
}

#[derive(Debug, Args)]
pub struct TrainUnetArgs {
    /// Oxford-IIIT Pet folder, images/+masks/ folder, or .h5 file (default: data/oxford-iiit-pet
    /// if present, else the embedded synthetic set, generated into data/synthetic-pets).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training split (trainval|test|all for Pet folders; a split name for .h5 files).
    #[arg(long, default_value = "trainval")]
    split: String,
    /// Validation data (default: the --val-split of --data).
    #[arg(long)]
    val_data: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    val_split: String,
    /// Training resolution (images and masks resized to SIZE×SIZE).
    #[arg(long, default_value_t = 96, value_parser = positive, allow_hyphen_values = true)]
    size: usize,
    /// Channels of the first level.
    #[arg(long, default_value_t = 8)]
    base: usize,
    /// Number of down/up levels.
    #[arg(long, default_value_t = 3)]
    depth: usize,
    #[arg(long, value_enum, default_value = "unet")]
    model: ModelArg,
    #[arg(long, value_enum, default_value = "transpose")]
    upsample: UpsampleArg,
    #[arg(long, value_enum, default_value = "ce")]
    loss: LossArg,
    #[arg(long, value_enum, default_value = "hflip")]
    augment: AugmentArg,
    #[arg(long, default_value_t = 20, value_parser = positive, allow_hyphen_values = true)]
    epochs: usize,
    #[arg(long, default_value_t = 8, value_parser = positive, allow_hyphen_values = true)]
    batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Loader threads decoding ahead of training.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[command(flatten)]
    device: DeviceArgs,
    /// Output folder (metrics.json, best.h5, last.h5, curves.png, predictions.png).
    #[arg(long, default_value = "runs/train-unet")]
    out: PathBuf,
    /// Continue the run in DIR (its last.h5) exactly where it stopped; --epochs may extend it.
    /// A damaged last.h5 is reported and the previous checkpoint (last.prev.h5) used instead.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Skip a batch whose loss or gradients hold NaN/Inf (with a warning naming the step and
    /// layer) instead of stopping, at most N batches in a row (default: stop at the first; with
    /// --resume: the run's own setting).
    #[arg(long, value_name = "N")]
    skip_nonfinite: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Data-parallel training, one process per rank, started by `mpirun -np N` (build with
    /// `--features mpi`); --batch is per rank, rank 0 writes the files. See docs/distributed.md.
    #[arg(long)]
    distributed: bool,
}

/// The number of ranks an MPI launcher says this process belongs to (`mpirun`, `mpiexec`,
/// `srun`), read from the environment without initialising MPI.
fn launcher_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// The communicator of `--distributed`.
type World = Box<dyn dnn_layers::distributed::Communicator>;

/// The backend of a run and, with `--distributed`, its communicator: NCCL for CUDA devices in a
/// build with the `nccl` feature (one process per GPU, ranks from the launcher's variables, the
/// NCCL id exchanged through a file in the output folder), else MPI in a build with `mpi`.
#[cfg_attr(not(feature = "nccl"), allow(unused_variables))]
fn backend_and_world(
    args: &TrainUnetArgs,
    out: &Path,
) -> Result<(Box<dyn Backend>, Option<World>)> {
    if !args.distributed {
        return Ok((args.device.backend()?, None));
    }
    #[cfg(feature = "nccl")]
    if let Device::Cuda { ordinal } = args.device.device {
        use dnn_layers::distributed::bootstrap::{FileBootstrap, Launch};
        use dnn_layers::distributed::nccl::NcclCommunicator;
        let launch = Launch::from_env_or_single()?;
        let cuda = args.device.cuda_backend(ordinal)?;
        let bootstrap = FileBootstrap::new(out.join(".bootstrap"), &launch.job_name("nccl"))?
            .with_timeout(dnn_layers::distributed::bootstrap::timeout_from_env()?);
        let comm = NcclCommunicator::with_file_bootstrap(
            &cuda,
            launch.rank,
            launch.world_size,
            &bootstrap,
        )
        .with_context(|| {
            format!(
                "joining NCCL as rank {} of {} ({})",
                launch.rank, launch.world_size, launch.source
            )
        })?;
        return Ok((Box::new(cuda), Some(Box::new(comm))));
    }
    Ok((args.device.backend()?, mpi_world()?))
}

/// MPI's world, checked to have been started by mpirun.
#[cfg(feature = "mpi")]
fn mpi_world() -> Result<Option<World>> {
    use dnn_layers::distributed::mpi::{MpiCommunicator, launched_by_mpirun};
    if !launched_by_mpirun() {
        bail!(
            "--distributed runs one process per rank started by MPI's launcher, and this process \
             was not started by one: run e.g. `mpirun -np 2 target/release/xtask-tasks \
             train-unet --distributed …` (see docs/distributed.md)"
        );
    }
    Ok(Some(Box::new(
        MpiCommunicator::init().context("initialising MPI")?,
    )))
}

#[cfg(not(feature = "mpi"))]
fn mpi_world() -> Result<Option<World>> {
    bail!(
        "--distributed needs MPI (CPU, or GPUs without NCCL) or NCCL (--device cuda), and this \
         binary was built with neither: build with `cargo build --release -p xtask-tasks \
         --features mpi` (needs openmpi-bin and libopenmpi-dev) and run `mpirun -np N \
         target/release/xtask-tasks train-unet --distributed …`, or with `--features nccl` for \
         one process per GPU (see docs/distributed.md)"
    )
}

/// A whole number of at least 1 (`--epochs`, `--batch`, `--size`).
fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(v) if v >= 1 => usize::try_from(v).map_err(|_| format!("{v} is too large")),
        Ok(v) => Err(format!("must be at least 1, got {v}")),
        Err(_) => Err(format!("must be a whole number of at least 1, got {s:?}")),
    }
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// The dataset to use when `--data` is not given, generating the synthetic set if needed.
/// `verbose`: say which data is used (rank 0 of a distributed run; the others stay quiet).
fn default_data(root: &Path, verbose: bool) -> Result<PathBuf> {
    let pets = root.join(PET_DIR);
    if pets.join("annotations").exists() {
        if verbose {
            println!("data: {} (Oxford-IIIT Pet found)", pets.display());
        }
        return Ok(pets);
    }
    let synth = root.join(SYNTHETIC_DIR);
    #[cfg(not(feature = "opencv"))]
    if !synth.join("annotations/list.txt").exists() {
        bail!(
            "no --data given, no {PET_DIR}, and this build has no OpenCV to generate the \
             synthetic set: pass --data FILE.h5 (made by `cargo xtask convert-hdf5`)"
        );
    }
    #[cfg(feature = "opencv")]
    if !synth.join("annotations/list.txt").exists() {
        println!(
            "data: no {PET_DIR}; generating the embedded synthetic Pet-layout set into {} (run `cargo xtask download-pets` for the real one)",
            synth.display()
        );
        let config = dnn_data::SyntheticConfig {
            images: 360,
            size: [96, 96],
            test_fraction: 1.0 / 6.0,
            seed: 7,
            ..dnn_data::SyntheticConfig::default()
        };
        dnn_data::generate_synthetic_pets(&synth, &config)
            .with_context(|| format!("generating {}", synth.display()))?;
    } else if verbose {
        println!(
            "data: {} (embedded synthetic set; no {PET_DIR})",
            synth.display()
        );
    }
    Ok(synth)
}

/// [`default_data`] for every rank: rank 0 finds or generates the data set while the others
/// wait, so that no two ranks generate it at once.
fn shared_default_data(root: &Path, world: Option<&mut World>) -> Result<PathBuf> {
    if let Some(world) = world {
        if world.rank() == 0 {
            let data = default_data(root, true)?;
            world.barrier()?;
            return Ok(data);
        }
        world.barrier()?;
        return default_data(root, false);
    }
    default_data(root, true)
}

pub fn train(args: TrainUnetArgs, cwd: &Path, root: &Path) -> Result<()> {
    if !args.distributed
        && let Some(n) = launcher_ranks().filter(|&n| n > 1)
    {
        bail!(
            "started by an MPI launcher as one of {n} ranks but without --distributed: every \
             rank would train alone and write the same files; add --distributed"
        );
    }
    let out = absolute(cwd, &args.out);
    let (backend, mut world) = backend_and_world(&args, &out)?;
    let result = train_on(&args, cwd, root, backend.as_ref(), world.as_mut());
    if let (Err(e), Some(world)) = (&result, world.as_mut())
        && world.size() > 1
    {
        // The other ranks may be waiting in a collective: end the whole job.
        eprintln!("{}: error: {e:#}", world.describe());
        world.abort(1);
    }
    result
}

fn train_on(
    args: &TrainUnetArgs,
    cwd: &Path,
    root: &Path,
    backend: &dyn Backend,
    world: Option<&mut World>,
) -> Result<()> {
    let out = absolute(cwd, &args.out);
    let is_root = world.as_ref().is_none_or(|w| w.rank() == 0);
    let mut world = world;
    let default_dataset = if args.data.is_none() && args.resume.is_none() {
        Some(shared_default_data(root, world.as_deref_mut())?)
    } else {
        None
    };
    let mut log = |line: &str| println!("{line}");
    let mut fit = |config: &TrainConfig,
                   unet_config: &UNetConfig,
                   run: &TrainRun,
                   resume: Option<(&checkpoint::LoadedCheckpoint, &Path)>|
     -> Result<unet::train::TrainSummary> {
        Ok(match world.as_mut() {
            Some(world) => unet::train::train_distributed(
                config,
                unet_config,
                run,
                backend,
                resume,
                world.as_mut(),
                &mut log,
            )?,
            None => unet::train::train(config, unet_config, run, backend, resume, &mut log)?,
        })
    };
    let summary = if let Some(dir) = &args.resume {
        let dir = absolute(cwd, dir);
        let latest = checkpoint::load_latest(&dir)
            .with_context(|| format!("resuming from {}", dir.display()))?;
        for why in &latest.skipped {
            if is_root {
                eprintln!("warning: not resuming from it: {why}");
            }
        }
        if !latest.skipped.is_empty() && is_root {
            eprintln!(
                "warning: falling back to the previous good checkpoint {} (epoch {})",
                latest.path.display(),
                latest.checkpoint.meta.epoch
            );
        }
        let (ck, path) = (latest.checkpoint, latest.path);
        let mut config = ck.meta.train.clone();
        config.epochs = args.epochs.max(ck.meta.epoch);
        if let Some(n) = args.skip_nonfinite {
            config.skip_nonfinite = n;
        }
        let out = if args.out == Path::new("runs/train-unet") {
            path.parent().unwrap_or(&out).to_path_buf()
        } else {
            out
        };
        let unet_config = ck.meta.unet.clone();
        let run = TrainRun {
            out,
            progress: !args.quiet,
        };
        fit(&config, &unet_config, &run, Some((&ck, &path)))?
    } else {
        let data = match &args.data {
            Some(p) => absolute(cwd, p),
            None => default_dataset.clone().context("no default data set")?,
        };
        let config = TrainConfig {
            data,
            split: args.split.clone(),
            val_data: args.val_data.as_ref().map(|p| absolute(cwd, p)),
            val_split: args.val_split.clone(),
            size: args.size,
            loss: match args.loss {
                LossArg::Ce => LossKind::Ce,
                LossArg::GaussianCe => LossKind::GaussianCe,
                LossArg::Dice => LossKind::Dice,
                LossArg::CeDice => LossKind::CeDice,
            },
            epochs: args.epochs,
            batch: args.batch,
            lr: args.lr,
            seed: args.seed,
            augment: match args.augment {
                AugmentArg::None => AugmentKind::None,
                AugmentArg::Hflip => AugmentKind::Hflip,
                AugmentArg::Standard => AugmentKind::Standard,
            },
            workers: args.workers,
            skip_nonfinite: args.skip_nonfinite.unwrap_or(0),
        };
        let classes = dnn_data::open_segmentation(&config.data, &config.split)
            .with_context(|| format!("opening {}", config.data.display()))?
            .class_names()
            .len();
        let unet_config = UNetConfig::new(3, classes)
            .with_base(args.base)
            .with_depth(args.depth)
            .with_upsample(match args.upsample {
                UpsampleArg::Transpose => UpsampleKind::TransposedConv,
                UpsampleArg::Bilinear => UpsampleKind::Bilinear,
            })
            .with_block(match args.model {
                ModelArg::Unet => BlockKind::Plain,
                ModelArg::Resunet => BlockKind::Residual,
            });
        let run = TrainRun {
            out,
            progress: !args.quiet,
        };
        fit(&config, &unet_config, &run, None)?
    };
    if !is_root {
        return Ok(());
    }
    println!(
        "wrote {}/{{metrics.json, best.h5, last.h5, curves.png, predictions.png}}",
        summary.out.display()
    );
    println!("{}", summary.final_line());
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvalUnetArgs {
    /// A checkpoint (best.h5 or last.h5) written by train-unet.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset to evaluate on (Pet folder, images/+masks/ folder, or .h5).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn eval(args: EvalUnetArgs, cwd: &Path) -> Result<()> {
    let backend = args.device.backend()?;
    let path = absolute(cwd, &args.checkpoint);
    let ck = checkpoint::load(&path)?;
    let mut model = ck.build_model(&path)?;
    let mut config = ck.meta.train.clone();
    config.batch = args.batch.max(1);
    let source: std::sync::Arc<dyn dnn_data::SegmentationSource> =
        dnn_data::open_segmentation(&absolute(cwd, &args.data), &args.split)?.into();
    eprintln!(
        "eval: {} on {} ({} images)",
        path.display(),
        source.describe(),
        source.len()
    );
    let loader = unet::train::loader(source, &config, false)?;
    let loss = config.loss.build();
    let report = unet::metrics::evaluate(&mut model, backend.as_ref(), &loader, loss.as_ref())?;
    println!("{}", report.json_line());
    Ok(())
}

#[derive(Debug, Args)]
pub struct PredictUnetArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// An image, or a folder of images.
    #[arg(long)]
    input: PathBuf,
    /// Where to write NAME_mask.png (trimap values: class + 1) and NAME_overlay.png.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

#[cfg(feature = "opencv")]
fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png" | "bmp" | "gif" | "webp" | "tif" | "tiff")
    )
}

#[cfg(not(feature = "opencv"))]
pub fn predict(_args: PredictUnetArgs, _cwd: &Path) -> Result<()> {
    bail!("predict-unet reads and writes images, and this build has no OpenCV (feature `opencv`)")
}

#[cfg(feature = "opencv")]
pub fn predict(args: PredictUnetArgs, cwd: &Path) -> Result<()> {
    let backend = args.device.backend()?;
    let path = absolute(cwd, &args.checkpoint);
    let ck = checkpoint::load(&path)?;
    let mut model = ck.build_model(&path)?;
    let input = absolute(cwd, &args.input);
    let mut files: Vec<PathBuf> = if input.is_dir() {
        std::fs::read_dir(&input)
            .with_context(|| format!("reading {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect()
    } else if input.is_file() {
        vec![input.clone()]
    } else {
        bail!("{}: no such file or folder", input.display());
    };
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no image files (jpg, png, bmp, gif, webp, tif) found",
            input.display()
        );
    }
    let out = absolute(cwd, &args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let (mut done, mut failed) = (0, 0);
    for file in &files {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let result = (|| -> Result<()> {
            let image = read_rgb(file)?;
            let mask = unet::predict::predict_mask(
                &mut model,
                backend.as_ref(),
                &image,
                ck.meta.train.size,
            )?;
            let trimap: Vec<u8> = mask.data.iter().map(|&k| k + 1).collect();
            encode_png(
                &out.join(format!("{stem}_mask.png")),
                PixelsRef {
                    width: mask.width,
                    height: mask.height,
                    channels: 1,
                    data: &trimap,
                },
            )?;
            let over = unet::predict::overlay(&image, &mask, &ck.meta.class_names);
            encode_png(&out.join(format!("{stem}_overlay.png")), (&over).into())?;
            Ok(())
        })();
        match result {
            Ok(()) => done += 1,
            Err(e) => {
                failed += 1;
                eprintln!("predict-unet: skipped: {e:#}");
            }
        }
    }
    println!(
        "predict-unet: {done} images written to {} ({failed} skipped)",
        out.display()
    );
    if done == 0 {
        bail!("no image could be predicted");
    }
    Ok(())
}
