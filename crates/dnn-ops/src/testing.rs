//! Test support shared by every crate that defines differentiable things: a finite-difference
//! gradient checker that works through the autodiff [`Graph`] on any backend, relative-error
//! comparison of tensors on any device, and the [`test_device!`](crate::test_device) macro that
//! runs one test body on the CPU and on CUDA.

use magma_tensor::{SeededRng, Tensor};

use crate::autodiff::{Graph, Var};
use crate::backend::Backend;
use crate::error::{OpError, Result};

/// Settings of a finite-difference check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Step of the central difference.
    pub eps: f32,
    /// Allowed `|analytic − numeric| ≤ tol · (1 + |numeric|)`.
    pub tol: f64,
    /// At most this many elements of each input are probed (chosen at random beyond it).
    pub max_probes: usize,
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        Self {
            eps: 1e-2,
            tol: 5e-3,
            max_probes: 48,
            seed: 0x5EED,
        }
    }
}

/// A tensor of normal values with no element closer than `min_abs` to zero (kinks of ReLU,
/// ties of max pooling and accidental zeros are kept away).
pub fn random_tensor(shape: &[usize], rng: &mut SeededRng, min_abs: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let v = rng.normal(0.0, 1.0);
            if v.abs() < min_abs {
                v.signum() * min_abs + v
            } else {
                v
            }
        })
        .collect();
    Tensor::from_vec(data, shape).expect("length matches shape")
}

/// Distinct values spaced at least `gap` apart, in random order (for max pooling).
pub fn distinct_tensor(shape: &[usize], rng: &mut SeededRng, gap: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let data = order
        .iter()
        .map(|&i| (i as f32 - n as f32 / 2.0) * gap)
        .collect();
    Tensor::from_vec(data, shape).expect("length matches shape")
}

impl GradCheck {
    /// Checks the gradients of `f` with respect to every input against central differences of
    /// `Σ f(inputs) · r` for a fixed random `r`. Returns the largest error seen.
    pub fn run(
        &self,
        backend: &dyn Backend,
        inputs: &[Tensor],
        f: impl Fn(&Graph, &[Var]) -> Result<Var>,
    ) -> Result<f64> {
        let mut rng = SeededRng::new(self.seed);
        let graph = Graph::new(backend);
        let vars: Vec<Var> = inputs.iter().map(|t| graph.leaf(t.clone())).collect();
        let out = f(&graph, &vars)?;
        let out_shape = graph.shape(out);
        let r = random_tensor(&out_shape, &mut rng, 0.1);
        let grads = graph.backward_with(out, r.clone())?;
        let rv = r.to_vec()?;

        let objective = |values: &[Tensor]| -> Result<f64> {
            let g = Graph::new(backend);
            let vs: Vec<Var> = values.iter().map(|t| g.leaf(t.clone())).collect();
            let y = g.value(f(&g, &vs)?).to_vec()?;
            Ok(y.iter().zip(&rv).map(|(a, b)| *a as f64 * *b as f64).sum())
        };

        let mut worst = 0.0f64;
        for (i, input) in inputs.iter().enumerate() {
            let analytic = grads
                .wrt(vars[i])
                .ok_or_else(|| OpError::Graph(format!("input {i} received no gradient")))?
                .to_vec()?;
            let n = input.numel();
            let probes: Vec<usize> = if n <= self.max_probes {
                (0..n).collect()
            } else {
                (0..self.max_probes).map(|_| rng.below(n)).collect()
            };
            let base = input.to_vec()?;
            for &k in &probes {
                let mut values: Vec<Tensor> = inputs.to_vec();
                let mut plus = base.clone();
                plus[k] += self.eps;
                values[i] = Tensor::from_vec(plus, input.shape())?;
                let f_plus = objective(&values)?;
                let mut minus = base.clone();
                minus[k] -= self.eps;
                values[i] = Tensor::from_vec(minus, input.shape())?;
                let f_minus = objective(&values)?;
                let numeric = (f_plus - f_minus) / (2.0 * self.eps as f64);
                let err = (analytic[k] as f64 - numeric).abs() / (1.0 + numeric.abs());
                worst = worst.max(err);
                if err > self.tol {
                    return Err(OpError::Graph(format!(
                        "gradient of input {i} (shape {:?}) at element {k}: analytic {} vs numeric {numeric} (error {err:.2e})",
                        input.shape(),
                        analytic[k]
                    )));
                }
            }
        }
        Ok(worst)
    }
}

/// Relative distance `‖a − b‖₂ / max(‖b‖₂, 1e-6)` of two same-shaped tensors (on any device),
/// with `b` the reference; NaN anywhere gives infinity.
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.shape() != b.shape() {
        return Err(OpError::Shape {
            op: "relative_error",
            what: "first tensor",
            got: a.shape().to_vec(),
            expected: format!("{:?}", b.shape()),
        });
    }
    let (a, b) = (a.to_vec()?, b.to_vec()?);
    let mut diff = 0.0f64;
    let mut norm = 0.0f64;
    for (&x, &y) in a.iter().zip(&b) {
        if !x.is_finite() || !y.is_finite() {
            return Ok(f64::INFINITY);
        }
        diff += (x as f64 - y as f64).powi(2);
        norm += (y as f64).powi(2);
    }
    Ok(diff.sqrt() / norm.sqrt().max(1e-6))
}

/// Panics with the op's name unless `got` is within `tol` relative error of `reference`.
#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, reference: &Tensor, tol: f64) {
    let err = relative_error(got, reference).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} exceeds {tol:.0e} (shape {:?})",
        reference.shape()
    );
}

/// Defines one test body that runs on every backend: `cpu` always, and with the `cuda` feature
/// `cuda` on GPU 0 (skipped, with a message, when no GPU is present).
///
/// ```ignore
/// dnn_ops::test_device!(fn relu_is_max_zero(be) {
///     let y = be.activation(&x, Activation::Relu).unwrap();
///     ...
/// });
/// ```
/// expands to a module `relu_is_max_zero` with tests `cpu` and `cuda`; `be` is a
/// `&dyn dnn_ops::Backend`.
#[macro_export]
macro_rules! test_device {
    ($(#[$meta:meta])* fn $name:ident($be:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(dead_code)]
            fn body($be: &dyn $crate::Backend) $body

            $(#[$meta])*
            #[test]
            fn cpu() {
                body(&$crate::cpu::CpuBackend::new());
            }

            $(#[$meta])*
            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                match $crate::cuda::test_backend() {
                    Some(be) => body(be),
                    None => eprintln!("skipped: no CUDA device for {}", module_path!()),
                }
            }
        }
    };
}
