//! Runtime CPU-feature dispatch for the plain-Rust loops of the CPU kernels.
//!
//! The crate is built for baseline x86-64, so the compiler vectorises ordinary loops with SSE2
//! (4 lanes). [`vectorized`] runs a closure inlined into a function compiled for AVX-512 when
//! the CPU has it, so the same loops are vectorised 16 wide (and `select`-style branch-free code
//! gets masked moves); elsewhere it runs the closure as built. The hand-written kernels
//! (`direct_conv`, `winograd_conv`, `winograd4_conv`) use intrinsics instead.

/// Whether this CPU has the AVX-512 features [`vectorized`] compiles for (checked once).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()`, compiled for AVX-512 when the CPU has it: `f` and what it calls with
/// `#[inline(always)]` are inlined into a function built for those features.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: `run_avx512` is compiled for AVX-512F/BW/DQ/VL, AVX2 and FMA, and
        // `has_avx512` checked at run time that this CPU has every one of them.
        return unsafe { run_avx512(f) };
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::vectorized;

    /// The dispatched closure computes what it computes undispatched.
    #[test]
    fn vectorized_runs_the_closure() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let plain: f32 = v.iter().map(|x| x * x).sum();
        let dispatched = vectorized(|| v.iter().map(|x| x * x).sum::<f32>());
        assert!(
            (plain - dispatched).abs() <= 1e-3 * plain,
            "{plain} vs {dispatched}"
        );
    }
}
