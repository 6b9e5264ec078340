//! `cargo xtask bench-unet`: U-Net training-step and inference throughput on one backend, side by
//! side with the PyTorch peer (`peers/pytorch/bench_unet.py`) run in the same invocation.
//!
//! One training step = forward + pixel-wise cross-entropy + backward + Adam, the step of the
//! performance issues. FLOPs are counted analytically (convolutions and transposed convolutions,
//! forward and both backward products, no input gradient for the first layer), which reproduces
//! PyTorch's FlopCounterMode figure (288.8 GFLOP per 256² image at base 64).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use dnn_layers::distributed::{Communicator, Local};
use dnn_layers::loss::{CrossEntropyLoss, Loss};
use dnn_layers::optim::{Adam, Optimizer};
use dnn_layers::{Mode, Module};
use dnn_ops::{Backend, Graph, Precision, Tensor};
use magma_tensor::SeededRng;
use unet::{Device, UNet, UNetConfig};

#[derive(Debug, Args)]
pub struct BenchUnetArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Comma-separated BASE:SIZE:BATCH triples (U-Net depth 4, 3 classes).
    #[arg(long, default_value = "16:128:8")]
    configs: String,
    /// Comma-separated precision modes: fp32 (TF32 off), tf32 and bf16 (mixed precision; the
    /// PyTorch peer runs TF32 and bf16 channels-last, bf16 under autocast).
    #[arg(long, default_value = "fp32")]
    modes: String,
    /// Timed training steps per configuration.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed warm-up steps (algorithm search, allocator warm-up).
    #[arg(long, default_value_t = 3)]
    warm: usize,
    /// CPU threads (CPU backend; also passed to the peer).
    #[arg(long)]
    threads: Option<usize>,
    /// Also run the PyTorch peer with this Python (e.g. python3) and print the ratios.
    #[arg(long)]
    peer: Option<String>,
    /// Modes the peer also measures under torch.compile (e.g. bf16); shown in extra columns.
    #[arg(long, default_value = "")]
    peer_compile: String,
    /// Write the JSON lines of both sides here as well.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Data-parallel over GPUs (NCCL; one process per GPU, ranks from the launcher's variables
    /// as for `train-unet --distributed`): BATCH is per GPU, rank r trains on the r-th slice of
    /// one global batch, gradients are averaged; rank 0 prints the totals and the step losses.
    #[arg(long)]
    distributed: bool,
    /// Deterministic convolution algorithms only, on both sides (ours: as `train-unet
    /// --deterministic`; the peer: `torch.backends.cudnn.deterministic = True`). Default: the
    /// fastest algorithms on both sides, each framework's default. Also
    /// MAGMA_CUDA_DETERMINISTIC=1.
    #[arg(long)]
    deterministic: bool,
    /// Bracket the timed training steps with cuProfilerStart/Stop, for
    /// `ncu --profile-from-start off` (CUDA only).
    #[arg(long)]
    profile_steps: bool,
}

impl BenchUnetArgs {
    /// `--deterministic` or MAGMA_CUDA_DETERMINISTIC=1.
    fn is_deterministic(&self) -> bool {
        self.deterministic || dnn_ops::precision::deterministic_from_env()
    }
}

fn parse_device(s: &str) -> std::result::Result<Device, String> {
    s.parse().map_err(|e: unet::UnetError| e.to_string())
}

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
struct Measurement {
    side: &'static str,
    device: String,
    mode: String,
    base: usize,
    size: usize,
    batch: usize,
    train_img_s: f64,
    train_tflops: f64,
    infer_img_s: f64,
    /// Peak device memory allocated (GPU: requests rounded to 512 B, PyTorch's
    /// `max_memory_allocated`) or peak resident set (CPU), GiB.
    peak_gib: f64,
    /// GPU: peak of the allocator's blocks held by live buffers (sizes rounded to its 2 MiB
    /// blocks), GiB; the CPU's peak resident set again.
    peak_reserved_gib: f64,
    loss: f32,
    /// Ranks (GPUs) of a `--distributed` run, 1 otherwise.
    ranks: usize,
    /// Whether convolution algorithms were limited to deterministic ones when any succeeded
    /// (`--deterministic`, on both sides; default no, as PyTorch's default).
    deterministic: bool,
    /// Training images per second and GPU.
    per_rank_img_s: f64,
    /// The mean loss over the global batch of every step, warm-up included.
    step_losses: Vec<f32>,
}

