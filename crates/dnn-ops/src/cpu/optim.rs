//! Adam/AdamW and SGD parameter updates on the CPU (PyTorch's update rules).

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::vectorized::vectorized;
use crate::attrs::{AdagradStep, AdamStep, RmsPropStep, SgdStep};
use crate::backend::OptimizerOps;
use crate::checks::{adam_scalars, update_operands};
use crate::error::Result;

impl OptimizerOps for CpuBackend {
    fn adam_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        s: &AdamStep,
    ) -> Result<()> {
        update_operands("adam_step", param, &[grad, m, v])?;
        let (step_size, bc2_sqrt) = adam_scalars(s)?;
        let grad = grad.contiguous()?;
        let g = grad.host_data()?;
        let p = param.host_data_mut()?;
        let md = m.host_data_mut()?;
        let vd = v.host_data_mut()?;
        // Chunks of 4096 per task, each loop compiled for AVX-512 where the CPU has it.
        const CHUNK: usize = 4096;
        p.par_chunks_mut(CHUNK)
            .zip(md.par_chunks_mut(CHUNK).zip(vd.par_chunks_mut(CHUNK)))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((p, (m, v)), g)| {
                vectorized(|| {
                    let values = p.iter_mut().zip(m.iter_mut().zip(v.iter_mut())).zip(g);
                    for ((p, (m, v)), &g) in values {
                        let mut g = g;
                        if s.decoupled_weight_decay {
                            *p *= 1.0 - s.lr * s.weight_decay;
                        } else if s.weight_decay != 0.0 {
                            g += s.weight_decay * *p;
                        }
                        *m = s.beta1 * *m + (1.0 - s.beta1) * g;
                        *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
                        *p -= step_size * *m / (v.sqrt() / bc2_sqrt + s.eps);
                    }
                })
            });
        Ok(())
    }

    fn sgd_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        velocity: &mut Tensor,
        s: &SgdStep,
    ) -> Result<()> {
        update_operands("sgd_step", param, &[grad, velocity])?;
        let grad = grad.contiguous()?;
        let g = grad.host_data()?;
        let p = param.host_data_mut()?;
        let buf = velocity.host_data_mut()?;
        p.par_iter_mut()
            .with_min_len(4096)
            .zip(buf.par_iter_mut())
            .zip(g.par_iter())
            .for_each(|((p, b), &g)| {
                let mut d = g + s.weight_decay * *p;
                if s.momentum != 0.0 {
                    *b = s.momentum * *b + d;
                    d = if s.nesterov { d + s.momentum * *b } else { *b };
                }
                *p -= s.lr * d;
            });
        Ok(())
    }

    fn adagrad_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        sum_sq: &mut Tensor,
        s: &AdagradStep,
    ) -> Result<()> {
        update_operands("adagrad_step", param, &[grad, sum_sq])?;
        let grad = grad.contiguous()?;
        let g = grad.host_data()?;
        let p = param.host_data_mut()?;
        let acc = sum_sq.host_data_mut()?;
        p.par_iter_mut()
            .with_min_len(4096)
            .zip(acc.par_iter_mut())
            .zip(g.par_iter())
            .for_each(|((p, a), &g)| {
                let g = g + s.weight_decay * *p;
                *a += g * g;
                *p -= s.lr * g / (a.sqrt() + s.eps);
            });
        Ok(())
    }

    fn rmsprop_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        square_avg: &mut Tensor,
        momentum_buf: &mut Tensor,
        s: &RmsPropStep,
    ) -> Result<()> {
        update_operands("rmsprop_step", param, &[grad, square_avg, momentum_buf])?;
        let grad = grad.contiguous()?;
        let g = grad.host_data()?;
        let p = param.host_data_mut()?;
        let sq = square_avg.host_data_mut()?;
        let buf = momentum_buf.host_data_mut()?;
        p.par_iter_mut()
            .with_min_len(4096)
            .zip(sq.par_iter_mut().zip(buf.par_iter_mut()))
            .zip(g.par_iter())
            .for_each(|((p, (sq, b)), &g)| {
                let g = g + s.weight_decay * *p;
                *sq = s.alpha * *sq + (1.0 - s.alpha) * g * g;
                let step = g / (sq.sqrt() + s.eps);
                if s.momentum > 0.0 {
                    *b = s.momentum * *b + step;
                    *p -= s.lr * *b;
                } else {
                    *p -= s.lr * step;
                }
            });
        Ok(())
    }
}
