//! Image and mask files: decoding by content (never by extension) through OpenCV, palette-aware
//! mask reading, and atomic PNG / JPEG writing.
//!
//! Without the `opencv` feature only the parts that need no OpenCV exist: format sniffing,
//! PNG masks ([`decode_mask`] and [`read_mask`] on PNG content), PNG encoding and
//! [`write_atomic`]; image decoding and JPEG encoding are compiled out.
//!
//! - Images become 8-bit RGB ([`RgbImage`]): BGR is swapped, grey is replicated, an alpha channel
//!   is composited over black (a fully opaque image keeps its exact colours), 16-bit samples are
//!   scaled to 8 bits. EXIF orientation is *ignored*: masks are annotated in stored pixel order,
//!   and rotating only the image would break the pairing.
//! - Masks become 8-bit class indices ([`Mask`]). A palette PNG (colour type 3) keeps its
//!   indices — OpenCV would turn them into colours — so PNG masks are decoded with the `png`
//!   crate and no expansion; other single-channel formats go through OpenCV unchanged.
//! - Formats OpenCV cannot decode (GIF in Debian's OpenCV 4.6) give [`DataError::Unsupported`],
//!   naming the file and the format found, so callers can skip the sample with a warning.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "opencv")]
use opencv::core::{Mat, Vector};
#[cfg(feature = "opencv")]
use opencv::imgcodecs;
#[cfg(feature = "opencv")]
use opencv::prelude::*;

use crate::error::{DataError, Result, io_err};
use crate::segmentation::{Mask, RgbImage};

/// An image container format, recognised from the first bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Gif,
    Bmp,
    Tiff,
    WebP,
    /// Netpbm (PBM / PGM / PPM, `P1`–`P6`).
    Pnm,
    /// None of the above.
    Unknown,
}

impl ImageFormat {
    /// Recognises the format from the file's first bytes (12 are enough).
    pub fn detect(bytes: &[u8]) -> ImageFormat {
        let starts = |magic: &[u8]| bytes.starts_with(magic);
        if starts(&[0xFF, 0xD8, 0xFF]) {
            ImageFormat::Jpeg
        } else if starts(&PNG_SIGNATURE) {
            ImageFormat::Png
        } else if starts(b"GIF87a") || starts(b"GIF89a") {
            ImageFormat::Gif
        } else if starts(b"BM") {
            ImageFormat::Bmp
        } else if starts(b"II*\0") || starts(b"MM\0*") {
            ImageFormat::Tiff
        } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
            ImageFormat::WebP
        } else if bytes.len() >= 2 && bytes[0] == b'P' && (b'1'..=b'6').contains(&bytes[1]) {
            ImageFormat::Pnm
        } else {
            ImageFormat::Unknown
        }
    }

    /// Whether this build's OpenCV is expected to decode the format (GIF and unknown content
    /// are not; a trial decode is the only proof for those).
    pub fn is_decodable(self) -> bool {
        !matches!(self, ImageFormat::Gif | ImageFormat::Unknown)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::Gif => "GIF",
            ImageFormat::Bmp => "BMP",
            ImageFormat::Tiff => "TIFF",
            ImageFormat::WebP => "WebP",
            ImageFormat::Pnm => "PNM",
            ImageFormat::Unknown => "unknown format",
        })
    }
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// PNG colour type of palette images.
pub const PNG_COLOR_TYPE_PALETTE: u8 = 3;

/// The fields of a PNG `IHDR` chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngHeader {
    pub width: u32,
    pub height: u32,
    pub bit_depth: u8,
    /// 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA.
    pub color_type: u8,
    pub interlaced: bool,
}

impl PngHeader {
    /// Whether pixels are palette indices (colour type 3).
    pub fn is_palette(&self) -> bool {
        self.color_type == PNG_COLOR_TYPE_PALETTE
    }
}

/// Parses the `IHDR` chunk of a PNG file (which must directly follow the signature); `None`
/// when `bytes` is not a PNG or the header is cut short.
pub fn png_header(bytes: &[u8]) -> Option<PngHeader> {
    if bytes.len() < 33 || !bytes.starts_with(&PNG_SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be32 =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if be32(8) != 13 {
        return None;
    }
    Some(PngHeader {
        width: be32(16),
        height: be32(20),
        bit_depth: bytes[24],
        color_type: bytes[25],
        interlaced: bytes[28] != 0,
    })
}

/// Reads a whole file; the error names it.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_err(path))
}