/// Training FLOPs per image of the depth-`depth` U-Net (see the module doc).
pub fn train_flops_per_image(base: usize, size: usize, depth: usize) -> f64 {
    let ch: Vec<f64> = (0..=depth).map(|i| (base << i) as f64).collect();
    let conv = |ci: f64, co: f64, k: f64, h: f64, first: bool| {
        2.0 * k * k * ci * co * h * h * if first { 2.0 } else { 3.0 }
    };
    let res = |i: usize| (size >> i) as f64;
    let mut total = 0.0;
    for i in 0..depth {
        let cin = if i == 0 { 3.0 } else { ch[i - 1] };
        total += conv(cin, ch[i], 3.0, res(i), i == 0) + conv(ch[i], ch[i], 3.0, res(i), false);
    }
    total += conv(ch[depth - 1], ch[depth], 3.0, res(depth), false)
        + conv(ch[depth], ch[depth], 3.0, res(depth), false);
    for i in (0..depth).rev() {
        total += 2.0 * 4.0 * ch[i + 1] * ch[i] * res(i + 1) * res(i + 1) * 3.0;
        total +=
            conv(2.0 * ch[i], ch[i], 3.0, res(i), false) + conv(ch[i], ch[i], 3.0, res(i), false);
    }
    total + conv(ch[0], 3.0, 1.0, res(0), false)
}

fn random_batch(batch: usize, size: usize, rng: &mut SeededRng) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| rng.normal(0.0, 1.0))
        .collect();
    let y: Vec<f32> = (0..batch * size * size)
        .map(|_| rng.below(3) as f32)
        .collect();
    Ok((
        Tensor::from_vec(x, &[batch, 3, size, size])?,
        Tensor::from_vec(y, &[batch, size, size])?,
    ))
}

/// Host seconds spent queuing each phase of the training steps (the host does not wait for the
/// device except when a pinned upload buffer is still in use, so a phase that takes longer than
/// its launches shows the device running behind).
#[derive(Debug, Default)]
struct HostPhases {
    forward: f64,
    backward: f64,
    reduce: f64,
    update: f64,
}

impl HostPhases {
    fn describe(&self, steps: usize) -> String {
        let ms = |s: f64| 1e3 * s / steps.max(1) as f64;
        format!(
            "host time per step queuing forward {:.2} ms, backward {:.2} ms, gradient all-reduce \
             {:.2} ms, update {:.2} ms",
            ms(self.forward),
            ms(self.backward),
            ms(self.reduce),
            ms(self.update)
        )
    }
}

/// One training step, queued: returns the loss as a device value (summed over ranks) without
/// waiting for it, so that the host queues the next step while this one runs (as the peer does).
fn train_step(
    backend: &dyn Backend,
    model: &mut UNet,
    adam: &mut Adam,
    (x, y): (&Tensor, &Tensor),
    comm: &mut dyn Communicator,
    phases: &mut HostPhases,
) -> Result<Tensor> {
    let loss = CrossEntropyLoss {
        class_weights: None,
        ignore_index: None,
    };
    let mut lap = Instant::now();
    let mut take = |slot: &mut f64| {
        *slot += lap.elapsed().as_secs_f64();
        lap = Instant::now();
    };
    let g = Graph::new(backend);
    let input = g.input(x.clone());
    let logits = model.forward(&g, input, Mode::Train)?;
    let l = loss.compute(&g, logits, y)?;
    let mut value = g.value(l);
    take(&mut phases.forward);
    let mut grads = g.backward(l)?;
    drop(g);
    take(&mut phases.backward);
    if comm.size() > 1 {
        unet::train::all_reduce_gradients(comm, backend, model, &mut grads, &mut [&mut value])?;
    }
    take(&mut phases.reduce);
    adam.step(backend, model, &grads)?;
    take(&mut phases.update);
    Ok(value)
}

/// The mean losses over ranks of queued steps (reading them waits for the steps).
fn read_losses(values: &[Tensor], ranks: usize) -> Result<Vec<f32>> {
    values
        .iter()
        .map(|v| Ok((f64::from(v.item()?) / ranks as f64) as f32))
        .collect()
}

/// Waits for the backend's queued work (a 1-element read is a synchronisation point).
fn sync(backend: &dyn Backend, probe: &Tensor) -> Result<()> {
    backend.sum_all(probe)?.item()?;
    Ok(())
}

