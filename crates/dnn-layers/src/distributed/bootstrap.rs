//! Start-up helpers for communicators whose ranks must first learn a small secret from rank 0
//! (NCCL's 128-byte unique id), with no CUDA and no MPI involved, so that they are testable on
//! any machine:
//!
//! - [`FileBootstrap`]: rank 0 writes the id into a file of a folder every rank sees (a shared
//!   filesystem across hosts), atomically (a temporary file renamed into place); the other ranks
//!   poll for it until a timeout, then fail with a message saying what to check.
//! - [`Launch`]: this process's rank, world size and local rank (which GPU of the host), read
//!   from the variables that launchers set (`mpirun`, `srun`, `torchrun`, or our own
//!   `MAGMA_RANK` / `MAGMA_WORLD_SIZE` / `MAGMA_LOCAL_RANK`).
//!
//! The id only lets the ranks find each other (NCCL's own TCP bootstrap then takes over); it is
//! not a credential, but anyone who reads it early can join the job, so keep the folder private.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{LayerError, Result};

/// How long a rank waits for rank 0's id by default. Ranks of one job may start far apart
/// (container start-up, a loaded shared filesystem), so this is generous.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The first line of a bootstrap file (the format's name and version).
const MAGIC: &str = "magma-dnn bootstrap v1";

/// The exchange of rank 0's id through a file.
///
/// The file is `DIR/JOB.bootstrap`; rank 0 replaces it atomically, so a reader sees either no
/// file or a complete one. A file left over from an earlier launch with the same job name would
/// be read as this one's: give every launch its own job name (the launcher's job id, see
/// [`Launch::job_name`]), and let rank 0 [`remove`](Self::remove) the file once every rank
/// has joined (`NcclCommunicator::with_file_bootstrap` does).
#[derive(Debug, Clone)]
pub struct FileBootstrap {
    path: PathBuf,
    timeout: Duration,
    poll: Duration,
}

impl FileBootstrap {
    /// The exchange of job `job` in folder `dir`. `job` may hold letters, digits, `.`, `_`, `-`.
    pub fn new(dir: impl Into<PathBuf>, job: &str) -> Result<Self> {
        let dir = dir.into();
        let valid = !job.is_empty()
            && !job.starts_with('.')
            && job
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(LayerError::Bootstrap {
                path: dir,
                reason: format!(
                    "job name {job:?} must be non-empty letters, digits, '.', '_' or '-' (not \
                     starting with '.')"
                ),
            });
        }
        Ok(Self {
            path: dir.join(format!("{job}.bootstrap")),
            timeout: DEFAULT_TIMEOUT,
            poll: Duration::from_millis(50),
        })
    }

    /// How long [`wait`](Self::wait) polls before giving up.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pause between two looks for the file.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// The file rank 0 writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn err(&self, reason: impl Into<String>) -> LayerError {
        LayerError::Bootstrap {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Rank 0: writes `payload` for a job of `world_size` ranks (creating the folder), through a
    /// temporary file in the same folder renamed over the final name.
    pub fn publish(&self, world_size: usize, payload: &[u8]) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| self.err(format!("cannot create the folder: {e}")))?;
        let mut hex = String::with_capacity(payload.len() * 2);
        for b in payload {
            write!(hex, "{b:02x}").expect("writing to a String cannot fail");
        }
        let text = format!("{MAGIC}\nworld_size {world_size}\npayload {hex}\n");
        let file_name = self
            .path
            .file_name()
            .expect("new() always sets a file name")
            .to_string_lossy();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.err(format!("cannot write the id: {e}"))
        })
    }

    /// Ranks other than 0: waits for rank 0's file and returns its payload, checking that rank 0
    /// launched a job of the same `world_size`.
    pub fn wait(&self, world_size: usize) -> Result<Vec<u8>> {
        let started = Instant::now();
        loop {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => return self.parse(&text, world_size),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err(format!("cannot read the id: {e}"))),
            }
            if started.elapsed() >= self.timeout {
                return Err(self.err(format!(
                    "timed out after {:.0} s waiting for rank 0 to write the id: is rank 0 \
                     running with the same folder and job name, and is the folder shared by \
                     every host of the job? (the wait is set by MAGMA_BOOTSTRAP_TIMEOUT, seconds)",
                    self.timeout.as_secs_f64()
                )));
            }
            std::thread::sleep(self.poll);
        }
    }

    fn parse(&self, text: &str, world_size: usize) -> Result<Vec<u8>> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(self.err(format!(
                "not a bootstrap file (first line is not {MAGIC:?})"
            )));
        }
        let field = |line: Option<&str>, key: &str| -> Result<String> {
            line.and_then(|l| l.strip_prefix(key))
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| self.err(format!("damaged bootstrap file: no `{key}` line")))
        };
        let size: usize = field(lines.next(), "world_size")?
            .parse()
            .map_err(|_| self.err("damaged bootstrap file: bad world_size"))?;
        if size != world_size {
            return Err(self.err(format!(
                "rank 0 started a job of {size} ranks but this rank was launched for \
                 {world_size} (a stale file of another launch? give each launch its own job \
                 name)"
            )));
        }
        let hex = field(lines.next(), "payload")?;
        if hex.len() % 2 != 0 {
            return Err(self.err("damaged bootstrap file: odd payload length"));
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| self.err("damaged bootstrap file: payload is not hex"))
            })
            .collect()
    }

    /// Rank 0, once every rank has joined: deletes the file so that no later launch reads it.
    /// A file already gone is fine.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(format!("cannot remove the id file: {e}"))),
        }
    }
}