/// Reads the first `n` bytes of a file (fewer when it is shorter), for format sniffing.
pub fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut out = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut out)
        .map_err(io_err(path))?;
    Ok(out)
}

/// The detected format of the file at `path` (reads 16 bytes).
pub fn sniff_format(path: &Path) -> Result<ImageFormat> {
    Ok(ImageFormat::detect(&read_prefix(path, 16)?))
}

/// Whether an image file can be decoded, as found by [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// JPEG or PNG by signature, or another format that decoded once.
    Decodable(ImageFormat),
    /// The content is not an image this build decodes; `reason` says what was found.
    Undecodable { format: ImageFormat, reason: String },
}

/// Checks cheaply whether the image at `path` decodes: JPEG and PNG content is trusted from its
/// signature (16 bytes read); anything else is decoded once. Errors only when the file cannot
/// be read.
#[cfg(feature = "opencv")]
pub fn probe(path: &Path) -> Result<Probe> {
    let format = sniff_format(path)?;
    if matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Ok(Probe::Decodable(format));
    }
    let reason = match read_rgb(path) {
        Ok(_) => return Ok(Probe::Decodable(format)),
        Err(DataError::Unsupported { reason, .. } | DataError::Decode { reason, .. }) => reason,
        Err(e) => return Err(e),
    };
    Ok(Probe::Undecodable {
        format,
        reason: format!("{format} content: {reason}"),
    })
}

/// Reads and decodes the image at `path` to RGB at its full size.
#[cfg(feature = "opencv")]
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    decode_rgb(&read_bytes(path)?, path)
}

/// Decodes an image held in `bytes` (read from `path`, which errors name) to RGB at full size.
#[cfg(feature = "opencv")]
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    decode_rgb_reduced(bytes, path, 1)
}

/// Decodes an image to RGB, letting a JPEG decoder skip detail the caller will throw away:
/// when both sides of the image are at least 2, 4 or 8 times the target `[height, width]`,
/// OpenCV's reduced decoding (`IMREAD_REDUCED_COLOR_2/4/8`, DCT scaling in libjpeg) returns an
/// image that much smaller, still at least as large as the target on both sides (the largest such
/// factor is used). Other formats decode at full size.
#[cfg(feature = "opencv")]
pub fn decode_rgb_for_target(bytes: &[u8], path: &Path, target_hw: [usize; 2]) -> Result<RgbImage> {
    let factor = if ImageFormat::detect(bytes) == ImageFormat::Jpeg {
        match jpeg_size(bytes) {
            Some([h, w]) => reduction_factor([h, w], target_hw),
            None => 1,
        }
    } else {
        1
    };
    decode_rgb_reduced(bytes, path, factor)
}

/// The largest factor in {1, 2, 4, 8} with `ceil(side / factor) >= target` on both sides.
pub fn reduction_factor(image_hw: [usize; 2], target_hw: [usize; 2]) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|&f| {
            image_hw[0].div_ceil(f) >= target_hw[0].max(1)
                && image_hw[1].div_ceil(f) >= target_hw[1].max(1)
        })
        .unwrap_or(1)
}

/// Whether `small` is `full` (both `[width, height]` or both `[height, width]`) divided by 2, 4
/// or 8 rounding up, as reduced JPEG decoding produces.
#[cfg(feature = "opencv")]
pub(crate) fn is_reduction(full: [usize; 2], small: [usize; 2]) -> bool {
    [2, 4, 8]
        .into_iter()
        .any(|f| full.map(|s| s.div_ceil(f)) == small)
}

/// `[height, width]` of a JPEG from its first start-of-frame marker, without decoding.
pub fn jpeg_size(bytes: &[u8]) -> Option<[usize; 2]> {
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1;
            continue;
        }
        // Markers without a length: TEM, RSTn, SOI, EOI.
        if marker == 0x01 || (0xD0..=0xD9).contains(&marker) {
            at += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if at + 9 > bytes.len() {
                return None;
            }
            let h = usize::from(u16::from_be_bytes([bytes[at + 5], bytes[at + 6]]));
            let w = usize::from(u16::from_be_bytes([bytes[at + 7], bytes[at + 8]]));
            return Some([h, w]);
        }
        at += 2 + len;
    }
    None
}

#[cfg(feature = "opencv")]
fn decode_rgb_reduced(bytes: &[u8], path: &Path, factor: usize) -> Result<RgbImage> {
    mat_to_rgb(&decode_mat(bytes, path, factor)?, path)
}

