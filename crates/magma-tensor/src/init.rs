//! Parameter initialisers, seeded and reproducible.

use crate::layout::numel;
use crate::{Result, SeededRng, Tensor, TensorError};

/// How to fill a new parameter tensor.
///
/// Fan-in and fan-out follow PyTorch: for a shape `[d0, d1, k...]`, `fan_in = d1 · Πk` and
/// `fan_out = d0 · Πk`; He/Kaiming uses the ReLU gain √2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Initializer {
    Zeros,
    Ones,
    Constant(f32),
    Uniform {
        low: f32,
        high: f32,
    },
    Normal {
        mean: f32,
        std: f32,
    },
    GlorotUniform,
    GlorotNormal,
    HeUniform,
    HeNormal,
    /// The identity matrix for rank 2, the Dirac delta (centre tap per channel) for rank 4.
    Identity,
}

/// `(fan_in, fan_out)` of a parameter shape, as PyTorch computes them.
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        [] => Err(TensorError::BadInitializer {
            init: "fan computation",
            reason: "a scalar has no fan-in".to_string(),
        }),
        [n] => Ok((*n, *n)),
        [out, inp, rest @ ..] => {
            let receptive: usize = rest.iter().product();
            Ok((inp * receptive, out * receptive))
        }
    }
}

impl Initializer {
    /// A new tensor of `shape` filled by this initialiser.
    pub fn init(&self, shape: &[usize], rng: &mut SeededRng) -> Result<Tensor> {
        let n = numel(shape);
        let data: Vec<f32> = match *self {
            Initializer::Zeros => vec![0.0; n],
            Initializer::Ones => vec![1.0; n],
            Initializer::Constant(v) => vec![v; n],
            Initializer::Uniform { low, high } => {
                if low.is_nan() || high.is_nan() || low >= high {
                    return Err(TensorError::BadInitializer {
                        init: "uniform",
                        reason: format!("needs low < high, got [{low}, {high})"),
                    });
                }
                (0..n).map(|_| rng.uniform(low, high)).collect()
            }
            Initializer::Normal { mean, std } => {
                if std.is_nan() || std < 0.0 {
                    return Err(TensorError::BadInitializer {
                        init: "normal",
                        reason: format!("needs std ≥ 0, got {std}"),
                    });
                }
                (0..n).map(|_| rng.normal(mean, std)).collect()
            }
            Initializer::GlorotUniform => {
                let (fi, fo) = fans(shape)?;
                let bound = (6.0 / (fi + fo) as f32).sqrt();
                (0..n).map(|_| rng.uniform(-bound, bound)).collect()
            }
            Initializer::GlorotNormal => {
                let (fi, fo) = fans(shape)?;
                let std = (2.0 / (fi + fo) as f32).sqrt();
                (0..n).map(|_| rng.normal(0.0, std)).collect()
            }
            Initializer::HeUniform => {
                let (fi, _) = fans(shape)?;
                let bound = (6.0 / fi as f32).sqrt();
                (0..n).map(|_| rng.uniform(-bound, bound)).collect()
            }
            Initializer::HeNormal => {
                let (fi, _) = fans(shape)?;
                let std = (2.0 / fi as f32).sqrt();
                (0..n).map(|_| rng.normal(0.0, std)).collect()
            }
            Initializer::Identity => identity(shape)?,
        };
        Tensor::from_vec(data, shape)
    }
}

fn identity(shape: &[usize]) -> Result<Vec<f32>> {
    let mut data = vec![0.0; numel(shape)];
    match *shape {
        [rows, cols] => {
            for i in 0..rows.min(cols) {
                data[i * cols + i] = 1.0;
            }
        }
        [out, inp, kh, kw] => {
            let (ch, cw) = (kh / 2, kw / 2);
            for o in 0..out.min(inp) {
                data[((o * inp + o) * kh + ch) * kw + cw] = 1.0;
            }
        }
        _ => {
            return Err(TensorError::BadInitializer {
                init: "identity",
                reason: format!("needs a rank-2 or rank-4 shape, got {shape:?}"),
            });
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(t: &Tensor) -> (f32, f32) {
        let v = t.to_vec().unwrap();
        let n = v.len() as f32;
        let mean = v.iter().sum::<f32>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn he_normal_std_matches_fan_in() {
        let mut rng = SeededRng::new(0);
        let t = Initializer::HeNormal
            .init(&[64, 32, 3, 3], &mut rng)
            .unwrap();
        let (mean, std) = moments(&t);
        let want = (2.0f32 / (32.0 * 9.0)).sqrt();
        assert!(mean.abs() < 0.01);
        assert!((std - want).abs() / want < 0.03, "std {std} want {want}");
    }

    #[test]
    fn glorot_uniform_stays_within_bound_and_fills_it() {
        let mut rng = SeededRng::new(0);
        let t = Initializer::GlorotUniform
            .init(&[100, 50], &mut rng)
            .unwrap();
        let bound = (6.0f32 / 150.0).sqrt();
        let v = t.to_vec().unwrap();
        assert!(v.iter().all(|x| x.abs() <= bound));
        assert!(v.iter().any(|x| x.abs() > 0.9 * bound));
    }

    #[test]
    fn same_seed_reproduces_and_identity_is_dirac() {
        let a = Initializer::Normal {
            mean: 1.0,
            std: 2.0,
        }
        .init(&[5, 7], &mut SeededRng::new(9))
        .unwrap();
        let b = Initializer::Normal {
            mean: 1.0,
            std: 2.0,
        }
        .init(&[5, 7], &mut SeededRng::new(9))
        .unwrap();
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
        let id = Initializer::Identity
            .init(&[2, 2, 3, 3], &mut SeededRng::new(0))
            .unwrap();
        assert_eq!(id.get(&[1, 1, 1, 1]).unwrap(), 1.0);
        assert_eq!(id.get(&[1, 0, 1, 1]).unwrap(), 0.0);
        assert_eq!(id.to_vec().unwrap().iter().sum::<f32>(), 2.0);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        let mut rng = SeededRng::new(0);
        assert!(matches!(
            Initializer::Uniform {
                low: 1.0,
                high: 0.0
            }
            .init(&[3], &mut rng),
            Err(TensorError::BadInitializer { .. })
        ));
        assert!(Initializer::Identity.init(&[3], &mut rng).is_err());
        assert!(Initializer::HeNormal.init(&[], &mut rng).is_err());
    }
}
