//! Where a model runs: `cpu`, or `cuda` / `cuda:N` with the `cuda` feature.

use std::fmt;
use std::str::FromStr;

use dnn_ops::{Backend, CpuBackend, Precision};

use crate::error::{Result, UnetError};

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU backend (all cores unless limited).
    #[default]
    Cpu,
    /// The CUDA backend on GPU `ordinal`.
    Cuda { ordinal: usize },
}

impl FromStr for Device {
    type Err = UnetError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda { ordinal: 0 }),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|ordinal| Device::Cuda { ordinal })
                .ok_or_else(|| {
                    UnetError::Config(format!(
                        "unknown device {s:?}: use cpu, cuda or cuda:N (N = GPU number)"
                    ))
                }),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl Device {
    /// The backend for this device, its convolutions in `precision` (fp32, TF32 or bf16 mixed
    /// precision; see [`Precision`]). The CPU computes in fp32: TF32 is ignored there, bf16 is
    /// refused. `deterministic`: GPU convolutions only with deterministic algorithms, so that a
    /// run repeats bit for bit (otherwise the fastest, PyTorch's default; also
    /// `MAGMA_CUDA_DETERMINISTIC=1`); the CPU always is.
    pub fn backend(self, precision: Precision, deterministic: bool) -> Result<Box<dyn Backend>> {
        match self {
            Device::Cpu if precision == Precision::Bf16 => Err(UnetError::Config(
                "bf16 mixed precision needs a CUDA device (--device cuda); the CPU backend \
                 computes in fp32"
                    .into(),
            )),
            Device::Cpu => Ok(Box::new(CpuBackend::new())),
            Device::Cuda { ordinal } => boxed_cuda_backend(ordinal, precision, deterministic),
        }
    }
}

/// The CUDA backend of GPU `ordinal` in `precision`; `deterministic` asks for deterministic
/// convolution algorithms (as does `MAGMA_CUDA_DETERMINISTIC=1`), otherwise the fastest.
#[cfg(feature = "cuda")]
pub fn cuda_backend(
    ordinal: usize,
    precision: Precision,
    deterministic: bool,
) -> Result<dnn_ops::CudaBackend> {
    let backend = dnn_ops::CudaBackend::new(ordinal)?.with_precision(precision);
    let deterministic = deterministic || backend.deterministic();
    Ok(backend.with_deterministic(deterministic))
}

#[cfg(feature = "cuda")]
fn boxed_cuda_backend(
    ordinal: usize,
    precision: Precision,
    deterministic: bool,
) -> Result<Box<dyn Backend>> {
    Ok(Box::new(cuda_backend(ordinal, precision, deterministic)?))
}

#[cfg(not(feature = "cuda"))]
fn boxed_cuda_backend(
    ordinal: usize,
    _precision: Precision,
    _deterministic: bool,
) -> Result<Box<dyn Backend>> {
    Err(UnetError::Config(format!(
        "device cuda:{ordinal} asked for, but this binary was built without CUDA support: \
         build with `--features cuda` (see docs/cuda.md, `cargo xtask gpu-bundle`)"
    )))
}

#[cfg(test)]
mod tests {
    use super::Device;
    use dnn_ops::Precision;

    #[test]
    fn devices_parse_and_print() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!(
            "cuda".parse::<Device>().unwrap(),
            Device::Cuda { ordinal: 0 }
        );
        assert_eq!(
            "cuda:3".parse::<Device>().unwrap(),
            Device::Cuda { ordinal: 3 }
        );
        assert_eq!(Device::Cuda { ordinal: 1 }.to_string(), "cuda:1");
        let err = "tpu".parse::<Device>().unwrap_err().to_string();
        assert!(err.contains("cpu, cuda or cuda:N"), "{err}");
        assert!("cuda:x".parse::<Device>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = Device::Cuda { ordinal: 0 }
            .backend(Precision::Fp32, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn bf16_on_the_cpu_is_refused_and_tf32_ignored() {
        let err = Device::Cpu
            .backend(Precision::Bf16, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bf16") && err.contains("--device cuda"),
            "{err}"
        );
        assert!(Device::Cpu.backend(Precision::Tf32, true).is_ok());
    }
}
