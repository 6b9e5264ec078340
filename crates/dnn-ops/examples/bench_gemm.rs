//! Benchmark: the `gemm` crate against `matrixmultiply` on the GEMM shapes of a U-Net's
//! convolutions (im2col forward, data gradient and filter gradient). Run it with
//! `cargo xtask bench gemm`; the results and the choice are recorded in docs/perf/gemm.md.

#[path = "common/timing.rs"]
mod timing;

/// `(label, m, k, n)` of `C[m×n] = A[m×k] · B[k×n]`, from U-Net base 16 at 128² (one image).
const SHAPES: [(&str, usize, usize, usize); 8] = [
    ("fwd  L0 3→16   128²", 16, 27, 16384),
    ("fwd  L0 16→16  128²", 16, 144, 16384),
    ("fwd  L1 32→32   64²", 32, 288, 4096),
    ("fwd  L2 64→64   32²", 64, 576, 1024),
    ("fwd  L4 256→256  8²", 256, 2304, 64),
    ("bwdW L1 32→32   64²", 32, 4096, 288),
    ("bwdD L2 64→64   32²", 576, 64, 1024),
    ("square 512", 512, 512, 512),
];

fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 1000.0 - 0.5
        })
        .collect()
}

fn run_gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: dense row-major matrices whose sizes were asserted above; `c` does not alias.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn run_mm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: dense row-major matrices whose sizes were asserted above; `c` does not alias.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn main() {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    // matrixmultiply reads MATMUL_NUM_THREADS once per process, so its thread count is whatever
    // the environment says at start (`cargo xtask bench gemm` runs this twice, with 1 and N).
    let mm_threads = std::env::var("MATMUL_NUM_THREADS").unwrap_or_else(|_| "1".to_string());
    println!(
        "GFLOP/s, best of 5; gemm with 1 and {threads} threads, matrixmultiply with MATMUL_NUM_THREADS={mm_threads}"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "shape (m,k,n)",
        "gemm 1t",
        format!("gemm {threads}t"),
        format!("mm {mm_threads}t")
    );
    for (label, m, k, n) in SHAPES {
        let (a, b) = (fill(m * k, 1), fill(k * n, 2));
        let mut c = vec![0.0f32; m * n];
        let flop = 2.0 * (m * k * n) as f64 / 1e9;
        let g1 = flop / timing::time_it(|| run_gemm(m, k, n, &a, &b, &mut c, 1));
        let gn = flop / timing::time_it(|| run_gemm(m, k, n, &a, &b, &mut c, threads));
        let mm = flop / timing::time_it(|| run_mm(m, k, n, &a, &b, &mut c));
        println!("{label:<22} {g1:>10.1} {gn:>10.1} {mm:>10.1}");
    }
}
