//! The downloader against a local HTTP server (127.0.0.1, port 0) written here: full download,
//! resume after a cut-off transfer, checksum mismatch, and archives that try to write outside
//! the destination. No other host is ever contacted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dnn_data::{DataError, DownloadOptions, RemoteArchive, download_archives, extract_tar_gz};
use flate2::Compression;
use flate2::write::GzEncoder;

/// One request the server saw: path and `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: String,
    range: Option<String>,
}

/// A tiny HTTP/1.1 file server on 127.0.0.1 that honours `Range: bytes=N-`, and optionally cuts
/// the first body it sends in half (closing the connection). It stops when dropped, or after
/// 30 s at the latest.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>, cut_first: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (Arc::clone(&stop), Arc::clone(&seen));
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let bodies_sent = AtomicUsize::new(0);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = handle(stream, &files, cut_first, &bodies_sent, &seen2);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Self {
            addr,
            stop,
            seen,
            handle: Some(handle),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle(
    mut stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    cut_first: bool,
    bodies_sent: &AtomicUsize,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let Some(body) = files.get(&path) else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let len = body.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, from, extra) = match start {
        Some(s) if s < len => (
            "206 Partial Content",
            s,
            format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1),
        ),
        Some(_) => {
            let msg = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return stream.write_all(msg.as_bytes());
        }
        None => ("200 OK", 0, String::new()),
    };
    let part = &body[from..];
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        part.len()
    );
    stream.write_all(header.as_bytes())?;
    let first = bodies_sent.fetch_add(1, Ordering::SeqCst) == 0;
    if cut_first && first {
        // Send about 40 % of the body, then drop the connection mid-body.
        stream.write_all(&part[..part.len() * 2 / 5])?;
        stream.flush()?;
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return Ok(());
    }
    stream.write_all(part)?;
    stream.flush()
}

/// A `.tar.gz` holding `entries` (path, content) as regular files.
fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A raw tar header whose name is written byte for byte (the `tar` builder refuses `..` and
/// absolute names, which is exactly what a malicious archive has).
fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut header = tar::Header::new_old();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_cksum();
    header
}

/// A raw header and the entry's data.
type Entry<'a> = (tar::Header, &'a [u8]);