/// Decodes and resizes in one go, to exactly `size` (`[height, width]`, stretching): reduced
/// JPEG decoding as in [`decode_rgb_for_target`], then an OpenCV resize of the decoded (BGR)
/// matrix, and the channel swap on the small result only. The fast path for loaders that
/// stretch to a fixed size (classification folders, benchmarks); same result as
/// [`decode_rgb_for_target`] followed by [`crate::resize_rgb`].
#[cfg(feature = "opencv")]
pub fn decode_rgb_resized(
    bytes: &[u8],
    path: &Path,
    size: [usize; 2],
    interpolation: crate::preprocess::Interpolation,
) -> Result<RgbImage> {
    let [out_h, out_w] = size;
    if out_h == 0 || out_w == 0 {
        return Err(crate::error::format_err(
            path,
            format!("target size {size:?} has a zero side"),
        ));
    }
    let factor = if ImageFormat::detect(bytes) == ImageFormat::Jpeg {
        jpeg_size(bytes).map_or(1, |hw| reduction_factor(hw, size))
    } else {
        1
    };
    let mat = decode_mat(bytes, path, factor)?;
    if mat.depth() != opencv::core::CV_8U || mat.channels() != 3 {
        return crate::preprocess::resize_rgb(&mat_to_rgb(&mat, path)?, size, interpolation)
            .map_err(|e| match e {
                DataError::Preprocess { reason, .. } => crate::error::format_err(path, reason),
                other => other,
            });
    }
    let (h, w) = (mat.rows() as usize, mat.cols() as usize);
    if [h, w] == size {
        return mat_to_rgb(&mat, path);
    }
    let flag = crate::preprocess::interpolation_flag(interpolation, [h, w], size);
    let mut small = Mat::default();
    opencv::imgproc::resize(
        &mat,
        &mut small,
        opencv::core::Size::new(out_w as i32, out_h as i32),
        0.0,
        0.0,
        flag,
    )
    .map_err(cv_err(path))?;
    mat_to_rgb(&small, path)
}

/// Decodes to an OpenCV matrix: JPEG as 3-channel BGR (reduced by `factor` in {1, 2, 4, 8}),
/// EXIF orientation ignored; other formats unchanged (alpha and 16-bit depth kept).
#[cfg(feature = "opencv")]
fn decode_mat(bytes: &[u8], path: &Path, factor: usize) -> Result<Mat> {
    let format = ImageFormat::detect(bytes);
    if bytes.is_empty() {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    let flags = if format == ImageFormat::Jpeg {
        let reduced = match factor {
            8 => imgcodecs::IMREAD_REDUCED_COLOR_8,
            4 => imgcodecs::IMREAD_REDUCED_COLOR_4,
            2 => imgcodecs::IMREAD_REDUCED_COLOR_2,
            _ => imgcodecs::IMREAD_COLOR,
        };
        reduced | imgcodecs::IMREAD_IGNORE_ORIENTATION
    } else {
        // Keeps alpha and 16-bit depth so they are converted deliberately.
        imgcodecs::IMREAD_UNCHANGED
    };
    let mat = imgcodecs::imdecode(&bytes, flags).map_err(cv_err(path))?;
    if mat.empty() {
        return Err(undecodable(path, format));
    }
    Ok(mat)
}

/// The error for content OpenCV returned nothing for.
#[cfg(feature = "opencv")]
fn undecodable(path: &Path, format: ImageFormat) -> DataError {
    if format.is_decodable() {
        DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "OpenCV could not decode this {format} content (corrupt or truncated?)"
            ),
        }
    } else {
        DataError::Unsupported {
            path: path.to_path_buf(),
            format: format.to_string(),
            reason: "OpenCV in this build has no decoder for it".into(),
        }
    }
}

