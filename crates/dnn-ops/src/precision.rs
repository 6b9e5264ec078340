//! The arithmetic a backend's convolutions run in.
//!
//! Tensors stay fp32 everywhere: parameters (the master weights), optimizer state, batch-norm
//! statistics and every op outside the convolutions. What changes is the math of the
//! convolutions, where nearly all the FLOPs are: plain fp32, TF32 tensor cores (fp32 data,
//! 10-bit mantissa products, fp32 accumulation), or bf16 mixed precision (the operands rounded to
//! bf16 in NHWC layout, fp32 accumulation, the result back in fp32), like PyTorch's
//! `torch.autocast(dtype=torch.bfloat16)` for convolutions. The CPU backend always computes in
//! fp32.

use std::fmt;
use std::str::FromStr;

/// Whether `MAGMA_CUDA_DETERMINISTIC` asks for deterministic convolution algorithms (`1` or
/// `true`; a GPU backend otherwise takes the fastest, as PyTorch by default).
pub fn deterministic_from_env() -> bool {
    matches!(
        std::env::var("MAGMA_CUDA_DETERMINISTIC").as_deref(),
        Ok("1" | "true")
    )
}

/// The math of the convolutions (and matrix products) of a GPU backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// IEEE fp32 throughout (no tensor cores).
    #[default]
    Fp32,
    /// fp32 data, TF32 tensor-core products (≈1e-3 relative error).
    Tf32,
    /// bf16 operands in NHWC, fp32 accumulation and fp32 results (≈1e-2 relative error).
    Bf16,
}

impl Precision {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown precision name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?} (expected fp32, tf32 or bf16)")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(UnknownPrecision(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        let err = "fp16".parse::<Precision>().unwrap_err();
        assert!(err.to_string().contains("\"fp16\""), "{err}");
        assert_eq!(Precision::default(), Precision::Fp32);
    }
}
