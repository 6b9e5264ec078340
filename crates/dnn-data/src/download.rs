//! Downloading the real Oxford-IIIT Pet dataset: resumable HTTP downloads, checksum
//! verification and safe `.tar.gz` extraction.
//!
//! [`download_pets`] fetches the two official archives (`images.tar.gz`, about 792 MB, and
//! `annotations.tar.gz`, about 19 MB) into a folder (by convention `data/oxford-iiit-pet/`) and
//! extracts them there, which yields the release layout the Pet reader expects
//! (`images/*.jpg`, `annotations/trimaps/*.png`, `annotations/{list,trainval,test}.txt`).
//!
//! For each archive:
//! 1. The bytes go to `NAME.part`. When a `.part` file is already there (an interrupted earlier
//!    run), the download resumes with an HTTP `Range: bytes=N-` request; a server that ignores
//!    the range (status 200) restarts it from zero. A transfer cut off mid-way is retried (with
//!    resume) up to [`DownloadOptions::attempts`] times.
//! 2. The complete file is checked against every checksum known for it (size, MD5, SHA-256).
//!    A mismatch deletes the `.part` file and fails naming the file and both digests.
//! 3. The archive is extracted into a temporary folder beside the destination, refusing
//!    absolute paths, `..` components, links that could point outside the archive's tree,
//!    writes through links, and device files / FIFOs; only when every entry is extracted are
//!    its top-level entries renamed into place (replacing an earlier copy), and a marker file
//!    `.NAME.done` records the extraction so a later run skips the archive.
//!
//! Checksums of the official archives: the MD5s are the ones torchvision's `OxfordIIITPet`
//! pins (`5c4f3ee8…` and `95a8c909…`); the SHA-256s and sizes are the ones recorded by public
//! projects that fetched the same archives and checked them against those MD5s. See
//! `docs/data.md`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result, io_err};

/// Where the official archives are served, tried in this order. The first is the host the
/// dataset page links to; the second is the historical address (which redirects to it).
pub const PET_BASE_URLS: [&str; 2] = [
    "https://thor.robots.ox.ac.uk/datasets/pets/",
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/",
];

/// One archive to fetch: its file name, the URLs to try in order, and what it must hash to.
/// A `None` checksum is not checked; at least one of `md5` / `sha256` should be set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteArchive {
    /// The file name under the destination folder (`images.tar.gz`).
    pub file_name: String,
    /// Full URLs, tried in order until one succeeds.
    pub urls: Vec<String>,
    /// Exact size in bytes, when known.
    pub size: Option<u64>,
    /// Lower-case hex MD5, when known.
    pub md5: Option<String>,
    /// Lower-case hex SHA-256, when known.
    pub sha256: Option<String>,
}

/// The two archives of the official Oxford-IIIT Pet release, with their known checksums.
pub fn pet_archives() -> Vec<RemoteArchive> {
    let make = |name: &str, size: u64, md5: &str, sha256: &str| RemoteArchive {
        file_name: name.to_string(),
        urls: PET_BASE_URLS.iter().map(|b| format!("{b}{name}")).collect(),
        size: Some(size),
        md5: Some(md5.to_string()),
        sha256: Some(sha256.to_string()),
    };
    vec![
        make(
            "images.tar.gz",
            791_918_971,
            "5c4f3ee8e5d25df40f4fd59a7f44e54c",
            "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d",
        ),
        make(
            "annotations.tar.gz",
            19_173_078,
            "95a8c909bbe2e81eed6a22bccdf3f68f",
            "52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91",
        ),
    ]
}

/// What a download reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// A transfer of `file_name` starts at byte `offset` (non-zero when resuming) of `total`.
    Started {
        file_name: String,
        url: String,
        offset: u64,
        total: Option<u64>,
    },
    /// `done` bytes of `file_name` are on disk.
    Progress { file_name: String, done: u64 },
    /// The checksums of `file_name` are being verified.
    Verifying { file_name: String },
    /// `file_name` is being extracted.
    Extracting { file_name: String },
    /// `file_name` was extracted earlier (its marker exists); nothing to do.
    AlreadyPresent { file_name: String },
    /// A transfer failed and will be retried (resuming).
    Retrying { file_name: String, reason: String },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&DownloadEvent) + Send + Sync>;

/// Knobs of [`download_archives`].
#[derive(Clone)]
pub struct DownloadOptions {
    /// Transfers tried per URL (each later one resumes where the last stopped); at least 1.
    pub attempts: usize,
    /// Timeout of connecting and of each read from the network.
    pub timeout: Duration,
    /// Keep the `.tar.gz` files after a successful extraction.
    pub keep_archives: bool,
    /// Called with every [`DownloadEvent`].
    pub progress: Option<ProgressFn>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            attempts: 3,
            timeout: Duration::from_secs(60),
            keep_archives: false,
            progress: None,
        }
    }
}