/// Peak memory so far, GiB, as `[allocated, reserved]`: the CUDA allocator's peak of live
/// requests and of the blocks they held, or the process's peak resident set twice.
fn peak_gib(device: Device) -> [f64; 2] {
    match device {
        Device::Cpu => {
            let rss = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|v| v.parse::<f64>().ok())
                    })
                })
                .map_or(f64::NAN, |kib| kib / (1024.0 * 1024.0));
            [rss, rss]
        }
        Device::Cuda { ordinal } => cuda_peak_gib(ordinal),
    }
}

#[cfg(feature = "cuda")]
fn cuda_peak_gib(ordinal: usize) -> [f64; 2] {
    let gib = |bytes: usize| bytes as f64 / (1u64 << 30) as f64;
    magma_tensor::cuda::CudaDevice::get(ordinal)
        .map(|d| {
            let stats = d.memory_stats();
            [gib(stats.peak_allocated), gib(stats.peak_in_use)]
        })
        .unwrap_or([f64::NAN; 2])
}

#[cfg(not(feature = "cuda"))]
fn cuda_peak_gib(_ordinal: usize) -> [f64; 2] {
    [f64::NAN; 2]
}

#[cfg(feature = "cuda")]
fn reset_peak(device: Device) {
    if let Device::Cuda { ordinal } = device
        && let Ok(d) = magma_tensor::cuda::CudaDevice::get(ordinal)
    {
        // Cached blocks of the previous configuration go back to the driver first.
        let _ = d.empty_cache();
        d.reset_peak_memory();
    }
}

#[cfg(not(feature = "cuda"))]
fn reset_peak(_device: Device) {}

