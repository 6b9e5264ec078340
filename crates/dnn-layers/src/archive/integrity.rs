//! Integrity of the HDF5 files magma-dnn writes (checkpoints, datasets): a checksum verified
//! before HDF5 parses a byte, and crash-safe replacement of a file.
//!
//! A sealed file starts with a 512-byte header in the HDF5 *user block* (space HDF5 reserves at
//! the start of a file and skips; h5py and the HDF5 tools read such files unchanged):
//!
//! ```text
//! magma-dnn integrity v1\n
//! sha256 <64 lowercase hex digits>\n
//! length <decimal bytes after the header>\n
//! <zero bytes up to offset 512>
//! ```
//!
//! The SHA-256 and the length cover every byte after the header, so a truncated file, a flipped
//! bit anywhere, or a file cut inside the header is found by [`verify`] without handing the
//! damaged bytes to the HDF5 C library. Files are sealed only when complete ([`seal`]), written
//! under a temporary name beside the target and renamed over it ([`commit`]: file `fsync`,
//! `rename`, folder `fsync`), so the target name only ever holds a complete, sealed file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bytes reserved at the start of a sealed file (an HDF5 user block: a power of two ≥ 512).
pub const HEADER_LEN: u64 = 512;
/// The first line of the header.
pub const MAGIC: &[u8] = b"magma-dnn integrity v1\n";
/// The 8-byte signature HDF5 writes at the start of a file without a user block.
pub const HDF5_SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";
/// Environment variable that lets files without an integrity header (written before it
/// existed) be read unverified.
pub const ALLOW_UNVERIFIED_ENV: &str = "MAGMA_ALLOW_UNVERIFIED";

/// Why a file failed its integrity check.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is shorter than its header says: a write that never completed, or a copy cut
    /// short.
    #[error(
        "{}: truncated: the integrity header promises {expected} bytes, the file has {found}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The content does not hash to the stored digest: the file was corrupted after it was
    /// written.
    #[error(
        "{}: corrupted: SHA-256 of the content is {computed}, the integrity header says {stored}",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        stored: String,
        computed: String,
    },
    /// A plain HDF5 file without the header (written before version 2 of the formats, or by
    /// another program).
    #[error(
        "{}: no magma-dnn integrity header (a file written before checksums existed, or by \
         another program); re-create it, or set {ALLOW_UNVERIFIED_ENV}=1 to read it unverified",
        path.display()
    )]
    Unsealed { path: PathBuf },
    /// Neither the header nor an HDF5 signature: not one of our files, or damaged at the start.
    #[error("{}: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The header is present and the content matches it.
    Verified,
    /// A plain HDF5 file without the header, allowed by the caller's policy.
    Unsealed,
}

/// How [`check`] treats a plain HDF5 file without the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Refuse it, unless the environment sets [`ALLOW_UNVERIFIED_ENV`] to `1` (our own formats).
    Require,
    /// Accept it (general-purpose readers, e.g. weights written by h5py).
    IfPresent,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IntegrityError + '_ {
    move |source| IntegrityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> IntegrityError {
    IntegrityError::BadHeader {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Whether two hex digests are equal, compared as a fold of their bytes' differences instead of
/// `memcmp`. libFuzzer records both operands of every `memcmp` and splices them into its inputs:
/// with `!=` on strings, the raw-mode fuzz targets (damaged files) learnt the digest of their own
/// input and forged valid headers within seconds, which fuzzes libhdf5 itself behind a valid
/// checksum (the sealed mode's job, kept out of CI's smoke run; see fuzz/known-libhdf5).
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of everything from the current position to the end, and the number of bytes read.
fn hash_rest(file: &mut std::fs::File, path: &Path) -> Result<(String, u64), IntegrityError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// The parsed header: digest and content length.
fn parse_header(path: &Path, header: &[u8]) -> Result<(String, u64), IntegrityError> {
    let body = header
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad(path, "integrity header damaged"))?;
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    if body[end..].iter().any(|&b| b != 0) {
        return Err(bad(path, "integrity header damaged (bytes after its end)"));
    }
    let text = std::str::from_utf8(&body[..end])
        .map_err(|_| bad(path, "integrity header damaged (not UTF-8)"))?;
    let mut lines = text.split_terminator('\n');
    let digest = lines
        .next()
        .and_then(|l| l.strip_prefix("sha256 "))
        .filter(|d| d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| bad(path, "integrity header damaged (sha256 line)"))?;
    let length = lines
        .next()
        .and_then(|l| l.strip_prefix("length "))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| bad(path, "integrity header damaged (length line)"))?;
    if lines.next().is_some() {
        return Err(bad(path, "integrity header damaged (extra lines)"));
    }
    Ok((digest.to_string(), length))
}

