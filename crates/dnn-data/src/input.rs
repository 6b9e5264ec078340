//! Opening dataset files: locating `name` or `name.gz`, and reading raw or gzip content with a
//! bound on how much is ever buffered.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result, io_err};

/// The two magic bytes every gzip member starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Chunk size of bounded reads.
const CHUNK: usize = 64 * 1024;

/// `dir/name` if it exists, else `dir/name.gz` if that exists, else a `NotFound` error naming
/// `dir/name` and saying that the `.gz` form was tried too.
pub(crate) fn locate(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::Io {
        source: io::Error::new(
            io::ErrorKind::NotFound,
            format!("file not found (nor {})", gz.display()),
        ),
        path: raw,
    })
}

/// An opened dataset file, decompressing transparently.
pub(crate) enum Input {
    /// An uncompressed file of known length.
    Raw { reader: BufReader<File>, len: u64 },
    /// A gzip-compressed file; its decompressed length is unknown until read.
    Gzip(MultiGzDecoder<BufReader<File>>),
}

impl Input {
    /// Opens `path`, detecting gzip by its magic bytes (never by the file name).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let mut magic = [0u8; 2];
        let got = read_up_to(&mut file, &mut magic).map_err(io_err(path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
        let reader = BufReader::new(file);
        if got == 2 && magic == GZIP_MAGIC {
            Ok(Input::Gzip(MultiGzDecoder::new(reader)))
        } else {
            Ok(Input::Raw { reader, len })
        }
    }

    /// Reads the rest of the content, but never more than `limit` bytes. The buffer grows with
    /// the bytes actually read, so a bogus `limit` costs nothing.
    pub(crate) fn read_bounded(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; CHUNK];
        let mut taken = self.take(limit);
        loop {
            let n = match taken.read(&mut chunk) {
                Ok(0) => return Ok(out),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads and discards the rest of the content, returning how many bytes it held.
    pub(crate) fn count_rest(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Raw { reader, .. } => reader.read(buf),
            Input::Gzip(decoder) => decoder.read(buf),
        }
    }
}

/// Fills `buf` as far as the reader allows, returning the number of bytes read (short only at
/// the end of the stream).
pub(crate) fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads the whole content of `path` (decompressed if gzip).
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut input = Input::open(path)?;
    match &mut input {
        Input::Raw { reader, len } => {
            let len = usize::try_from(*len).map_err(|_| {
                crate::error::format_err(path, "file is too large for this platform")
            })?;
            let mut data = Vec::with_capacity(len);
            reader.read_to_end(&mut data).map_err(io_err(path))?;
            Ok(data)
        }
        Input::Gzip(decoder) => {
            let mut data = Vec::new();
            decoder.read_to_end(&mut data).map_err(io_err(path))?;
            Ok(data)
        }
    }
}