fn tar_gz_raw(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (header, data) in entries {
        builder.append(header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Pseudo-random bytes, so gzip cannot shrink the archive to a few hundred bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn digests(bytes: &[u8]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("blob");
    std::fs::write(&p, bytes).unwrap();
    dnn_data::file_digests(&p).unwrap()
}

fn archive(server: &Server, name: &str, bytes: &[u8]) -> RemoteArchive {
    let (md5, sha256) = digests(bytes);
    RemoteArchive {
        file_name: name.to_string(),
        urls: vec![server.url(name)],
        size: Some(bytes.len() as u64),
        md5: Some(md5),
        sha256: Some(sha256),
    }
}

fn quick_options(attempts: usize) -> DownloadOptions {
    DownloadOptions {
        attempts,
        timeout: Duration::from_secs(5),
        ..DownloadOptions::default()
    }
}

/// Files and folders directly under `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn pet_like_archives() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let jpg = noise(50_000, 7);
    let images = tar_gz(&[
        ("images/Abyssinian_1.jpg", &jpg),
        ("images/Bengal_2.jpg", b"jpeg"),
    ]);
    let annotations = tar_gz(&[
        ("annotations/list.txt", b"Abyssinian_1 1 1 1\n"),
        ("annotations/trainval.txt", b"Abyssinian_1 1 1 1\n"),
        ("annotations/test.txt", b"Bengal_2 6 1 6\n"),
        ("annotations/trimaps/Abyssinian_1.png", b"png"),
    ]);
    (images, annotations, jpg)
}

#[test]
fn full_download_verifies_extracts_and_skips_when_done() {
    let (images, annotations, jpg) = pet_like_archives();
    let server = Server::start(
        HashMap::from([
            ("images.tar.gz".to_string(), images.clone()),
            ("annotations.tar.gz".to_string(), annotations.clone()),
        ]),
        false,
    );
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("oxford-iiit-pet");
    let archives = vec![
        archive(&server, "images.tar.gz", &images),
        archive(&server, "annotations.tar.gz", &annotations),
    ];
    download_archives(&dest, &archives, &quick_options(1)).unwrap();
    assert_eq!(
        std::fs::read(dest.join("images/Abyssinian_1.jpg")).unwrap(),
        jpg
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("annotations/test.txt")).unwrap(),
        "Bengal_2 6 1 6\n"
    );
    assert!(dest.join("annotations/trimaps/Abyssinian_1.png").is_file());
    // Archives are removed after extraction; markers and the two folders remain.
    assert_eq!(
        listing(&dest),
        [
            ".annotations.tar.gz.done",
            ".images.tar.gz.done",
            "annotations",
            "images"
        ]
    );
    let requests = server.seen().len();
    assert_eq!(requests, 2);
    assert!(server.seen().iter().all(|s| s.range.is_none()));
    // A second run finds both markers and sends no request.
    download_archives(&dest, &archives, &quick_options(1)).unwrap();
    assert_eq!(server.seen().len(), requests);
}

#[test]
fn cut_off_transfer_resumes_with_a_range_request() {
    let (images, _, jpg) = pet_like_archives();
    let files = HashMap::from([("images.tar.gz".to_string(), images.clone())]);
    let tmp = tempfile::tempdir().unwrap();

    // One attempt: the first call fails, keeping the part file; the second call resumes it.
    let server = Server::start(files.clone(), true);
    let dest = tmp.path().join("one-attempt");
    let archives = vec![archive(&server, "images.tar.gz", &images)];
    let err = download_archives(&dest, &archives, &quick_options(1)).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(err.to_string().contains("cut off"), "{err}");
    let part = dest.join("images.tar.gz.part");
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(
        kept > 0 && kept < images.len() as u64,
        "kept {kept} of {}",
        images.len()
    );
    download_archives(&dest, &archives, &quick_options(1)).unwrap();
    assert_eq!(
        std::fs::read(dest.join("images/Abyssinian_1.jpg")).unwrap(),
        jpg
    );
    assert!(!part.exists());
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    drop(server);

    // Three attempts: one call retries by itself.
    let server = Server::start(files, true);
    let dest = tmp.path().join("retrying");
    let archives = vec![archive(&server, "images.tar.gz", &images)];
    download_archives(&dest, &archives, &quick_options(3)).unwrap();
    assert_eq!(
        std::fs::read(dest.join("images/Abyssinian_1.jpg")).unwrap(),
        jpg
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].range.as_deref().unwrap().starts_with("bytes="));
}

#[test]
fn checksum_mismatch_deletes_the_download_and_extracts_nothing() {
    let (images, _, _) = pet_like_archives();
    let server = Server::start(
        HashMap::from([("images.tar.gz".to_string(), images.clone())]),
        false,
    );
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("pets");

    let mut bad = archive(&server, "images.tar.gz", &images);
    bad.sha256 = Some("0".repeat(64));
    let err = download_archives(&dest, &[bad], &quick_options(1)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("SHA-256 mismatch"), "{msg}");
    assert!(msg.contains("images.tar.gz"), "{msg}");
    assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));

    let mut bad = archive(&server, "images.tar.gz", &images);
    bad.md5 = Some("f".repeat(32));
    let err = download_archives(&dest, &[bad], &quick_options(1)).unwrap_err();
    assert!(err.to_string().contains("MD5 mismatch"), "{err}");
    assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));

    // A missing file is an HTTP error naming the URL, not a retry loop.
    let mut missing = archive(&server, "images.tar.gz", &images);
    missing.urls = vec![server.url("nope.tar.gz")];
    let err = download_archives(&dest, &[missing], &quick_options(3)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("nope.tar.gz") && msg.contains("404"), "{msg}");
}