impl std::fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("attempts", &self.attempts)
            .field("timeout", &self.timeout)
            .field("keep_archives", &self.keep_archives)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl DownloadOptions {
    fn emit(&self, event: DownloadEvent) {
        if let Some(p) = &self.progress {
            p(&event);
        }
    }
}

/// Downloads and extracts the official Oxford-IIIT Pet archives into `dest`
/// (by convention `data/oxford-iiit-pet`). Archives extracted by an earlier run are skipped.
pub fn download_pets(dest: &Path, options: &DownloadOptions) -> Result<()> {
    download_archives(dest, &pet_archives(), options)
}

/// Downloads (resuming), verifies and safely extracts every archive of `archives` into `dest`.
pub fn download_archives(
    dest: &Path,
    archives: &[RemoteArchive],
    options: &DownloadOptions,
) -> Result<()> {
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    for archive in archives {
        check_file_name(dest, &archive.file_name)?;
        let marker = dest.join(format!(".{}.done", archive.file_name));
        if marker.is_file() {
            options.emit(DownloadEvent::AlreadyPresent {
                file_name: archive.file_name.clone(),
            });
            continue;
        }
        let target = dest.join(&archive.file_name);
        if target.is_file() {
            // A verified archive from a run whose extraction did not finish; verify again
            // (cheap next to a download) in case it was replaced by hand.
            options.emit(DownloadEvent::Verifying {
                file_name: archive.file_name.clone(),
            });
            if let Err(e) = verify_file(&target, archive) {
                fs::remove_file(&target).map_err(io_err(&target))?;
                return Err(e);
            }
        } else {
            fetch_verified(dest, archive, options)?;
        }
        options.emit(DownloadEvent::Extracting {
            file_name: archive.file_name.clone(),
        });
        extract_tar_gz(&target, dest)?;
        File::create(&marker)
            .and_then(|mut f| writeln!(f, "{}", archive.sha256.as_deref().unwrap_or("")))
            .map_err(io_err(&marker))?;
        if !options.keep_archives {
            fs::remove_file(&target).map_err(io_err(&target))?;
        }
    }
    Ok(())
}

fn check_file_name(dest: &Path, name: &str) -> Result<()> {
    let p = Path::new(name);
    let mut comps = p.components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => Err(DataError::Format {
            path: dest.join(name),
            reason: format!("archive name {name:?} must be a plain file name"),
        }),
    }
}

