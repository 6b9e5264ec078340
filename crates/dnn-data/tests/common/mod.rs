//! Helpers shared by the integration tests: deterministic bytes and writers of small IDX and
//! CIFAR files.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// `n` deterministic pseudo-random bytes (an LCG seeded by `seed`), covering 0 and 255 too.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out: Vec<u8> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    if n >= 2 {
        out[0] = 0;
        out[n - 1] = 255;
    }
    out
}

/// The header of an unsigned-byte IDX file with `dims`.
pub fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// A complete IDX image file of `count` images of `rows x cols`.
pub fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = idx_header(0x0803, &[count, rows, cols]);
    out.extend_from_slice(pixels);
    out
}

/// A complete IDX label file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = idx_header(0x0801, &[labels.len() as u32]);
    out.extend_from_slice(labels);
    out
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Writes `data` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Byte `b` as the loaders scale it.
pub fn scaled(b: u8) -> f32 {
    f32::from(b) / 255.0
}

/// Label histogram over `classes`.
pub fn histogram(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut h = vec![0; classes];
    for &l in labels {
        h[l as usize] += 1;
    }
    h
}