/// Starts or stops the profiler's range around the timed steps when `--profile-steps` asks.
#[cfg(feature = "cuda")]
fn profiler_range(args: &BenchUnetArgs, start: bool) -> Result<()> {
    if let (true, Device::Cuda { ordinal }) = (args.profile_steps, args.device) {
        magma_tensor::cuda::CudaDevice::get(ordinal)?.profiler_range(start)?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn profiler_range(args: &BenchUnetArgs, _start: bool) -> Result<()> {
    if args.profile_steps {
        bail!("--profile-steps needs a CUDA build");
    }
    Ok(())
}

/// The precision of a benchmark mode (fp32, tf32, bf16).
fn mode_precision(mode: &str) -> Result<Precision> {
    mode.parse::<Precision>().map_err(anyhow::Error::msg)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    args: &BenchUnetArgs,
    mode: &str,
    base: usize,
    size: usize,
    batch: usize,
    backend: &dyn Backend,
    comm: &mut dyn Communicator,
) -> Result<Measurement> {
    reset_peak(args.device);
    let config = UNetConfig::new(3, 3).with_base(base).with_depth(4);
    let mut model = UNet::new(&config, &mut SeededRng::new(0))?;
    let mut adam = Adam::new(1e-3);
    // One global batch of ranks × batch images; rank r trains on the r-th slice, so a run on
    // N GPUs sees exactly the data of a 1-GPU run with batch N × batch.
    let (ranks, rank) = (comm.size(), comm.rank());
    let (gx, gy) = random_batch(batch * ranks, size, &mut SeededRng::new(1))?;
    // The images live on the device, as the peer's do; the labels are read on the host by the
    // loss's label check, then copied (queued, without waiting) every step.
    // (`affine(x, 1, 0)`: a copy of x made by the backend, so on its device.)
    let x = backend.affine(&gx.narrow(0, rank * batch, batch)?.contiguous()?, 1.0, 0.0)?;
    let y = gy.narrow(0, rank * batch, batch)?.contiguous()?;
    let mut queued = Vec::new();
    let mut phases = HostPhases::default();
    for _ in 0..args.warm {
        queued.push(train_step(
            backend,
            &mut model,
            &mut adam,
            (&x, &y),
            comm,
            &mut phases,
        )?);
    }
    let mut step_losses = read_losses(&queued, ranks)?;
    // The host profile (when on) covers the timed steps only.
    let _ = dnn_ops::autodiff::host_profile::report(1);
    comm.barrier()?;
    profiler_range(args, true)?;
    let start = Instant::now();
    let mut queued = Vec::new();
    let mut phases = HostPhases::default();
    for _ in 0..args.iters {
        queued.push(train_step(
            backend,
            &mut model,
            &mut adam,
            (&x, &y),
            comm,
            &mut phases,
        )?);
    }
    let queued_s = start.elapsed().as_secs_f64();
    step_losses.extend(read_losses(&queued, ranks)?);
    comm.barrier()?;
    profiler_range(args, false)?;
    let train_s = start.elapsed().as_secs_f64();
    if comm.rank() == 0 {
        eprintln!(
            "note: {mode} {base}:{size}:{batch}: {}; all steps queued after {:.1} of {:.1} ms{}",
            phases.describe(args.iters),
            1e3 * queued_s,
            1e3 * train_s,
            if args.is_deterministic() {
                "; deterministic convolution algorithms"
            } else {
                ""
            }
        );
        if dnn_ops::autodiff::host_profile::enabled() {
            eprint!("{}", dnn_ops::autodiff::host_profile::report(args.iters));
        }
    }
    let loss = *step_losses.last().unwrap_or(&f32::NAN);
    if !loss.is_finite() {
        bail!("the benchmark's loss is {loss}: the step is broken");
    }
    let train_img_s = (args.iters * batch * ranks) as f64 / train_s;
    // Inference: forward only, evaluation mode, no tape; queued back to back, waited for once.
    let infer = |model: &mut UNet| -> Result<Tensor> {
        let g = Graph::inference(backend);
        let input = g.input(x.clone());
        let out = model.forward(&g, input, Mode::Eval)?;
        Ok(g.value(out))
    };
    for _ in 0..args.warm {
        infer(&mut model)?;
    }
    sync(backend, &x)?;
    let start = Instant::now();
    let mut last = None;
    for _ in 0..args.iters {
        last = Some(infer(&mut model)?);
    }
    if let Some(out) = last {
        sync(backend, &out)?;
    }
    let infer_img_s = (args.iters * batch) as f64 / start.elapsed().as_secs_f64();
    let peaks = peak_gib(args.device);
    Ok(Measurement {
        side: "magma-dnn",
        device: backend.name(),
        mode: mode.to_string(),
        base,
        size,
        batch,
        train_img_s,
        train_tflops: train_flops_per_image(base, size, 4) * train_img_s / 1e12,
        infer_img_s,
        peak_gib: peaks[0],
        peak_reserved_gib: peaks[1],
        deterministic: args.is_deterministic(),
        loss,
        ranks,
        per_rank_img_s: train_img_s / ranks as f64,
        step_losses,
    })
}

/// The NCCL communicator of `--distributed` (one process per GPU; see `train-unet`).
#[cfg(feature = "nccl")]
fn nccl_world(args: &BenchUnetArgs) -> Result<Box<dyn Communicator>> {
    use dnn_layers::distributed::bootstrap::{FileBootstrap, Launch, timeout_from_env};
    use dnn_layers::distributed::nccl::NcclCommunicator;
    let Device::Cuda { ordinal } = args.device else {
        bail!("bench-unet --distributed runs on GPUs through NCCL: pass --device cuda:LOCAL_RANK");
    };
    let launch = Launch::from_env_or_single()?;
    let cuda = dnn_ops::CudaBackend::new(ordinal)?;
    let bootstrap = FileBootstrap::new(
        std::env::temp_dir().join("magma-bench-bootstrap"),
        &launch.job_name("bench"),
    )?
    .with_timeout(timeout_from_env()?);
    Ok(Box::new(NcclCommunicator::with_file_bootstrap(
        &cuda,
        launch.rank,
        launch.world_size,
        &bootstrap,
    )?))
}

#[cfg(not(feature = "nccl"))]
fn nccl_world(_args: &BenchUnetArgs) -> Result<Box<dyn Communicator>> {
    bail!("bench-unet --distributed needs a build with the `nccl` feature (cargo xtask gpu-bundle)")
}

fn parse_configs(s: &str) -> Result<Vec<(usize, usize, usize)>> {
    s.split(',')
        .map(|c| {
            let v: Vec<usize> = c
                .split(':')
                .map(|x| x.trim().parse::<usize>())
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("--configs: {c:?} is not BASE:SIZE:BATCH"))?;
            match v[..] {
                [base, size, batch] if base > 0 && batch > 0 && size >= 16 && size % 16 == 0 => {
                    Ok((base, size, batch))
                }
                _ => bail!("--configs: {c:?} must be BASE:SIZE:BATCH with SIZE a multiple of 16"),
            }
        })
        .collect()
}

/// Runs the PyTorch peer; returns its JSON lines as (mode, base, size, batch, img/s, peak GiB).
fn run_peer(
    python: &str,
    args: &BenchUnetArgs,
    root: &std::path::Path,
) -> Result<Vec<serde_json::Value>> {
    let script = root.join("peers/pytorch/bench_unet.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args([
            "--dev",
            if args.device == Device::Cpu {
                "cpu"
            } else {
                "cuda"
            },
        ])
        .args(["--configs", &args.configs, "--modes", &args.modes])
        .args([
            "--iters",
            &args.iters.to_string(),
            "--warm",
            &args.warm.to_string(),
        ]);
    if let Some(t) = args.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    if !args.peer_compile.is_empty() {
        cmd.args(["--compile", &args.peer_compile]);
    }
    if args.is_deterministic() {
        cmd.arg("--deterministic");
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("train_img_s").is_some())
        .collect())
}

