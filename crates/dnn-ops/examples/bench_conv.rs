//! Benchmark: the CPU backend's convolutions layer by layer, as U-Net base 16 at 128² with a batch
//! of 8 runs them (forward, data gradient, filter gradient), in ms and GFLOP/s, on the rayon
//! pool's threads (`RAYON_NUM_THREADS`). Run it with `cargo xtask bench conv`; results go to
//! docs/perf/bench-unet.md. `--base 32` scales every channel count (the base-32 U-Net).

#[path = "common/timing.rs"]
mod timing;

use dnn_ops::backend::ConvOps;
use dnn_ops::testing::random_tensor;
use dnn_ops::{Conv2dAttrs, ConvTranspose2dAttrs, CpuBackend};
use magma_tensor::SeededRng;

/// `(label, in channels, out channels, side, kernel)` of each convolution of the U-Net.
const LAYERS: [(&str, usize, usize, usize, usize); 19] = [
    ("enc0a", 3, 16, 128, 3),
    ("enc0b", 16, 16, 128, 3),
    ("enc1a", 16, 32, 64, 3),
    ("enc1b", 32, 32, 64, 3),
    ("enc2a", 32, 64, 32, 3),
    ("enc2b", 64, 64, 32, 3),
    ("enc3a", 64, 128, 16, 3),
    ("enc3b", 128, 128, 16, 3),
    ("mid-a", 128, 256, 8, 3),
    ("mid-b", 256, 256, 8, 3),
    ("dec3a", 256, 128, 16, 3),
    ("dec3b", 128, 128, 16, 3),
    ("dec2a", 128, 64, 32, 3),
    ("dec2b", 64, 64, 32, 3),
    ("dec1a", 64, 32, 64, 3),
    ("dec1b", 32, 32, 64, 3),
    ("dec0a", 32, 16, 128, 3),
    ("dec0b", 16, 16, 128, 3),
    ("head", 16, 3, 128, 1),
];

const BATCH: usize = 8;

fn main() {
    // `--filter-only`: the filter gradients of the 3×3 and 1×1 layers alone (forward and data
    // columns left empty), for sweeps of the filter-gradient kernels.
    let args: Vec<String> = std::env::args().collect();
    let filter_only = args.iter().any(|a| a == "--filter-only");
    let base = match args.iter().position(|a| a == "--base") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse::<usize>().ok()) {
            Some(b) if b > 0 && b % 16 == 0 => b,
            _ => {
                eprintln!("bench_conv: --base takes a positive multiple of 16");
                std::process::exit(2);
            }
        },
        None => 16,
    };
    // Channel counts of base 16 scaled by base / 16 (the input's 3 channels and the head's 3
    // classes stay).
    let scale = |ch: usize| if ch == 3 { 3 } else { ch * base / 16 };
    let be = CpuBackend::new();
    let mut rng = SeededRng::new(1);
    println!(
        "CPU convolutions of U-Net base {base}, 128², batch {BATCH}, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "| layer | c→o | side | forward ms | data grad ms | filter grad ms | GFLOP/s fwd / data / filter |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    let mut totals = [0.0f64; 3];
    for (name, c, o, side, k) in LAYERS {
        let (c, o) = (scale(c), scale(o));
        let attrs = Conv2dAttrs::new().with_padding([k / 2, k / 2]);
        let x = random_tensor(&[BATCH, c, side, side], &mut rng, 0.0);
        let w = random_tensor(&[o, c, k, k], &mut rng, 0.0);
        let dy = random_tensor(&[BATCH, o, side, side], &mut rng, 0.0);
        let (fwd, data) = if filter_only {
            (0.0, 0.0)
        } else {
            (
                timing::time_it(|| {
                    be.conv2d(&x, &w, None, &attrs).unwrap();
                }),
                timing::time_it(|| {
                    be.conv2d_backward_data(&dy, &w, [BATCH, c, side, side], &attrs)
                        .unwrap();
                }),
            )
        };
        let filter = timing::time_it(|| {
            be.conv2d_backward_filter(&x, &dy, [o, c, k, k], &attrs)
                .unwrap();
        });
        let flop = 2.0 * (BATCH * o * c * k * k * side * side) as f64;
        let g = |s: f64| flop / s / 1e9;
        println!(
            "| {name} | {c}→{o} | {side} | {:.2} | {:.2} | {:.2} | {:.0} / {:.0} / {:.0} |",
            fwd * 1e3,
            data * 1e3,
            filter * 1e3,
            g(fwd),
            g(data),
            g(filter)
        );
        for (t, v) in totals.iter_mut().zip([fwd, data, filter]) {
            *t += v;
        }
    }
    println!(
        "| total | | | {:.1} | {:.1} | {:.1} | |",
        totals[0] * 1e3,
        totals[1] * 1e3,
        totals[2] * 1e3
    );
    if filter_only {
        return;
    }
    println!("\nTransposed 2×2 stride-2 convolutions (the upsampling), same batch:");
    println!("| layer | c→o | side in | forward ms | data grad ms | filter grad ms |");
    println!("|---|---|---:|---:|---:|---:|");
    let attrs = ConvTranspose2dAttrs::new().with_stride([2, 2]);
    let mut totals = [0.0f64; 3];
    for (name, c, o, side) in [
        ("up3", 256, 128, 8),
        ("up2", 128, 64, 16),
        ("up1", 64, 32, 32),
        ("up0", 32, 16, 64),
    ] {
        let (c, o) = (scale(c), scale(o));
        let x = random_tensor(&[BATCH, c, side, side], &mut rng, 0.0);
        let w = random_tensor(&[c, o, 2, 2], &mut rng, 0.0);
        let dy = random_tensor(&[BATCH, o, 2 * side, 2 * side], &mut rng, 0.0);
        let fwd = timing::time_it(|| {
            be.conv_transpose2d(&x, &w, None, &attrs).unwrap();
        });
        let data = timing::time_it(|| {
            be.conv_transpose2d_backward_data(&dy, &w, &attrs).unwrap();
        });
        let filter = timing::time_it(|| {
            be.conv_transpose2d_backward_filter(&x, &dy, [c, o, 2, 2], &attrs)
                .unwrap();
        });
        println!(
            "| {name} | {c}→{o} | {side} | {:.2} | {:.2} | {:.2} |",
            fwd * 1e3,
            data * 1e3,
            filter * 1e3
        );
        for (t, v) in totals.iter_mut().zip([fwd, data, filter]) {
            *t += v;
        }
    }
    println!(
        "| total | | | {:.1} | {:.1} | {:.1} |",
        totals[0] * 1e3,
        totals[1] * 1e3,
        totals[2] * 1e3
    );
}
