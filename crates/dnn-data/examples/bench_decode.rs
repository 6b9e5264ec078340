//! Decode + resize throughput on one core, Oxford-IIIT Pet pairs to 128×128: the image decoded
//! by content (JPEG reduced at decode time where the target is at most half its size), resized
//! (area or bilinear), the trimap decoded and resized nearest. Results in docs/perf/decode.md;
//! `peers/python/bench_decode_pil.py` does the same with PIL.
//!
//! `cargo run --release -p dnn-data --example bench_decode -- [PET_ROOT] [ROUNDS]`
//! (default root `../shared/data/oxford-pet-sample`, 5 rounds; run under `taskset -c 0`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use dnn_data::image_io::{decode_mask, decode_rgb, decode_rgb_resized, read_bytes};
use dnn_data::{Interpolation, resize_mask_nearest, resize_rgb};

const TARGET: [usize; 2] = [128, 128];

/// `(image, trimap)` paths of every sample named in `annotations/list.txt`.
fn pairs(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let list = std::fs::read_to_string(root.join("annotations/list.txt"))
        .unwrap_or_else(|e| panic!("{}: {e}", root.join("annotations/list.txt").display()));
    list.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap_or_default();
            (
                root.join("images").join(format!("{name}.jpg")),
                root.join("annotations/trimaps").join(format!("{name}.png")),
            )
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Variant {
    label: &'static str,
    reduced: bool,
    interpolation: Interpolation,
}

/// One pass over all pairs; returns a checksum so nothing is optimised away.
fn pass(pairs: &[(PathBuf, PathBuf)], v: Variant) -> u64 {
    let mut sum = 0u64;
    for (image_path, mask_path) in pairs {
        let bytes = read_bytes(image_path).expect("read image");
        let image = if v.reduced {
            decode_rgb_resized(&bytes, image_path, TARGET, v.interpolation)
        } else {
            decode_rgb(&bytes, image_path)
                .and_then(|full| resize_rgb(&full, TARGET, v.interpolation))
        }
        .expect("decode and resize image");
        let mask_bytes = read_bytes(mask_path).expect("read trimap");
        let mask = decode_mask(&mask_bytes, mask_path).expect("decode trimap");
        let mask = resize_mask_nearest(&mask, TARGET);
        sum +=
            u64::from(image.data[image.data.len() / 2]) + u64::from(mask.data[mask.data.len() / 2]);
    }
    sum
}

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/oxford-pet-sample"
        ))
    });
    let rounds: usize = args
        .next()
        .map_or(5, |r| r.parse().expect("ROUNDS is a number"));
    // One core: OpenCV's own thread pool off.
    opencv::core::set_num_threads(1).expect("OpenCV set_num_threads");
    let pairs = pairs(&root);
    assert!(
        !pairs.is_empty(),
        "no pairs listed under {}",
        root.display()
    );
    println!(
        "# bench_decode: {} pairs from {}, target 128x128, 1 thread, best of {rounds} rounds",
        pairs.len(),
        root.display()
    );
    let variants = [
        Variant {
            label: "reduced decode + area",
            reduced: true,
            interpolation: Interpolation::Area,
        },
        Variant {
            label: "reduced decode + bilinear",
            reduced: true,
            interpolation: Interpolation::Bilinear,
        },
        Variant {
            label: "full decode + area",
            reduced: false,
            interpolation: Interpolation::Area,
        },
    ];
    for v in variants {
        pass(&pairs, v); // warm the page cache and the allocator
        let mut best = f64::INFINITY;
        for _ in 0..rounds {
            let start = Instant::now();
            std::hint::black_box(pass(&pairs, v));
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "rust  {:<28} {:8.1} pairs/s  {:6.3} ms/pair",
            v.label,
            pairs.len() as f64 / best,
            best * 1e3 / pairs.len() as f64
        );
    }
}