pub fn run(args: BenchUnetArgs, root: &std::path::Path) -> Result<()> {
    if let Some(t) = args.threads {
        dnn_ops::CpuBackend::set_threads(t).map_err(anyhow::Error::msg)?;
    }
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let configs = parse_configs(&args.configs)?;
    let mut ours = Vec::new();
    let mut comm: Option<Box<dyn Communicator>> = None;
    for mode in args.modes.split(',').map(str::trim) {
        let backend = args
            .device
            .backend(mode_precision(mode)?, args.is_deterministic())?;
        if args.distributed && comm.is_none() {
            comm = Some(nccl_world(&args)?);
        }
        let mut local = Local;
        let comm: &mut dyn Communicator = match comm.as_mut() {
            Some(c) => c.as_mut(),
            None => &mut local,
        };
        for &(base, size, batch) in &configs {
            let m = measure(&args, mode, base, size, batch, backend.as_ref(), comm)
                .with_context(|| format!("base {base}, {size}², batch {batch}, {mode}"))?;
            if comm.rank() == 0 {
                println!("{}", serde_json::to_string(&m)?);
            }
            ours.push(m);
        }
        if comm.rank() != 0 {
            ours.clear();
        }
    }
    if comm.as_ref().is_some_and(|c| c.rank() != 0) {
        return Ok(());
    }
    let peer = match &args.peer {
        Some(python) => run_peer(python, &args, root)?,
        None => Vec::new(),
    };
    for p in &peer {
        println!("{p}");
    }
    if let Some(path) = &args.json {
        let mut text = String::new();
        for m in &ours {
            text += &serde_json::to_string(m)?;
            text.push('\n');
        }
        for p in &peer {
            text += &p.to_string();
            text.push('\n');
        }
        dnn_data::image_io::write_atomic(path, text.as_bytes())?;
    }
    println!(
        "\n| config | mode | magma-dnn train img/s | TFLOP/s | infer img/s | peak GiB | PyTorch train img/s | infer img/s | peak GiB | train ratio | infer ratio | compiled train img/s | ratio to compiled |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &ours {
        let peer_line = |compiled: bool| {
            peer.iter().find(|p| {
                p["mode"] == m.mode.as_str()
                    && p["base"] == m.base
                    && p["size"] == m.size
                    && p["batch"] == m.batch
                    && p["compiled"].as_bool().unwrap_or(false) == compiled
            })
        };
        let (p, pc) = (peer_line(false), peer_line(true));
        let f = |k: &str| p.and_then(|p| p[k].as_f64());
        let compiled_train = pc.and_then(|p| p["train_img_s"].as_f64());
        let cell = |v: Option<f64>, digits: usize| {
            v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
        };
        println!(
            "| {}:{}²:{} | {} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            m.base,
            m.size,
            m.batch,
            m.mode,
            m.train_img_s,
            m.train_tflops,
            m.infer_img_s,
            m.peak_gib,
            cell(f("train_img_s"), 1),
            cell(f("infer_img_s"), 1),
            cell(f("peak_gib"), 2),
            cell(f("train_img_s").map(|t| m.train_img_s / t), 2),
            cell(f("infer_img_s").map(|t| m.infer_img_s / t), 2),
            cell(compiled_train, 1),
            cell(compiled_train.map(|t| m.train_img_s / t), 2),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_configs, train_flops_per_image};

    #[test]
    fn flops_match_pytorch_flop_counter() {
        // PyTorch's FlopCounterMode: 288.8 GFLOP per 256² image for base 64 (issue #11).
        let f = train_flops_per_image(64, 256, 4);
        assert!((f / 1e9 - 288.83).abs() < 0.01, "{}", f / 1e9);
    }

    #[test]
    fn configs_parse_and_reject_nonsense() {
        assert_eq!(
            parse_configs("16:128:8,64:256:16").unwrap(),
            vec![(16, 128, 8), (64, 256, 16)]
        );
        assert!(parse_configs("16:100:8").is_err());
        assert!(parse_configs("16:128").is_err());
        assert!(parse_configs("0:128:8").is_err());
    }
}