/// Converts a decoded OpenCV image (1, 3 or 4 channels, 8 or 16 bits, BGR order) to RGB.
#[cfg(feature = "opencv")]
fn mat_to_rgb(mat: &Mat, path: &Path) -> Result<RgbImage> {
    let depth = mat.depth();
    let eight_bit = if depth == opencv::core::CV_8U {
        None
    } else if depth == opencv::core::CV_16U {
        let mut out = Mat::default();
        mat.convert_to(&mut out, opencv::core::CV_8U, 1.0 / 257.0, 0.0)
            .map_err(cv_err(path))?;
        Some(out)
    } else {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!("unsupported sample depth (OpenCV depth code {depth})"),
        });
    };
    let mat = eight_bit.as_ref().unwrap_or(mat);
    let (width, height) = (mat.cols() as usize, mat.rows() as usize);
    let channels = mat.channels() as usize;
    let src = continuous_bytes(mat, path)?;
    let mut data = vec![0u8; width * height * 3];
    match channels {
        1 => {
            for (out, &g) in data.chunks_exact_mut(3).zip(src.iter()) {
                out.fill(g);
            }
        }
        3 => {
            for (out, bgr) in data.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                out.copy_from_slice(&[bgr[2], bgr[1], bgr[0]]);
            }
        }
        4 => {
            // Premultiplies by alpha: composites over black; opaque pixels are unchanged.
            let over = |c: u8, a: u8| ((u16::from(c) * u16::from(a) + 127) / 255) as u8;
            for (out, bgra) in data.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
                let a = bgra[3];
                out.copy_from_slice(&[over(bgra[2], a), over(bgra[1], a), over(bgra[0], a)]);
            }
        }
        n => {
            return Err(DataError::Decode {
                path: path.to_path_buf(),
                reason: format!("unsupported channel count {n}"),
            });
        }
    }
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// The pixel bytes of a matrix, copying when it is not continuous.
#[cfg(feature = "opencv")]
fn continuous_bytes<'a>(mat: &'a Mat, path: &Path) -> Result<std::borrow::Cow<'a, [u8]>> {
    if mat.is_continuous() {
        Ok(std::borrow::Cow::Borrowed(
            mat.data_bytes().map_err(cv_err(path))?,
        ))
    } else {
        let copy = mat.try_clone().map_err(cv_err(path))?;
        Ok(std::borrow::Cow::Owned(
            copy.data_bytes().map_err(cv_err(path))?.to_vec(),
        ))
    }
}

/// Wraps an OpenCV error with the file it happened on.
#[cfg(feature = "opencv")]
pub(crate) fn cv_err(path: &Path) -> impl FnOnce(opencv::Error) -> DataError + '_ {
    move |e| DataError::Decode {
        path: path.to_path_buf(),
        reason: format!("OpenCV: {e}"),
    }
}

/// Reads and decodes the mask at `path` (see [`decode_mask`]).
pub fn read_mask(path: &Path) -> Result<Mask> {
    decode_mask(&read_bytes(path)?, path)
}

/// Decodes a mask of 8-bit class indices.
///
/// PNG: greyscale or palette, bit depth 1, 2, 4 or 8; palette PNGs give their raw indices.
/// Other formats: decoded by OpenCV unchanged and must be single-channel 8-bit (a 3-channel file
/// whose channels are all equal is accepted as grey). Colour PNGs, 16-bit masks and JPEG masks
/// (lossy: labels would not survive) are refused with [`DataError::Decode`] naming the file.
pub fn decode_mask(bytes: &[u8], path: &Path) -> Result<Mask> {
    match ImageFormat::detect(bytes) {
        ImageFormat::Png => decode_png_indices(bytes, path),
        ImageFormat::Jpeg => Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "a JPEG mask is lossy and cannot hold exact class indices; use PNG".into(),
        }),
        #[cfg(feature = "opencv")]
        format => {
            let mat =
                imgcodecs::imdecode(&bytes, imgcodecs::IMREAD_UNCHANGED).map_err(cv_err(path))?;
            if mat.empty() {
                return Err(undecodable(path, format));
            }
            mat_to_mask(&mat, path)
        }
        #[cfg(not(feature = "opencv"))]
        format => Err(DataError::Unsupported {
            path: path.to_path_buf(),
            format: format.to_string(),
            reason: format!(
                "only PNG masks decode without OpenCV; {}",
                crate::open::NO_OPENCV
            ),
        }),
    }
}

#[cfg(feature = "opencv")]
fn mat_to_mask(mat: &Mat, path: &Path) -> Result<Mask> {
    if mat.depth() != opencv::core::CV_8U {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "a mask must hold 8-bit samples".into(),
        });
    }
    let (width, height) = (mat.cols() as usize, mat.rows() as usize);
    let src = continuous_bytes(mat, path)?;
    let data = match mat.channels() {
        1 => src.into_owned(),
        3 if src.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]) => {
            src.chunks_exact(3).map(|p| p[0]).collect()
        }
        n => {
            return Err(DataError::Decode {
                path: path.to_path_buf(),
                reason: format!("a mask must be single-channel class indices, found {n} channels"),
            });
        }
    };
    Ok(Mask {
        width,
        height,
        data,
    })
}

