//! Reliability of the real binary (`xtask-tasks`): bad command-line values, resume fallback,
//! and fault injection against `train-unet`:
//!
//! - **kill -9**: a run on a tiny data set is killed with SIGKILL at random instants at least
//!   [`KILLS`] times and resumed each time. After every kill each checkpoint on disk must verify
//!   and load, the newest checkpoint must never be older than one seen before (at most the work
//!   since the last checkpoint is lost), every resume must succeed, and every run carried to its
//!   end must hold exactly the weights of an uninterrupted run.
//! - **full disk**: a resume whose checkpoint cannot be written (`RLIMIT_FSIZE` in the child,
//!   which works unprivileged where mounting a small tmpfs does not) must stop with an error
//!   naming the checkpoint and the cause, and leave the previous checkpoint byte for byte.
//!
//! Each test prints its figures (`fault-injection: …`), quoted in docs/reliability.md.
//! `MAGMA_FAULT_SEED` picks the kill instants (default: fixed), `MAGMA_FAULT_KILLS` their number.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dnn_data::{
    Hdf5WriteOptions, Mask, SegmentationSample, SegmentationSource, SyntheticConfig,
    render_synthetic_pet, write_segmentation_hdf5,
};
use magma_tensor::SeededRng;

/// The least number of SIGKILLs the kill test injects.
const KILLS: usize = 60;
/// Epochs of every run (short, so that checkpoints are written often).
const EPOCHS: usize = 12;

const BIN: &str = env!("CARGO_BIN_EXE_xtask-tasks");

/// The tests of this file run one at a time: the kill instants are scaled to a measured run
/// time, which a concurrent test would distort.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handful of synthetic pets in memory, as a source for the HDF5 writer.
struct Pets {
    samples: Vec<SegmentationSample>,
    classes: Vec<String>,
}

impl Pets {
    fn new(n: usize) -> Self {
        let config = SyntheticConfig {
            images: n,
            size: [16, 16],
            size_jitter: 0.0,
            seed: 5,
            ..SyntheticConfig::default()
        };
        let samples = (0..n)
            .map(|i| {
                let (image, trimap) = render_synthetic_pet(&config, i);
                assert!(trimap.data.iter().all(|v| (1..=3).contains(v)));
                SegmentationSample {
                    name: format!("pet_{i}"),
                    mask: Mask {
                        data: trimap.data.iter().map(|v| v - 1).collect(),
                        ..trimap
                    },
                    image,
                }
            })
            .collect();
        Self {
            samples,
            classes: dnn_data::pet_class_names(),
        }
    }
}