/// Checks `path` against its integrity header (reading the whole file once).
///
/// A plain HDF5 file (signature at offset 0, no header) is [`Checked::Unsealed`] under
/// [`Policy::IfPresent`], and under [`Policy::Require`] only when `MAGMA_ALLOW_UNVERIFIED=1`;
/// otherwise [`IntegrityError::Unsealed`]. Anything else without the header is refused.
pub fn check(path: &Path, policy: Policy) -> Result<Checked, IntegrityError> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut header = vec![0u8; HEADER_LEN.min(len) as usize];
    file.read_exact(&mut header).map_err(io_err(path))?;
    if header.starts_with(HDF5_SIGNATURE) {
        let allowed = policy == Policy::IfPresent
            || std::env::var(ALLOW_UNVERIFIED_ENV).is_ok_and(|v| v == "1");
        return if allowed {
            Ok(Checked::Unsealed)
        } else {
            Err(IntegrityError::Unsealed {
                path: path.to_path_buf(),
            })
        };
    }
    if !header.starts_with(MAGIC) {
        return Err(if len == 0 {
            bad(path, "empty file")
        } else if MAGIC.starts_with(&header) {
            IntegrityError::Truncated {
                path: path.to_path_buf(),
                expected: HEADER_LEN,
                found: len,
            }
        } else {
            bad(
                path,
                "not a magma-dnn HDF5 file (neither an integrity header nor an HDF5 signature \
                 at the start)",
            )
        });
    }
    if len < HEADER_LEN {
        return Err(IntegrityError::Truncated {
            path: path.to_path_buf(),
            expected: HEADER_LEN,
            found: len,
        });
    }
    let (stored, length) = parse_header(path, &header)?;
    let expected = HEADER_LEN.saturating_add(length);
    if len < expected {
        return Err(IntegrityError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: len,
        });
    }
    if len > expected {
        return Err(bad(
            path,
            format!(
                "{} bytes after the {expected} the integrity header accounts for",
                len - expected
            ),
        ));
    }
    let (computed, read) = hash_rest(&mut file, path)?;
    if read != length {
        // The file changed size while it was read.
        return Err(IntegrityError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: HEADER_LEN + read,
        });
    }
    if !same_digest(&computed, &stored) {
        return Err(IntegrityError::Mismatch {
            path: path.to_path_buf(),
            stored,
            computed,
        });
    }
    Ok(Checked::Verified)
}

/// [`check`] with [`Policy::Require`]: `Ok` only for a sealed file whose content matches (or an
/// unsealed HDF5 file when `MAGMA_ALLOW_UNVERIFIED=1`).
pub fn verify(path: &Path) -> Result<Checked, IntegrityError> {
    check(path, Policy::Require)
}