/// The largest decoded mask [`decode_mask`] accepts (1 GiB: 32768 × 32768 8-bit pixels).
pub const MAX_MASK_BYTES: usize = 1 << 30;

/// Decodes a greyscale or palette PNG to its raw 8-bit samples (palette indices stay indices).
fn decode_png_indices(bytes: &[u8], path: &Path) -> Result<Mask> {
    let header = png_header(bytes).ok_or_else(|| DataError::Decode {
        path: path.to_path_buf(),
        reason: "PNG signature without a valid IHDR chunk".into(),
    })?;
    match header.color_type {
        0 | PNG_COLOR_TYPE_PALETTE => {}
        2 | 6 => {
            return Err(DataError::Decode {
                path: path.to_path_buf(),
                reason: format!(
                    "a mask must be a greyscale or palette PNG of class indices, this one is colour \
                     (PNG colour type {})",
                    header.color_type
                ),
            });
        }
        t => {
            return Err(DataError::Decode {
                path: path.to_path_buf(),
                reason: format!(
                    "a mask must be a greyscale or palette PNG, found PNG colour type {t}"
                ),
            });
        }
    }
    if header.bit_depth > 8 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "a mask must hold at most 8 bits per pixel, found {}",
                header.bit_depth
            ),
        });
    }
    let png_err = |e: png::DecodingError| DataError::Decode {
        path: path.to_path_buf(),
        reason: format!("PNG: {e}"),
    };
    let mut decoder = png::Decoder::new(bytes);
    // No expansion: palette indices and low bit depths arrive as stored.
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(png_err)?;
    // Check the size the header claims before allocating it: deflate expands at most ~1032:1,
    // so a file of N bytes cannot hold more than about 1032·N bytes of pixels (found by
    // fuzzing: a 60-byte file claiming 255 × 3.6e9 pixels asked for 116 GB).
    let needed = reader.output_buffer_size();
    let possible = bytes.len().saturating_mul(1032).saturating_add(1 << 16);
    if needed > possible.min(MAX_MASK_BYTES) {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "PNG header claims {}x{} pixels ({needed} bytes), which {}",
                header.width,
                header.height,
                if needed > possible {
                    format!(
                        "its {} bytes cannot hold: truncated or corrupt",
                        bytes.len()
                    )
                } else {
                    format!("is more than the {MAX_MASK_BYTES} bytes a mask may take")
                }
            ),
        });
    }
    let mut buf = vec![0u8; needed];
    let frame = reader.next_frame(&mut buf).map_err(png_err)?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let depth = usize::from(header.bit_depth);
    let data = if depth == 8 && frame.line_size == width {
        buf.truncate(width * height);
        buf
    } else if depth == 8 {
        let mut data = Vec::with_capacity(width * height);
        for row in buf.chunks(frame.line_size).take(height) {
            data.extend_from_slice(&row[..width]);
        }
        data
    } else {
        let per_byte = 8 / depth;
        let max = (1u8 << depth) - 1;
        let mut data = Vec::with_capacity(width * height);
        for row in buf.chunks(frame.line_size).take(height) {
            data.extend((0..width).map(|x| {
                let byte = row[x / per_byte];
                let shift = 8 - depth * (x % per_byte + 1);
                (byte >> shift) & max
            }));
        }
        data
    };
    Ok(Mask {
        width,
        height,
        data,
    })
}

/// Borrowed 8-bit pixels for the encoders: 1 (grey / indices), 3 (RGB) or 4 (RGBA) channels.
#[derive(Debug, Clone, Copy)]
pub struct PixelsRef<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

impl<'a> From<&'a RgbImage> for PixelsRef<'a> {
    fn from(image: &'a RgbImage) -> Self {
        PixelsRef {
            width: image.width,
            height: image.height,
            channels: 3,
            data: &image.data,
        }
    }
}

impl<'a> From<&'a Mask> for PixelsRef<'a> {
    fn from(mask: &'a Mask) -> Self {
        PixelsRef {
            width: mask.width,
            height: mask.height,
            channels: 1,
            data: &mask.data,
        }
    }
}

impl PixelsRef<'_> {
    fn check(&self, path: &Path) -> Result<()> {
        let ok = matches!(self.channels, 1 | 3 | 4)
            && self.width > 0
            && self.height > 0
            && self.data.len() == self.width * self.height * self.channels;
        if ok {
            Ok(())
        } else {
            Err(DataError::Decode {
                path: path.to_path_buf(),
                reason: format!(
                    "cannot encode {} bytes as a {}x{} image of {} channels",
                    self.data.len(),
                    self.width,
                    self.height,
                    self.channels
                ),
            })
        }
    }
}

