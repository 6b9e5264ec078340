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

/// Which of a 2×2 window's values `[top left, top right, bottom left, bottom right]` [`argmax_2x2`]
/// picks (0–3), without branches so that a row of windows vectorizes: a later value replaces the
/// best so far when it is greater or NaN, unless the best so far is already NaN.
#[inline(always)]
fn pick_2x2(v: [f32; 4]) -> (f32, u32) {
    let (mut best, mut at) = (v[0], 0u32);
    for (i, &x) in v.iter().enumerate().skip(1) {
        let take = (x > best || x.is_nan()) && !best.is_nan();
        best = if take { x } else { best };
        at = if take { i as u32 } else { at };
    }
    (best, at)
}

/// One output row of the 2×2 stride-2 max pool: `out[j]` is the maximum (the first NaN if any)
/// of `top[2j..2j+2]` and `bottom[2j..2j+2]`.
fn max_2x2_row(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    for ((o, t), b) in out
        .iter_mut()
        .zip(top.chunks_exact(2))
        .zip(bottom.chunks_exact(2))
    {
        *o = pick_2x2([t[0], t[1], b[0], b[1]]).0;
    }
}

/// The gradient of [`max_2x2_row`]: each window's gradient goes to the input it picked, and the
/// window's other three inputs get zero (every value of `dx_top` and `dx_bottom` is written).
fn max_2x2_row_backward(
    top: &[f32],
    bottom: &[f32],
    dy: &[f32],
    dx_top: &mut [f32],
    dx_bottom: &mut [f32],
) {
    let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2)).zip(
        dx_top
            .chunks_exact_mut(2)
            .zip(dx_bottom.chunks_exact_mut(2)),
    );
    for (((t, b), (gt, gb)), &d) in windows.zip(dy) {
        let at = pick_2x2([t[0], t[1], b[0], b[1]]).1;
        gt[0] = if at == 0 { d } else { 0.0 };
        gt[1] = if at == 1 { d } else { 0.0 };
        gb[0] = if at == 2 { d } else { 0.0 };
        gb[1] = if at == 3 { d } else { 0.0 };
    }
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
                            let top = &plane[2 * oh * g.w..][..2 * g.wo];
                            let bottom = &plane[(2 * oh + 1) * g.w..][..2 * g.wo];
                            max_2x2_row(top, bottom, row);
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
                            // Windows do not overlap: each input receives at most one value,
                            // and the two rows' window columns are written whole.
                            let (top, bottom) = (2 * oh * g.w, (2 * oh + 1) * g.w);
                            let (out_top, out_bottom) = out[top..].split_at_mut(g.w);
                            max_2x2_row_backward(
                                &plane[top..][..2 * g.wo],
                                &plane[bottom..][..2 * g.wo],
                                grad_row,
                                &mut out_top[..2 * g.wo],
                                &mut out_bottom[..2 * g.wo],
                            );
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
    use super::{argmax, geometry, max_2x2_row, max_2x2_row_backward};
    use crate::attrs::Pool2dAttrs;

    /// The 2×2 rows pick the same input as the general window rule, ties (first maximum) and NaN
    /// (first NaN) included, forward and backward, on odd sizes whose last row and column no
    /// window reads.
    #[test]
    fn two_by_two_rows_agree_with_the_general_rule() {
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
            let dy: Vec<f32> = (0..g.wo).map(|j| j as f32 + 1.0).collect();
            for oh in 0..g.ho {
                let (top, bottom) = (
                    &plane[2 * oh * w..][..2 * g.wo],
                    &plane[(2 * oh + 1) * w..][..2 * g.wo],
                );
                let mut y = vec![0.0; g.wo];
                max_2x2_row(top, bottom, &mut y);
                let (mut dx_top, mut dx_bottom) = (vec![7.0; 2 * g.wo], vec![7.0; 2 * g.wo]);
                max_2x2_row_backward(top, bottom, &dy, &mut dx_top, &mut dx_bottom);
                for ow in 0..g.wo {
                    let at = argmax(&plane, &g, &attrs, oh, ow);
                    let want = plane[at];
                    assert!(
                        y[ow] == want || (y[ow].is_nan() && want.is_nan()),
                        "trial {trial}, output ({oh}, {ow}): {} vs {want}",
                        y[ow]
                    );
                    for (r, dx) in [(2 * oh, &dx_top), (2 * oh + 1, &dx_bottom)] {
                        for (c, &got) in dx.iter().enumerate().skip(2 * ow).take(2) {
                            let want = if r * w + c == at { dy[ow] } else { 0.0 };
                            assert_eq!(got, want, "trial {trial}, input ({r}, {c})");
                        }
                    }
                }
            }
        }
    }
}