/// Writes the integrity header of a complete file whose first [`HEADER_LEN`] bytes were reserved
/// (an HDF5 file created with a 512-byte user block), then syncs it to disk.
pub fn seal(path: &Path) -> Result<(), IntegrityError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len < HEADER_LEN {
        return Err(bad(
            path,
            format!("{len} bytes cannot hold the {HEADER_LEN}-byte integrity header"),
        ));
    }
    file.seek(SeekFrom::Start(HEADER_LEN))
        .map_err(io_err(path))?;
    let (digest, length) = hash_rest(&mut file, path)?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(format!("sha256 {digest}\nlength {length}\n").as_bytes());
    header.resize(HEADER_LEN as usize, 0);
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    file.write_all(&header).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// A hidden temporary path beside `path`: `.NAME.tmp-PID`.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Removes temporary siblings of `path` (`.NAME.tmp-PID`) left by processes that no longer run
/// (a writer killed mid-write). Returns how many were removed.
pub fn remove_stale_temporaries(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = pid.split('-').next().unwrap_or_default();
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Syncs the folder holding `path`, so a rename into it survives a power loss.
pub fn sync_parent(path: &Path) -> Result<(), IntegrityError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir).map_err(io_err(dir))?;
        d.sync_all().map_err(io_err(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Seals the complete temporary file `tmp` and renames it over `target`, syncing the folder.
pub fn commit(tmp: &Path, target: &Path) -> Result<(), IntegrityError> {
    seal(tmp)?;
    std::fs::rename(tmp, target).map_err(|e| {
        bad(
            target,
            format!("renaming the complete file {} failed: {e}", tmp.display()),
        )
    })?;
    sync_parent(target)
}

/// Makes `previous` a copy of `target` (a hard link where the file system allows it, else a
/// copy), replacing it atomically, so `previous` always holds a complete file. Does nothing
/// when `target` does not exist or does not pass [`verify`] (a damaged file never replaces a
/// good previous one). Returns whether `previous` was updated.
pub fn keep_previous(target: &Path, previous: &Path) -> Result<bool, IntegrityError> {
    if !target.exists() || check(target, Policy::IfPresent).is_err() {
        return Ok(false);
    }
    let tmp = temporary_sibling(previous);
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(target, &tmp).is_err() {
        std::fs::copy(target, &tmp).map_err(io_err(&tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
    }
    if let Err(e) = std::fs::rename(&tmp, previous) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(previous)(e));
    }
    sync_parent(previous)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(dir: &Path, body: &[u8]) -> PathBuf {
        let p = dir.join("f.bin");
        let mut bytes = vec![0u8; HEADER_LEN as usize];
        bytes.extend_from_slice(body);
        std::fs::write(&p, bytes).unwrap();
        seal(&p).unwrap();
        p
    }

    #[test]
    fn sealed_files_verify_and_any_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = sealed(dir.path(), b"hello world, this is the body");
        assert_eq!(verify(&p).unwrap(), Checked::Verified);
        let good = std::fs::read(&p).unwrap();
        assert!(good.starts_with(MAGIC));

        // A flipped bit in the body.
        let mut bytes = good.clone();
        bytes[HEADER_LEN as usize + 3] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let e = verify(&p).unwrap_err();
        assert!(matches!(e, IntegrityError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("f.bin") && e.to_string().contains("corrupted"));

        // Truncated body, truncated header, extra bytes, damaged header.
        for (cut, what) in [
            (good.len() - 1, "truncated"),
            (100, "truncated"),
            (5, "truncated"),
        ] {
            std::fs::write(&p, &good[..cut]).unwrap();
            let e = verify(&p).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("f.bin"), "{cut}: {e}");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&p, &longer).unwrap();
        assert!(
            verify(&p)
                .unwrap_err()
                .to_string()
                .contains("1 bytes after")
        );
        let mut bytes = good.clone();
        bytes[MAGIC.len() + 2] = b'X';
        std::fs::write(&p, &bytes).unwrap();
        assert!(
            verify(&p)
                .unwrap_err()
                .to_string()
                .contains("header damaged")
        );
        std::fs::write(&p, b"").unwrap();
        assert!(verify(&p).unwrap_err().to_string().contains("empty file"));
        std::fs::write(&p, b"GIF89a and so on").unwrap();
        assert!(
            verify(&p)
                .unwrap_err()
                .to_string()
                .contains("not a magma-dnn")
        );
    }

    #[test]
    fn plain_hdf5_files_follow_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plain.h5");
        let mut bytes = HDF5_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0; 100]);
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(check(&p, Policy::IfPresent).unwrap(), Checked::Unsealed);
        if std::env::var(ALLOW_UNVERIFIED_ENV).is_err() {
            let e = verify(&p).unwrap_err();
            assert!(matches!(e, IntegrityError::Unsealed { .. }), "{e}");
            assert!(e.to_string().contains(ALLOW_UNVERIFIED_ENV));
        }
    }

    #[test]
    fn keep_previous_copies_only_good_files_and_stale_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let target = sealed(dir.path(), b"generation one");
        let prev = dir.path().join("f.prev.bin");
        assert!(keep_previous(&target, &prev).unwrap());
        assert_eq!(
            std::fs::read(&prev).unwrap(),
            std::fs::read(&target).unwrap()
        );
        // A damaged target never replaces a good previous file. (Files are replaced by rename,
        // never rewritten in place: `prev` may share the target's inode until then.)
        let good_prev = std::fs::read(&prev).unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"garbage").unwrap();
        std::fs::rename(&junk, &target).unwrap();
        assert!(!keep_previous(&target, &prev).unwrap());
        assert_eq!(std::fs::read(&prev).unwrap(), good_prev);
        // A temporary of a dead process goes, one of a live process stays.
        let dead = dir.path().join(".f.bin.tmp-4294967295");
        let live = temporary_sibling(&target);
        std::fs::write(&dead, b"x").unwrap();
        std::fs::write(&live, b"x").unwrap();
        assert_eq!(remove_stale_temporaries(&target), 1);
        assert!(!dead.exists() && live.exists());
    }
}