/// Downloads `archive` to `dest/NAME` through `dest/NAME.part`, verifying it before the rename.
fn fetch_verified(dest: &Path, archive: &RemoteArchive, options: &DownloadOptions) -> Result<()> {
    let target = dest.join(&archive.file_name);
    let part = dest.join(format!("{}.part", archive.file_name));
    if archive.urls.is_empty() {
        return Err(DataError::Download {
            url: String::new(),
            reason: format!("no URL given for {}", target.display()),
        });
    }
    let mut last_err = None;
    for url in &archive.urls {
        match download_resumable(url, &part, archive, options) {
            Ok(()) => {
                last_err = None;
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }
    options.emit(DownloadEvent::Verifying {
        file_name: archive.file_name.clone(),
    });
    if let Err(e) = verify_file(&part, archive) {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, &target).map_err(io_err(&target))
}

/// Downloads `url` into `part`, resuming from its current length, retrying cut-off transfers.
/// On success `part` holds the whole body (its length checked against `archive.size`).
pub fn download_resumable(
    url: &str,
    part: &Path,
    archive: &RemoteArchive,
    options: &DownloadOptions,
) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(options.timeout))
        .timeout_recv_response(Some(options.timeout))
        .timeout_per_read(Some(options.timeout))
        .user_agent(concat!("magma-dnn/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let attempts = options.attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transfer_once(&agent, url, part, archive, options) {
            Ok(()) => return Ok(()),
            Err(TransferError::Fatal(e)) => return Err(e),
            Err(TransferError::Retryable(e)) => {
                if attempt >= attempts {
                    return Err(e);
                }
                options.emit(DownloadEvent::Retrying {
                    file_name: archive.file_name.clone(),
                    reason: e.to_string(),
                });
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
        }
    }
}

enum TransferError {
    /// Worth another try (connection dropped, timeout, server error).
    Retryable(DataError),
    /// Not (bad status, local I/O failure).
    Fatal(DataError),
}

fn transfer_once(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    archive: &RemoteArchive,
    options: &DownloadOptions,
) -> std::result::Result<(), TransferError> {
    let net = |reason: String| {
        TransferError::Retryable(DataError::Download {
            url: url.to_string(),
            reason,
        })
    };
    let fatal = |reason: String| {
        TransferError::Fatal(DataError::Download {
            url: url.to_string(),
            reason,
        })
    };
    let mut offset = match fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(TransferError::Fatal(io_err(part)(e))),
    };
    if let Some(size) = archive.size {
        if offset == size {
            return Ok(());
        }
        if offset > size {
            // Longer than the archive can be: start over.
            fs::remove_file(part).map_err(|e| TransferError::Fatal(io_err(part)(e)))?;
            offset = 0;
        }
    }
    let mut request = agent.get(url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let mut response = request
        .call()
        .map_err(|e| net(format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let (start, total) = match status {
        200 => (0, content_length),
        206 => {
            let range = header("content-range").unwrap_or_default();
            let (start, total) = parse_content_range(&range).ok_or_else(|| {
                fatal(format!(
                    "status 206 with an unusable Content-Range {range:?}"
                ))
            })?;
            if start != offset {
                return Err(fatal(format!(
                    "asked for bytes from {offset}, server sent from {start}"
                )));
            }
            (start, total.or(content_length.map(|l| l + start)))
        }
        416 if offset > 0 => {
            // Nothing left to send: the part file is complete, or longer than the resource.
            let range = header("content-range").unwrap_or_default();
            let total = range
                .rsplit('/')
                .next()
                .and_then(|t| t.trim().parse::<u64>().ok());
            if total == Some(offset) {
                return Ok(());
            }
            fs::remove_file(part).map_err(|e| TransferError::Fatal(io_err(part)(e)))?;
            return Err(net(format!(
                "range {offset}- not satisfiable (resource length {total:?}); restarting"
            )));
        }
        s if s >= 500 => return Err(net(format!("server error, status {s}"))),
        s => return Err(fatal(format!("unexpected HTTP status {s}"))),
    };
    if let (Some(expected), Some(total)) = (archive.size, total)
        && expected != total
    {
        return Err(fatal(format!(
            "server reports {total} bytes, {} must be {expected} bytes",
            archive.file_name
        )));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .map_err(|e| TransferError::Fatal(io_err(part)(e)))?;
    file.set_len(start)
        .and_then(|()| file.seek(SeekFrom::Start(start)))
        .map_err(|e| TransferError::Fatal(io_err(part)(e)))?;
    options.emit(DownloadEvent::Started {
        file_name: archive.file_name.clone(),
        url: url.to_string(),
        offset: start,
        total,
    });
    let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = start;
    let mut since_report = 0usize;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                return Err(net(format!(
                    "transfer cut off after {done} bytes: {e} ({} kept for resuming)",
                    part.display()
                )));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| TransferError::Fatal(io_err(part)(e)))?;
        done += n as u64;
        since_report += n;
        if since_report >= 1 << 20 {
            since_report = 0;
            options.emit(DownloadEvent::Progress {
                file_name: archive.file_name.clone(),
                done,
            });
        }
    }
    file.sync_all()
        .map_err(|e| TransferError::Fatal(io_err(part)(e)))?;
    options.emit(DownloadEvent::Progress {
        file_name: archive.file_name.clone(),
        done,
    });
    if let Some(total) = total.or(archive.size)
        && done < total
    {
        return Err(net(format!(
            "transfer cut off after {done} of {total} bytes ({} kept for resuming)",
            part.display()
        )));
    }
    Ok(())
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Lower-case hex MD5 and SHA-256 of a file.
pub fn file_digests(path: &Path) -> Result<(String, String)> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    Ok((hex(&md5.finalize()), hex(&sha.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks `path` against the size and checksums `archive` knows.
pub fn verify_file(path: &Path, archive: &RemoteArchive) -> Result<()> {
    let len = fs::metadata(path).map_err(io_err(path))?.len();
    let mismatch = |what: &str, expected: &str, found: &str| DataError::Format {
        path: path.to_path_buf(),
        reason: format!(
            "{what} mismatch for {}: expected {expected}, found {found} (file deleted)",
            archive.file_name
        ),
    };
    if let Some(size) = archive.size
        && size != len
    {
        return Err(mismatch("size", &size.to_string(), &len.to_string()));
    }
    if archive.md5.is_none() && archive.sha256.is_none() {
        return Ok(());
    }
    let (md5, sha256) = file_digests(path)?;
    if let Some(expected) = &archive.md5
        && !expected.eq_ignore_ascii_case(&md5)
    {
        return Err(mismatch("MD5", expected, &md5));
    }
    if let Some(expected) = &archive.sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(mismatch("SHA-256", expected, &sha256));
    }
    Ok(())
}

/// Extracts the `.tar.gz` at `archive` into `dest` safely.
///
/// Everything is first extracted into a temporary folder beside the destination's entries
/// (`dest/.extract-NAME-PID`); an entry with an absolute path, a `..` component, a path through
/// a link, a symbolic link whose target is absolute or has a `..` component, a hard link to
/// anything but a regular file extracted before it, or a device file / FIFO fails the whole
/// extraction (naming the archive and the entry) and leaves nothing behind. On success each
/// top-level entry is renamed into `dest`, replacing an entry of the same name. Returns the
/// top-level names.
pub fn extract_tar_gz(archive: &Path, dest: &Path) -> Result<Vec<String>> {
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    let stem = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.join(format!(".extract-{stem}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let result = extract_into(archive, &tmp).and_then(|()| move_into_place(&tmp, dest));
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn entry_err(archive: &Path, entry: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Format {
        path: archive.to_path_buf(),
        reason: format!("entry {:?}: {reason}", entry.display().to_string()),
    }
}

/// A relative path made of normal components only (`.` dropped); `None` when it has a root,
/// a prefix or a `..`.
fn plain_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Fails when a prefix of `rel` under `root` exists and is a symbolic link (no writes through links).
fn check_no_links(root: &Path, rel: &Path, archive: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(entry_err(
                    archive,
                    rel,
                    "its path goes through a symbolic link of the archive",
                ));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn extract_into(archive: &Path, tmp: &Path) -> Result<()> {
    let file = File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let entries = tar
        .entries()
        .map_err(|e| entry_err(archive, Path::new(""), format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| DataError::Format {
            path: archive.to_path_buf(),
            reason: format!("corrupt archive: {e}"),
        })?;
        let raw: PathBuf = entry
            .path()
            .map_err(|e| DataError::Format {
                path: archive.to_path_buf(),
                reason: format!("bad entry name: {e}"),
            })?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let rel = plain_relative(&raw).ok_or_else(|| {
            entry_err(
                archive,
                &raw,
                "absolute path or `..` component (would write outside the destination)",
            )
        })?;
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(entry_err(archive, &raw, "empty path"));
        }
        check_no_links(tmp, &rel, archive)?;
        let out = tmp.join(&rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if kind.is_dir() {
            fs::create_dir_all(&out).map_err(io_err(&out))?;
        } else if kind.is_file() || kind.is_contiguous() {
            let mut f = File::create(&out).map_err(io_err(&out))?;
            io::copy(&mut entry, &mut f)
                .map_err(|e| entry_err(archive, &raw, format!("extraction failed: {e}")))?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| entry_err(archive, &raw, format!("bad link target: {e}")))?
                .ok_or_else(|| entry_err(archive, &raw, "link without a target"))?
                .into_owned();
            let safe = plain_relative(&target)
                .filter(|t| !t.as_os_str().is_empty())
                .ok_or_else(|| {
                    entry_err(
                        archive,
                        &raw,
                        format!(
                            "link to {:?} could point outside the archive (absolute or `..`)",
                            target.display().to_string()
                        ),
                    )
                })?;
            if kind.is_symlink() {
                std::os::unix::fs::symlink(&safe, &out).map_err(io_err(&out))?;
            } else {
                check_no_links(tmp, &safe, archive)?;
                let src = tmp.join(&safe);
                let is_file = fs::symlink_metadata(&src)
                    .map(|m| m.file_type().is_file())
                    .unwrap_or(false);
                if !is_file {
                    return Err(entry_err(
                        archive,
                        &raw,
                        "hard link to something that is not a file extracted before it",
                    ));
                }
                fs::hard_link(&src, &out).map_err(io_err(&out))?;
            }
        } else {
            return Err(entry_err(
                archive,
                &raw,
                format!("unsupported entry type {kind:?} (device files and FIFOs are refused)"),
            ));
        }
    }
    Ok(())
}

fn move_into_place(tmp: &Path, dest: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(tmp).map_err(io_err(tmp))? {
        let entry = entry.map_err(io_err(tmp))?;
        let name = entry.file_name();
        let target = dest.join(&name);
        if let Ok(m) = fs::symlink_metadata(&target) {
            if m.is_dir() {
                fs::remove_dir_all(&target).map_err(io_err(&target))?;
            } else {
                fs::remove_file(&target).map_err(io_err(&target))?;
            }
        }
        fs::rename(entry.path(), &target).map_err(io_err(&target))?;
        names.push(name.to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn plain_relative_rejects_escapes() {
        assert!(plain_relative(Path::new("/etc/passwd")).is_none());
        assert!(plain_relative(Path::new("a/../../b")).is_none());
        assert_eq!(
            plain_relative(Path::new("./a/b")).unwrap(),
            PathBuf::from("a/b")
        );
    }

    #[test]
    fn pet_archive_checksums_are_well_formed() {
        for a in pet_archives() {
            assert_eq!(a.md5.as_ref().unwrap().len(), 32);
            assert_eq!(a.sha256.as_ref().unwrap().len(), 64);
            assert!(a.urls[0].starts_with("https://thor.robots.ox.ac.uk/datasets/pets/"));
        }
    }
}