/// Where this process sits in a job, as the launcher says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// The rank among the processes of this host: the GPU ordinal to use, one process per GPU.
    pub local_rank: usize,
    /// Which variables it came from ("MAGMA_RANK", "OMPI_COMM_WORLD_RANK", ...).
    pub source: &'static str,
    /// The launcher's job id, when it sets one.
    pub job_id: Option<String>,
}

/// `(rank, size, local rank)` variable names of the launchers we know, in the order tried.
const LAUNCHERS: [(&str, &str, &str); 5] = [
    ("MAGMA_RANK", "MAGMA_WORLD_SIZE", "MAGMA_LOCAL_RANK"),
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
];

/// Job-id variables, in the order tried.
const JOB_IDS: [&str; 4] = [
    "MAGMA_JOB_ID",
    "SLURM_JOB_ID",
    "OMPI_MCA_ess_base_jobid",
    "TORCHELASTIC_RUN_ID",
];

impl Launch {
    /// From the process environment; `Ok(None)` when no launcher variables are set.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Launch::from_env`], or the only process of a 1-rank job when no launcher set variables.
    pub fn from_env_or_single() -> Result<Self> {
        Ok(Self::from_env()?.unwrap_or(Launch {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            source: "no launcher (one process)",
            job_id: None,
        }))
    }

    /// From any variable lookup (testable). A launcher counts when its rank and size variables
    /// are both set; without a local-rank variable the local rank is the rank (one host).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        for (rank_var, size_var, local_var) in LAUNCHERS {
            let (Some(rank), Some(size)) = (get(rank_var), get(size_var)) else {
                continue;
            };
            let number = |var: &str, value: &str| -> Result<usize> {
                value.trim().parse().map_err(|_| {
                    LayerError::Communicator(format!("{var}={value:?} is not a whole number"))
                })
            };
            let rank = number(rank_var, &rank)?;
            let world_size = number(size_var, &size)?;
            let local_rank = match get(local_var) {
                Some(v) => number(local_var, &v)?,
                None => rank,
            };
            if world_size == 0 || rank >= world_size {
                return Err(LayerError::Communicator(format!(
                    "{rank_var}={rank} is not a rank of {size_var}={world_size}"
                )));
            }
            let job_id = JOB_IDS
                .iter()
                .find_map(|v| get(v))
                .filter(|j| !j.is_empty());
            return Ok(Some(Self {
                rank,
                world_size,
                local_rank,
                source: rank_var,
                job_id,
            }));
        }
        Ok(None)
    }

    /// A bootstrap job name for this launch: `prefix` plus the launcher's job id (characters
    /// outside letters, digits, `.`, `_`, `-` replaced by `_`), or `prefix` alone without one
    /// (then only one job may use the folder at a time).
    pub fn job_name(&self, prefix: &str) -> String {
        match &self.job_id {
            Some(id) => {
                let clean: String = id
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                format!("{prefix}-{clean}")
            }
            None => prefix.to_owned(),
        }
    }
}