impl SegmentationSource for Pets {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn name(&self, index: usize) -> &str {
        &self.samples[index].name
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn load(&self, index: usize) -> dnn_data::Result<SegmentationSample> {
        Ok(self.samples[index].clone())
    }
    fn describe(&self) -> String {
        format!("{} synthetic pets in memory", self.samples.len())
    }
}

/// A 12 + 4 sample HDF5 data set (splits `trainval`, `test`).
fn dataset(dir: &Path) -> PathBuf {
    let path = dir.join("pets.h5");
    let splits = (0..16).map(|i| u8::from(i >= 12)).collect();
    let options = Hdf5WriteOptions::new("fault-injection")
        .with_splits(vec!["trainval".into(), "test".into()], splits);
    write_segmentation_hdf5(&Pets::new(16), &path, &options).unwrap();
    path
}

fn fresh_args(data: &Path, out: &Path, epochs: usize) -> Vec<String> {
    [
        "train-unet",
        "--data",
        data.to_str().unwrap(),
        "--size",
        "16",
        "--base",
        "4",
        "--depth",
        "1",
        "--batch",
        "4",
        "--epochs",
        &epochs.to_string(),
        "--seed",
        "3",
        "--threads",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn resume_args(out: &Path, epochs: usize) -> Vec<String> {
    [
        "train-unet",
        "--resume",
        out.to_str().unwrap(),
        "--epochs",
        &epochs.to_string(),
        "--threads",
        "1",
        "--quiet",
    ]
    .map(String::from)
    .to_vec()
}

fn spawn(args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_to_end(args: &[String]) -> std::process::Output {
    let out = spawn(args).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every parameter and buffer of a checkpoint, bit for bit.
fn weights(path: &Path) -> Vec<(String, Vec<u32>)> {
    let ck = unet::checkpoint::load(path).unwrap();
    let model = ck.build_model(path).unwrap();
    let mut out = Vec::new();
    dnn_layers::Module::visit_parameters(&model, &mut |p| {
        let bits = p.value().to_vec().unwrap().into_iter().map(f32::to_bits);
        out.push((p.name().to_string(), bits.collect()))
    });
    dnn_layers::Module::visit_buffers(&model, &mut |name, t| {
        let bits = t.to_vec().unwrap().into_iter().map(f32::to_bits);
        out.push((name.to_string(), bits.collect()))
    });
    out
}

const CHECKPOINTS: [&str; 3] = ["last.h5", "last.prev.h5", "best.h5"];

/// Loads every checkpoint in `dir`; returns how many there were and the newest epoch.
fn check_all(dir: &Path, context: &str) -> (usize, Option<usize>) {
    let mut found = 0;
    let mut newest = None;
    for name in CHECKPOINTS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        found += 1;
        let ck = unet::checkpoint::load(&path)
            .unwrap_or_else(|e| panic!("{context}: {} does not load: {e}", path.display()));
        if name != "best.h5" {
            newest = newest.max(Some(ck.meta.epoch));
        }
    }
    (found, newest)
}

fn temporaries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .count()
    })
}

#[test]
fn kill_9_at_random_instants_loses_at_most_the_last_epoch() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let seed = std::env::var("MAGMA_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_125u64);
    let kills_wanted = std::env::var("MAGMA_FAULT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(KILLS)
        .max(KILLS);

    // The uninterrupted reference.
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    run_to_end(&fresh_args(&data, &reference, EPOCHS));
    let full_run = started.elapsed();
    // The scale of the kill instants: a run's time, updated as runs end by themselves.
    let mut estimate = full_run;
    let expected = weights(&reference.join("last.h5"));

    let mut rng = SeededRng::new(seed);
    let (mut kills, mut in_write, mut resumes, mut checked, mut trials, mut completed) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut lost_epochs_max = 0usize;
    let t0 = Instant::now();
    while kills < kills_wanted {
        trials += 1;
        let dir = tmp.path().join(format!("trial-{trials}"));
        // The newest checkpoint epoch seen so far in this trial.
        let mut newest_seen: Option<usize> = None;
        loop {
            let resuming = dir.join("last.h5").exists() || dir.join("last.prev.h5").exists();
            let args = if resuming {
                resumes += 1;
                resume_args(&dir, EPOCHS)
            } else {
                fresh_args(&data, &dir, EPOCHS)
            };
            let spawned = Instant::now();
            let mut child = spawn(&args);
            // Anywhere from start-up to well into the run.
            let delay = estimate.mul_f32(rng.uniform(0.0, 0.6));
            let deadline = Instant::now() + delay;
            let mut exited = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    exited = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if exited.is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
                // A temporary file of this very process: it died in the middle of a write.
                let mine = format!(".tmp-{}", child.id());
                let writing = std::fs::read_dir(&dir).is_ok_and(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(&mine))
                });
                if writing {
                    in_write += 1;
                }
            }
            let output = child.wait_with_output().unwrap();
            let context = format!("trial {trials}, after kill {kills} ({args:?})");
            if let Some(status) = exited {
                assert!(
                    status.success(),
                    "{context}: the run failed on its own:\n{}\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let (found, newest) = check_all(&dir, &context);
            checked += found;
            if let (Some(before), after) = (newest_seen, newest) {
                let after = after.unwrap_or_else(|| {
                    panic!("{context}: a checkpoint of epoch {before} disappeared")
                });
                assert!(
                    after >= before,
                    "{context}: the newest checkpoint went back from epoch {before} to {after}"
                );
            }
            newest_seen = newest_seen.max(newest);
            if exited.is_some() {
                estimate = (estimate + spawned.elapsed()) / 2;
                // Ran to its end: exactly the uninterrupted run's weights.
                assert_eq!(
                    weights(&dir.join("last.h5")),
                    expected,
                    "{context}: the resumed run ended with other weights"
                );
                completed += 1;
                break;
            }
            // Work lost by this kill: epochs finished by the process but not checkpointed can
            // only be the one in progress, which the table row shows before the save.
            let stdout = String::from_utf8_lossy(&output.stdout);
            let logged = stdout
                .lines()
                .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
                .max();
            if let (Some(logged), Some(saved)) = (logged, newest) {
                assert!(
                    logged <= saved + 1,
                    "{context}: epoch {logged} was logged but only {saved} checkpointed"
                );
                lost_epochs_max = lost_epochs_max.max(logged.saturating_sub(saved));
            }
            if kills >= kills_wanted {
                // Finish this trial without further kills.
                if dir.join("last.h5").exists() || dir.join("last.prev.h5").exists() {
                    run_to_end(&resume_args(&dir, EPOCHS));
                    resumes += 1;
                } else {
                    run_to_end(&fresh_args(&data, &dir, EPOCHS));
                }
                check_all(&dir, &format!("trial {trials}, final"));
                assert_eq!(weights(&dir.join("last.h5")), expected);
                completed += 1;
                break;
            }
        }
    }
    println!(
        "fault-injection: kill -9: seed {seed}, {kills} kills ({in_write} while a checkpoint \
         or metrics file was being written), {resumes} resumes, all succeeded; {checked} checkpoint files \
         checked after kills, all loaded; {trials} runs, {completed} finished with the \
         uninterrupted run's weights bit for bit; at most {lost_epochs_max} epoch of work lost \
         per kill; reference run {:.1} s, kills {:.1} s",
        full_run.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(kills >= KILLS && completed == trials);
}

#[cfg(unix)]
#[test]
fn a_full_disk_during_a_checkpoint_write_keeps_the_previous_one() {
    use std::os::unix::process::CommandExt;
    let _serial = serial();

    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let dir = tmp.path().join("run");
    run_to_end(&fresh_args(&data, &dir, 2));
    let last = dir.join("last.h5");
    let before = std::fs::read(&last).unwrap();
    let prev_before = std::fs::read(dir.join("last.prev.h5")).unwrap();
    let limit = (before.len() / 2) as u64;

    let mut limited = Command::new(BIN);
    limited
        .args(resume_args(&dir, 3))
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls: `signal` and `setrlimit`.
    // Ignoring SIGXFSZ makes a write past the limit fail with EFBIG instead of killing the
    // process; the disposition survives exec.
    unsafe {
        limited.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = limited.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the resume should have failed:\n{stderr}"
    );
    let message = stderr
        .lines()
        .skip_while(|l| !l.starts_with("Error:"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        stderr.contains(&last.display().to_string())
            && stderr.contains("writing the checkpoint failed")
            && stderr.contains("untouched")
            && (stderr.contains("File too large") || stderr.contains("No space left")),
        "unclear error:\n{stderr}"
    );
    // The previous checkpoints are intact and loadable, and no temporary file is left.
    assert_eq!(std::fs::read(&last).unwrap(), before);
    // last.prev.h5 was rotated (a link to the same epoch-2 checkpoint) before the write failed.
    let prev_after = std::fs::read(dir.join("last.prev.h5")).unwrap();
    assert!(prev_after == before || prev_after == prev_before);
    assert_eq!(unet::checkpoint::load(&last).unwrap().meta.epoch, 2);
    assert_eq!(temporaries(&dir), 0, "a temporary file was left behind");

    // With space again the run continues to the uninterrupted run's weights.
    run_to_end(&resume_args(&dir, 3));
    let reference = tmp.path().join("reference");
    run_to_end(&fresh_args(&data, &reference, 3));
    assert_eq!(weights(&last), weights(&reference.join("last.h5")));
    println!(
        "fault-injection: full disk: checkpoint write stopped at {limit} bytes (RLIMIT_FSIZE); \
         previous checkpoint intact, resumed afterwards to the uninterrupted weights; the \
         error: {message}"
    );
}

#[test]
fn bad_cli_values_are_clear_errors_and_write_nothing() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let out = tmp.path().join("out");
    let cases: [(&[&str], &str); 8] = [
        (&["--epochs", "-1"], "--epochs"),
        (&["--epochs", "0"], "must be at least 1, got 0"),
        (&["--batch", "0"], "--batch"),
        (&["--size", "0"], "--size"),
        (&["--size", "-16"], "must be at least 1, got -16"),
        (&["--size", "4"], "--size must be at least 8"),
        (
            &["--loss", "focal"],
            "possible values: ce, gaussian-ce, dice, ce-dice",
        ),
        (&["--batch", "many"], "must be a whole number"),
    ];
    for (extra, expected) in cases {
        let mut args = fresh_args(&data, &out, 1);
        match args.iter().position(|a| a == extra[0]) {
            Some(i) => args[i + 1] = extra[1].to_string(),
            None => args.extend(extra.iter().map(|s| s.to_string())),
        }
        let output = spawn(&args).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} was accepted");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    // convert-hdf5: a bad size, and a source that does not exist, leave the target alone.
    let target = tmp.path().join("target.h5");
    std::fs::write(&target, b"precious").unwrap();
    for (extra, expected) in [
        (["--size", "0"], "--size must be at least 1"),
        (["--split", "nonsense"], "nonsense"),
    ] {
        let mut args: Vec<String> = ["convert-hdf5", "--data", data.to_str().unwrap()]
            .map(String::from)
            .to_vec();
        args.extend(["--out".to_string(), target.display().to_string()]);
        args.extend(extra.map(String::from));
        let output = spawn(&args).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }
}

#[test]
fn resume_of_a_damaged_checkpoint_falls_back_saying_so() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let dir = tmp.path().join("run");
    run_to_end(&fresh_args(&data, &dir, 2));
    let last = dir.join("last.h5");
    let mut bytes = std::fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&last, &bytes).unwrap();
    let output = run_to_end(&resume_args(&dir, 3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stderr.contains("corrupted")
            && stderr.contains("falling back to the previous good checkpoint")
            && stderr.contains("last.prev.h5 (epoch 1)"),
        "{stderr}"
    );
    assert!(stdout.contains("last.prev.h5 after epoch 1"), "{stdout}");
    // Epochs 2 and 3 were trained again: the run ends as an uninterrupted one.
    let reference = tmp.path().join("reference");
    run_to_end(&fresh_args(&data, &reference, 3));
    assert_eq!(weights(&last), weights(&reference.join("last.h5")));
    // Both damaged: a clear error naming both, nothing written.
    std::fs::write(&last, b"").unwrap();
    std::fs::write(dir.join("last.prev.h5"), b"x").unwrap();
    let output = spawn(&resume_args(&dir, 4)).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no usable checkpoint") && stderr.contains("last.prev.h5"),
        "{stderr}"
    );
}