/// PNG bytes of `pixels` (grey, RGB or RGBA, 8-bit), written by the `png` crate:
/// deterministic for equal input.
pub fn encode_png_bytes(pixels: PixelsRef<'_>, path_for_errors: &Path) -> Result<Vec<u8>> {
    pixels.check(path_for_errors)?;
    let color = match pixels.channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    };
    png_bytes(pixels, color, None, path_for_errors)
}

fn png_bytes(
    pixels: PixelsRef<'_>,
    color: png::ColorType,
    palette: Option<Vec<u8>>,
    path: &Path,
) -> Result<Vec<u8>> {
    let enc_err = |e: png::EncodingError| DataError::Decode {
        path: path.to_path_buf(),
        reason: format!("PNG encoding: {e}"),
    };
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, pixels.width as u32, pixels.height as u32);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(palette) = palette {
            encoder.set_palette(palette);
        }
        let mut writer = encoder.write_header().map_err(enc_err)?;
        writer.write_image_data(pixels.data).map_err(enc_err)?;
        writer.finish().map_err(enc_err)?;
    }
    Ok(out)
}

/// Writes `pixels` as a PNG at `path`, atomically (a temporary name in the same folder, then a
/// rename).
pub fn encode_png(path: &Path, pixels: PixelsRef<'_>) -> Result<()> {
    let bytes = encode_png_bytes(pixels, path)?;
    write_atomic(path, &bytes)
}

/// Writes a mask as an 8-bit palette PNG (colour type 3) whose indices are the mask values and
/// whose palette is `palette` (at most 256 entries; every mask value must index it), atomically.
pub fn encode_png_palette(path: &Path, mask: &Mask, palette: &[[u8; 3]]) -> Result<()> {
    let pixels = PixelsRef::from(mask);
    pixels.check(path)?;
    if palette.is_empty() || palette.len() > 256 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "a PNG palette holds 1 to 256 colours, got {}",
                palette.len()
            ),
        });
    }
    if let Some(&v) = mask.data.iter().find(|&&v| usize::from(v) >= palette.len()) {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "mask value {v} has no entry in a palette of {}",
                palette.len()
            ),
        });
    }
    let flat = palette.iter().flatten().copied().collect();
    let bytes = png_bytes(pixels, png::ColorType::Indexed, Some(flat), path)?;
    write_atomic(path, &bytes)
}

/// JPEG bytes of an RGB image at `quality` (1–100), encoded by OpenCV (libjpeg); deterministic
/// for equal input.
#[cfg(feature = "opencv")]
pub fn encode_jpeg_bytes(image: &RgbImage, quality: u8, path_for_errors: &Path) -> Result<Vec<u8>> {
    let path = path_for_errors;
    PixelsRef::from(image).check(path)?;
    let mut bgr = image.data.clone();
    for px in bgr.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
    let flat = Mat::new_rows_cols_with_data(image.height as i32, (image.width * 3) as i32, &bgr)
        .map_err(cv_err(path))?;
    let mat = flat.reshape(3, image.height as i32).map_err(cv_err(path))?;
    let params = Vector::<i32>::from_slice(&[
        imgcodecs::IMWRITE_JPEG_QUALITY,
        i32::from(quality.clamp(1, 100)),
    ]);
    let mut out = Vector::<u8>::new();
    let ok = imgcodecs::imencode(".jpg", &mat, &mut out, &params).map_err(cv_err(path))?;
    if !ok {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "OpenCV refused to encode the JPEG".into(),
        });
    }
    Ok(out.to_vec())
}

/// Writes an RGB image as a JPEG at `path`, atomically (temporary name, then rename).
#[cfg(feature = "opencv")]
pub fn encode_jpeg(path: &Path, image: &RgbImage, quality: u8) -> Result<()> {
    let bytes = encode_jpeg_bytes(image, quality, path)?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced to disk, and a
/// rename (then the folder is synced), so a reader never sees a half-written file, even after a
/// crash or a power loss. The temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| crate::error::format_err(path, "not a file path"))?;
    let tmp: PathBuf = path.with_file_name(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })()
    .map_err(io_err(&tmp))
    .and_then(|()| std::fs::rename(&tmp, path).map_err(io_err(path)))
    .and_then(|()| {
        dnn_layers::archive::integrity::sync_parent(path)
            .map_err(|e| crate::error::format_err(path, e.to_string()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