/// The bootstrap timeout from `MAGMA_BOOTSTRAP_TIMEOUT` (seconds), else [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var("MAGMA_BOOTSTRAP_TIMEOUT") {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                LayerError::Communicator(format!(
                    "MAGMA_BOOTSTRAP_TIMEOUT={v:?} is not a positive number of seconds"
                ))
            }),
        Err(_) => Ok(DEFAULT_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn rank_0_writes_and_rank_1_reads_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let id: Vec<u8> = (0..=255u8).rev().take(128).collect();
        let folder = dir.path().join("shared/nested");
        let reader = FileBootstrap::new(&folder, "job-7").unwrap();
        let writer = FileBootstrap::new(&folder, "job-7").unwrap();
        // Rank 1 starts waiting before rank 0 has written anything.
        let waiting = std::thread::spawn(move || reader.wait(2));
        std::thread::sleep(Duration::from_millis(120));
        writer.publish(2, &id).unwrap();
        assert_eq!(waiting.join().unwrap().unwrap(), id);
        // No temporary file is left beside it.
        let names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["job-7.bootstrap"]);
        writer.remove().unwrap();
        assert!(!writer.path().exists());
        writer.remove().unwrap();
    }

    #[test]
    fn a_rank_that_waits_in_vain_times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBootstrap::new(dir.path(), "lonely")
            .unwrap()
            .with_timeout(Duration::from_millis(150))
            .with_poll_interval(Duration::from_millis(10));
        let started = Instant::now();
        let err = b.wait(4).unwrap_err().to_string();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(err.contains("lonely.bootstrap"), "{err}");
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("rank 0"), "{err}");
        assert!(err.contains("MAGMA_BOOTSTRAP_TIMEOUT"), "{err}");
    }

    #[test]
    fn a_file_of_another_world_size_or_damaged_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBootstrap::new(dir.path(), "j").unwrap();
        b.publish(8, &[1, 2, 3]).unwrap();
        let err = b.wait(2).unwrap_err().to_string();
        assert!(err.contains("8 ranks") && err.contains("for 2"), "{err}");
        std::fs::write(b.path(), "something else\n").unwrap();
        assert!(
            b.wait(2)
                .unwrap_err()
                .to_string()
                .contains("not a bootstrap file")
        );
        std::fs::write(b.path(), format!("{MAGIC}\nworld_size 2\npayload 0g\n")).unwrap();
        assert!(b.wait(2).unwrap_err().to_string().contains("not hex"));
        // Rewriting replaces the old file.
        b.publish(2, &[0xab, 0x01]).unwrap();
        assert_eq!(b.wait(2).unwrap(), [0xab, 0x01]);
    }

    #[test]
    fn job_names_are_checked() {
        for bad in ["", ".hidden", "a/b", "a b", "../x"] {
            assert!(FileBootstrap::new("/tmp", bad).is_err(), "{bad:?}");
        }
        let ok = FileBootstrap::new("/tmp/x", "nccl-123.4_a").unwrap();
        assert_eq!(ok.path(), Path::new("/tmp/x/nccl-123.4_a.bootstrap"));
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn launch_is_read_from_the_launchers_variables() {
        assert_eq!(Launch::from_vars(vars(&[])).unwrap(), None);
        let open_mpi = Launch::from_vars(vars(&[
            ("OMPI_COMM_WORLD_RANK", "5"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_MCA_ess_base_jobid", "4242"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (open_mpi.rank, open_mpi.world_size, open_mpi.local_rank),
            (5, 8, 1)
        );
        assert_eq!(open_mpi.source, "OMPI_COMM_WORLD_RANK");
        assert_eq!(open_mpi.job_name("nccl"), "nccl-4242");
        // Ours win over the launcher's; no local rank means one host.
        let ours = Launch::from_vars(vars(&[
            ("MAGMA_RANK", "1"),
            ("MAGMA_WORLD_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_ID", "77/a"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((ours.rank, ours.world_size, ours.local_rank), (1, 2, 1));
        assert_eq!(ours.job_name("nccl"), "nccl-77_a");
        let torchrun = Launch::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "1")]))
            .unwrap()
            .unwrap();
        assert_eq!(torchrun.job_name("nccl"), "nccl");
        let err = Launch::from_vars(vars(&[("RANK", "3"), ("WORLD_SIZE", "2")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RANK=3") && err.contains("WORLD_SIZE=2"),
            "{err}"
        );
        assert!(
            Launch::from_vars(vars(&[("RANK", "x"), ("WORLD_SIZE", "2")]))
                .unwrap_err()
                .to_string()
                .contains("not a whole number")
        );
    }
}
