//! Max and average pooling on the CPU, parallel over `(n, c)` planes.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::zeroed;
use crate::attrs::Pool2dAttrs;
use crate::backend::PoolOps;
use crate::error::{Result, shape_err};

/// The clipped input window `[start, end)` of output position `out` along one axis, and the
/// window length PyTorch divides by when padding counts.
#[inline]
fn window(out: usize, k: usize, stride: usize, pad: usize, size: usize) -> (usize, usize, usize) {
    let start = (out * stride) as isize - pad as isize;
    let end_padded = (start + k as isize).min((size + pad) as isize);
    let padded_len = (end_padded - start) as usize;
    let start = start.max(0) as usize;
    let end = (end_padded.max(0) as usize).min(size);
    (start, end.max(start), padded_len)
}

struct PoolGeometry {
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

fn geometry(x_shape: [usize; 4], attrs: &Pool2dAttrs) -> Result<PoolGeometry> {
    let [n, c, h, w] = x_shape;
    let [ho, wo] = attrs.output_size([h, w])?;
    Ok(PoolGeometry {
        planes: n * c,
        h,
        w,
        ho,
        wo,
    })
}

/// Index (within the plane) of the first maximum of the window of output `(oh, ow)`.
fn argmax(plane: &[f32], g: &PoolGeometry, a: &Pool2dAttrs, oh: usize, ow: usize) -> usize {
    let (h0, h1, _) = window(oh, a.kernel[0], a.stride[0], a.padding[0], g.h);
    let (w0, w1, _) = window(ow, a.kernel[1], a.stride[1], a.padding[1], g.w);
    let mut best = h0 * g.w + w0;
    let mut best_v = f32::NEG_INFINITY;
    for ih in h0..h1 {
        for iw in w0..w1 {
            let v = plane[ih * g.w + iw];
            if v > best_v || v.is_nan() {
                best_v = v;
                best = ih * g.w + iw;
                if v.is_nan() {
                    return best;
                }
            }
        }
    }
    best
}

/// Index into `plane` of the first maximum of the 2×2 window at output `(oh, ow)` (stride 2, no
/// padding), with [`argmax`]'s rule (the first NaN wins): the U-Net's pooling without the
/// general window arithmetic.
#[inline]
fn argmax_2x2(plane: &[f32], w: usize, oh: usize, ow: usize) -> usize {
    let top = 2 * oh * w + 2 * ow;
    let mut best = top;
    let mut best_v = plane[top];
    if best_v.is_nan() {
        return best;
    }
    for i in [top + 1, top + w, top + w + 1] {
        let v = plane[i];
        if v.is_nan() {
            return i;
        }
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best
}

/// Whether [`argmax_2x2`] applies.
fn is_2x2(a: &Pool2dAttrs) -> bool {
    a.kernel == [2, 2] && a.stride == [2, 2] && a.padding == [0, 0]
}

/// The input rows and columns averaged into output `(oh, ow)`, and the divisor PyTorch uses
/// (the padded window size, or the clipped one without `count_include_pad`).
fn avg_window(
    g: &PoolGeometry,
    a: &Pool2dAttrs,
    oh: usize,
    ow: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>, f32) {
    let (h0, h1, hp) = window(oh, a.kernel[0], a.stride[0], a.padding[0], g.h);
    let (w0, w1, wp) = window(ow, a.kernel[1], a.stride[1], a.padding[1], g.w);
    let div = if a.count_include_pad {
        hp * wp
    } else {
        (h1 - h0) * (w1 - w0)
    };
    (h0..h1, w0..w1, div.max(1) as f32)
}

/// The shape and attribute checks of pooling, shared with the CUDA backend so that both refuse
/// the same inputs with the same typed errors.
impl CpuBackend {
    /// The output shape of pooling `x` (`op` names the operation in errors).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn check_pool2d(
        x: &Tensor,
        attrs: &Pool2dAttrs,
        op: &'static str,
    ) -> Result<[usize; 4]> {
        let shape = x.shape4(op)?;
        let g = geometry(shape, attrs)?;
        Ok([shape[0], shape[1], g.ho, g.wo])
    }

    /// The output shape of pooling an input of `x_shape`, checking that `dy` has it.
    pub(crate) fn check_pool2d_backward(
        x_shape: [usize; 4],
        dy: &Tensor,
        attrs: &Pool2dAttrs,
        op: &'static str,
    ) -> Result<[usize; 4]> {
        let g = geometry(x_shape, attrs)?;
        let want = [x_shape[0], x_shape[1], g.ho, g.wo];
        if dy.shape() != want {
            return shape_err(op, "output gradient", dy.shape(), format!("{want:?}"));
        }
        Ok(want)
    }
}

impl PoolOps for CpuBackend {
    fn max_pool2d(&self, x: &Tensor, attrs: &Pool2dAttrs) -> Result<Tensor> {
        let shape = x.shape4("max_pool2d")?;
        let g = geometry(shape, attrs)?;
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let mut y = zeroed(g.planes * g.ho * g.wo);
        if !y.is_empty() {
            y.par_chunks_mut(g.ho * g.wo)
                .enumerate()
                .for_each(|(p, out)| {
                    let plane = &xd[p * g.h * g.w..(p + 1) * g.h * g.w];
                    for oh in 0..g.ho {
                        let row = &mut out[oh * g.wo..(oh + 1) * g.wo];
                        if is_2x2(attrs) {
                            for (ow, o) in row.iter_mut().enumerate() {
                                *o = plane[argmax_2x2(plane, g.w, oh, ow)];
                            }
                        } else {
                            for (ow, o) in row.iter_mut().enumerate() {
                                *o = plane[argmax(plane, &g, attrs, oh, ow)];
                            }
                        }
                    }
                });
        }
        Ok(Tensor::from_vec(y, &[shape[0], shape[1], g.ho, g.wo])?)
    }

