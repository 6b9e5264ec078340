//! Timing shared by the benchmark examples (`bench_gemm`, `bench_conv`).

use std::time::Instant;

/// Best of 5 rounds of at least 50 ms each, seconds per call (one untimed call first).
pub fn time_it(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let mut reps = 0;
        while t.elapsed().as_secs_f64() < 0.05 {
            f();
            reps += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}
