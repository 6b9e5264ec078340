//! Where a model runs: `cpu`, or `cuda` / `cuda:N` with the `cuda` feature.

use std::fmt;
use std::str::FromStr;

use dnn_ops::{Backend, CpuBackend};

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
    /// The backend for this device. `tf32` lets CUDA convolutions use TF32 tensor cores (off by
    /// default: plain fp32); it is ignored on the CPU.
    pub fn backend(self, tf32: bool) -> Result<Box<dyn Backend>> {
        match self {
            Device::Cpu => Ok(Box::new(CpuBackend::new())),
            Device::Cuda { ordinal } => cuda_backend(ordinal, tf32),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_backend(ordinal: usize, tf32: bool) -> Result<Box<dyn Backend>> {
    Ok(Box::new(
        dnn_ops::CudaBackend::new(ordinal)?.with_tf32(tf32),
    ))
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend(ordinal: usize, _tf32: bool) -> Result<Box<dyn Backend>> {
    Err(UnetError::Config(format!(
        "device cuda:{ordinal} asked for, but this binary was built without CUDA support: \
         build with `--features cuda` (see docs/cuda.md, `cargo xtask gpu-bundle`)"
    )))
}

#[cfg(test)]
mod tests {
    use super::Device;

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
            .backend(false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