    fn max_pool2d_backward(
        &self,
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor> {
        let shape = x.shape4("max_pool2d_backward")?;
        Self::check_pool2d_backward(shape, dy, attrs, "max_pool2d_backward")?;
        let g = geometry(shape, attrs)?;
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let (xd, dyd) = (x.host_data()?, dy.host_data()?);
        let mut dx = zeroed(x.numel());
        if g.ho * g.wo > 0 {
            dx.par_chunks_mut(g.h * g.w)
                .enumerate()
                .for_each(|(p, out)| {
                    let plane = &xd[p * g.h * g.w..(p + 1) * g.h * g.w];
                    let grad = &dyd[p * g.ho * g.wo..(p + 1) * g.ho * g.wo];
                    for oh in 0..g.ho {
                        let grad_row = &grad[oh * g.wo..(oh + 1) * g.wo];
                        if is_2x2(attrs) {
                            // Windows do not overlap: each input receives at most one value.
                            for (ow, &d) in grad_row.iter().enumerate() {
                                out[argmax_2x2(plane, g.w, oh, ow)] = d;
                            }
                        } else {
                            for (ow, &d) in grad_row.iter().enumerate() {
                                out[argmax(plane, &g, attrs, oh, ow)] += d;
                            }
                        }
                    }
                });
        }
        Ok(Tensor::from_vec(dx, &shape)?)
    }

    fn avg_pool2d(&self, x: &Tensor, attrs: &Pool2dAttrs) -> Result<Tensor> {
        let shape = x.shape4("avg_pool2d")?;
        let g = geometry(shape, attrs)?;
        let x = x.contiguous()?;
        let xd = x.host_data()?;
        let a = attrs;
        let mut y = zeroed(g.planes * g.ho * g.wo);
        if !y.is_empty() {
            y.par_chunks_mut(g.ho * g.wo)
                .enumerate()
                .for_each(|(p, out)| {
                    let plane = &xd[p * g.h * g.w..(p + 1) * g.h * g.w];
                    for oh in 0..g.ho {
                        for ow in 0..g.wo {
                            let (rows, cols, div) = avg_window(&g, a, oh, ow);
                            let s: f32 = rows
                                .map(|ih| {
                                    plane[ih * g.w + cols.start..ih * g.w + cols.end]
                                        .iter()
                                        .sum::<f32>()
                                })
                                .sum();
                            out[oh * g.wo + ow] = s / div;
                        }
                    }
                });
        }
        Ok(Tensor::from_vec(y, &[shape[0], shape[1], g.ho, g.wo])?)
    }

    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        x_shape: [usize; 4],
        attrs: &Pool2dAttrs,
    ) -> Result<Tensor> {
        Self::check_pool2d_backward(x_shape, dy, attrs, "avg_pool2d_backward")?;
        let g = geometry(x_shape, attrs)?;
        let dy = dy.contiguous()?;
        let dyd = dy.host_data()?;
        let a = attrs;
        let mut dx = zeroed(x_shape.iter().product());
        if g.ho * g.wo > 0 && !dx.is_empty() {
            dx.par_chunks_mut(g.h * g.w)
                .enumerate()
                .for_each(|(p, out)| {
                    let grad = &dyd[p * g.ho * g.wo..(p + 1) * g.ho * g.wo];
                    for oh in 0..g.ho {
                        for ow in 0..g.wo {
                            let (rows, cols, div) = avg_window(&g, a, oh, ow);
                            let v = grad[oh * g.wo + ow] / div;
                            for ih in rows {
                                out[ih * g.w + cols.start..ih * g.w + cols.end]
                                    .iter_mut()
                                    .for_each(|d| *d += v);
                            }
                        }
                    }
                });
        }
        Ok(Tensor::from_vec(dx, &x_shape)?)
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::{argmax, argmax_2x2, geometry};
    use crate::attrs::Pool2dAttrs;

    /// The 2×2 path picks the same input as the general window rule, ties (first maximum) and
    /// NaN (first NaN) included, on odd sizes whose last row and column no window reads.
    #[test]
    fn two_by_two_path_agrees_with_the_general_rule() {
        let attrs = Pool2dAttrs::square(2);
        let (h, w) = (7, 9);
        let g = geometry([1, 1, h, w], &attrs).unwrap();
        let mut state = 12345u32;
        for trial in 0..200 {
            let plane: Vec<f32> = (0..h * w)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    match (state >> 24) % 8 {
                        0 if trial % 3 == 0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        v => (v % 3) as f32,
                    }
                })
                .collect();
            for oh in 0..g.ho {
                for ow in 0..g.wo {
                    assert_eq!(
                        argmax_2x2(&plane, w, oh, ow),
                        argmax(&plane, &g, &attrs, oh, ow),
                        "trial {trial}, output ({oh}, {ow})"
                    );
                }
            }
        }
    }
}
