//! Vectorised sums for the CPU backend: f32 lanes within a block, f64 across blocks, in a fixed
//! order (results do not depend on the thread count or the schedule).

/// Values per block of a long sum; blocks are combined in f64.
pub(crate) const BLOCK: usize = 256;
/// f32 accumulators per block sum.
const LANES: usize = 16;

/// `Σ f(a[i], b[i], c[i])` in [`LANES`] f32 lanes (whole `[f32; LANES]` chunks, so the compiler
/// sees no bounds to check and vectorises), the lanes added in order at the end. The three
/// slices have one length; a caller with fewer operands passes one twice.
#[inline(always)]
pub(crate) fn lane_sum(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    let (cc, cr) = c.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for ((x, y), z) in ac.iter().zip(bc).zip(cc) {
        for lane in 0..LANES {
            acc[lane] += f(x[lane], y[lane], z[lane]);
        }
    }
    for (lane, ((&x, &y), &z)) in ar.iter().zip(br).zip(cr).enumerate() {
        acc[lane] += f(x, y, z);
    }
    acc.iter().sum()
}

/// `Σ values` in f64: blocks of [`BLOCK`] summed by [`lane_sum`], the blocks added in order.
pub(crate) fn sum_f64(values: &[f32]) -> f64 {
    values
        .chunks(BLOCK)
        .map(|b| f64::from(lane_sum(b, b, b, |x, _, _| x)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum_f64;

    /// Sums of lengths around the block and lane sizes agree with an f64 loop.
    #[test]
    fn sums_match_an_f64_loop() {
        for len in [0, 1, 15, 16, 17, 255, 256, 257, 1000, 4099] {
            let v: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 101) as f32 * 0.37 - 17.0)
                .collect();
            let want: f64 = v.iter().map(|&x| f64::from(x)).sum();
            let got = sum_f64(&v);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "len {len}: {got} vs {want}"
            );
        }
    }
}