#[test]
fn malicious_archive_is_rejected_and_writes_nothing_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let outside_abs = tmp.path().join("abs-evil");
    let abs_name = outside_abs.to_str().unwrap().to_string();
    let evil = tar_gz_raw(&[
        (
            raw_header("images/ok.jpg", tar::EntryType::Regular, 2, None),
            b"ok",
        ),
        (
            raw_header("../evil", tar::EntryType::Regular, 4, None),
            b"evil",
        ),
        (
            raw_header(&abs_name, tar::EntryType::Regular, 4, None),
            b"evil",
        ),
    ]);
    let server = Server::start(
        HashMap::from([("images.tar.gz".to_string(), evil.clone())]),
        false,
    );
    let dest = tmp.path().join("pets");
    let err = download_archives(
        &dest,
        &[archive(&server, "images.tar.gz", &evil)],
        &quick_options(1),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("../evil") && msg.contains("outside"), "{msg}");
    assert!(!tmp.path().join("evil").exists());
    assert!(!dest.join("evil").exists());
    assert!(!outside_abs.exists());
    // Nothing extracted (not even the good entry), no temporary folder left; the verified
    // archive stays for inspection.
    assert_eq!(listing(&dest), ["images.tar.gz"]);

    // The absolute entry alone is rejected too.
    let abs_only = tar_gz_raw(&[(
        raw_header(&abs_name, tar::EntryType::Regular, 4, None),
        b"evil",
    )]);
    let archive_path = tmp.path().join("abs.tar.gz");
    std::fs::write(&archive_path, &abs_only).unwrap();
    let out = tmp.path().join("abs-out");
    let err = extract_tar_gz(&archive_path, &out).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    assert!(!outside_abs.exists());
    assert!(listing(&out).is_empty());
}

#[test]
fn links_out_of_the_tree_and_device_files_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "symlink-up",
            vec![(
                raw_header("a/link", tar::EntryType::Symlink, 0, Some("../../etc")),
                b"",
            )],
            "could point outside",
        ),
        (
            "symlink-abs",
            vec![(
                raw_header("link", tar::EntryType::Symlink, 0, Some("/etc/passwd")),
                b"",
            )],
            "could point outside",
        ),
        (
            "hardlink-abs",
            vec![(
                raw_header("hl", tar::EntryType::Link, 0, Some("/etc/passwd")),
                b"",
            )],
            "could point outside",
        ),
        (
            "through-link",
            vec![
                (
                    raw_header("d", tar::EntryType::Symlink, 0, Some("sub")),
                    b"",
                ),
                (raw_header("d/x", tar::EntryType::Regular, 1, None), b"x"),
            ],
            "symbolic link",
        ),
        (
            "device",
            vec![(raw_header("dev", tar::EntryType::Char, 0, None), b"")],
            "device",
        ),
        (
            "fifo",
            vec![(raw_header("fifo", tar::EntryType::Fifo, 0, None), b"")],
            "FIFO",
        ),
    ];
    for (name, entries, expected) in cases {
        let bytes = tar_gz_raw(&entries);
        let archive_path = tmp.path().join(format!("{name}.tar.gz"));
        std::fs::write(&archive_path, &bytes).unwrap();
        let out = tmp.path().join(format!("{name}-out"));
        let err = extract_tar_gz(&archive_path, &out).unwrap_err();
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert!(
            err.to_string().contains(&format!("{name}.tar.gz")),
            "{name}: {err}"
        );
        assert!(listing(&out).is_empty(), "{name}: {:?}", listing(&out));
    }

    // Links that stay inside the tree are fine.
    let ok = tar_gz_raw(&[
        (
            raw_header("data/file.txt", tar::EntryType::Regular, 2, None),
            b"hi",
        ),
        (
            raw_header(
                "data/alias.txt",
                tar::EntryType::Symlink,
                0,
                Some("file.txt"),
            ),
            b"",
        ),
        (
            raw_header(
                "data/hard.txt",
                tar::EntryType::Link,
                0,
                Some("data/file.txt"),
            ),
            b"",
        ),
    ]);
    let archive_path: PathBuf = tmp.path().join("ok.tar.gz");
    std::fs::write(&archive_path, &ok).unwrap();
    let out = tmp.path().join("ok-out");
    assert_eq!(extract_tar_gz(&archive_path, &out).unwrap(), ["data"]);
    assert_eq!(
        std::fs::read_to_string(out.join("data/alias.txt")).unwrap(),
        "hi"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("data/hard.txt")).unwrap(),
        "hi"
    );
}
