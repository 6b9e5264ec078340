//! Max and average pooling on the CPU, parallel over `(n, c)` planes.

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::{written_in_full, zeroed};
use super::vectorized::{has_avx512, vectorized};
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
#[inline(always)]
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
/// The pick is recomputed as the first of the window's values equal to its maximum (NaN
/// counting as equal to a NaN maximum), which is [`pick_2x2`]'s, in a loop without branches.
fn max_2x2_row_backward_scalar(
    top: &[f32],
    bottom: &[f32],
    dy: &[f32],
    dx_top: &mut [f32],
    dx_bottom: &mut [f32],
) {
    let wo = dy.len();
    let (top, bottom) = (&top[..2 * wo], &bottom[..2 * wo]);
    let (dx_top, dx_bottom) = (&mut dx_top[..2 * wo], &mut dx_bottom[..2 * wo]);
    for j in 0..wo {
        let v = [top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]];
        let best = pick_2x2(v).0;
        let same = |x: f32| x == best || (x.is_nan() && best.is_nan());
        let t0 = same(v[0]);
        let t1 = !t0 && same(v[1]);
        let t2 = !t0 && !t1 && same(v[2]);
        let t3 = !t0 && !t1 && !t2;
        let d = dy[j];
        dx_top[2 * j] = if t0 { d } else { 0.0 };
        dx_top[2 * j + 1] = if t1 { d } else { 0.0 };
        dx_bottom[2 * j] = if t2 { d } else { 0.0 };
        dx_bottom[2 * j + 1] = if t3 { d } else { 0.0 };
    }
}

/// [`max_2x2_row_backward_scalar`], 16 windows at a time with AVX-512 where the CPU has it (the
/// compiler turned the scalar loop's stride-2 stores into scatters).
fn max_2x2_row_backward(
    top: &[f32],
    bottom: &[f32],
    dy: &[f32],
    dx_top: &mut [f32],
    dx_bottom: &mut [f32],
) {
    let wo = dy.len();
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        done = wo - wo % 16;
        // SAFETY: `has_avx512` checked at run time that the CPU has AVX-512F, the feature the
        // function is compiled for.
        unsafe {
            max_2x2_windows_backward_avx512(
                &top[..2 * done],
                &bottom[..2 * done],
                &dy[..done],
                &mut dx_top[..2 * done],
                &mut dx_bottom[..2 * done],
            )
        };
    }
    max_2x2_row_backward_scalar(
        &top[2 * done..2 * wo],
        &bottom[2 * done..2 * wo],
        &dy[done..],
        &mut dx_top[2 * done..2 * wo],
        &mut dx_bottom[2 * done..2 * wo],
    );
}

/// [`max_2x2_row_backward_scalar`] on whole vectors of 16 windows (`dy.len()` a multiple of 16):
/// the windows' columns split into even and odd by permutes, [`pick_2x2`]'s rule as masks, the
/// four masked gradients interleaved back into the two rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn max_2x2_windows_backward_avx512(
    top: &[f32],
    bottom: &[f32],
    dy: &[f32],
    dx_top: &mut [f32],
    dx_bottom: &mut [f32],
) {
    use std::arch::x86_64::{
        __m512, _CMP_GT_OQ, _CMP_UNORD_Q, _mm512_cmp_ps_mask, _mm512_loadu_ps,
        _mm512_mask_blend_ps, _mm512_maskz_mov_ps, _mm512_permutex2var_ps, _mm512_setr_epi32,
        _mm512_storeu_ps,
    };
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    assert!(dy.len().is_multiple_of(16));
    assert!(top.len() == 2 * dy.len() && bottom.len() == top.len());
    assert!(dx_top.len() == top.len() && dx_bottom.len() == top.len());
    for (k, grad) in dy.chunks_exact(16).enumerate() {
        let at = 32 * k;
        // SAFETY: every slice holds `32 k + 32` floats (asserted above), so each 16-float load
        // and store at `at` and `at + 16` stays inside it; `grad` holds 16 floats.
        unsafe {
            let split = |row: &[f32]| -> (__m512, __m512) {
                let (v0, v1) = (
                    _mm512_loadu_ps(row.as_ptr().add(at)),
                    _mm512_loadu_ps(row.as_ptr().add(at + 16)),
                );
                (
                    _mm512_permutex2var_ps(v0, even, v1),
                    _mm512_permutex2var_ps(v0, odd, v1),
                )
            };
            let ((a, b), (c, d)) = (split(top), split(bottom));
            // pick_2x2: a later value replaces the best when greater or NaN, unless the best is
            // NaN; `picked[i]` is where value i is the pick.
            let mut best = a;
            let mut picked = [0xFFFFu16, 0, 0, 0];
            for (i, x) in [b, c, d].into_iter().enumerate() {
                let take = (_mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, best)
                    | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x))
                    & !_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
                best = _mm512_mask_blend_ps(take, best, x);
                for p in picked.iter_mut().take(i + 1) {
                    *p &= !take;
                }
                picked[i + 1] = take;
            }
            let g = _mm512_loadu_ps(grad.as_ptr());
            let [g0, g1, g2, g3] = picked.map(|m| _mm512_maskz_mov_ps(m, g));
            for (row, e, o) in [(&mut *dx_top, g0, g1), (&mut *dx_bottom, g2, g3)] {
                _mm512_storeu_ps(row.as_mut_ptr().add(at), _mm512_permutex2var_ps(e, low, o));
                _mm512_storeu_ps(
                    row.as_mut_ptr().add(at + 16),
                    _mm512_permutex2var_ps(e, high, o),
                );
            }
        }
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
        let mut y = written_in_full(g.planes * g.ho * g.wo);
        if !y.is_empty() {
            y.par_chunks_mut(g.ho * g.wo)
                .enumerate()
                .for_each(|(p, out)| {
                    let plane = &xd[p * g.h * g.w..(p + 1) * g.h * g.w];
                    if is_2x2(attrs) {
                        vectorized(|| {
                            for (oh, row) in out.chunks_exact_mut(g.wo).enumerate() {
                                let top = &plane[2 * oh * g.w..][..2 * g.wo];
                                let bottom = &plane[(2 * oh + 1) * g.w..][..2 * g.wo];
                                max_2x2_row(top, bottom, row);
                            }
                        });
                        return;
                    }
                    for oh in 0..g.ho {
                        let row = &mut out[oh * g.wo..(oh + 1) * g.wo];
                        for (ow, o) in row.iter_mut().enumerate() {
                            *o = plane[argmax(plane, &g, attrs, oh, ow)];
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
        // 2×2 windows that tile the plane write every input's gradient (the maximum's or zero);
        // otherwise gradients are added into zeros.
        let mut dx = if is_2x2(attrs) && (g.h, g.w) == (2 * g.ho, 2 * g.wo) {
            written_in_full(x.numel())
        } else {
            zeroed(x.numel())
        };
        if g.ho * g.wo > 0 {
            dx.par_chunks_mut(g.h * g.w)
                .enumerate()
                .for_each(|(p, out)| {
                    let plane = &xd[p * g.h * g.w..(p + 1) * g.h * g.w];
                    let grad = &dyd[p * g.ho * g.wo..(p + 1) * g.ho * g.wo];
                    if is_2x2(attrs) {
                        // Windows do not overlap: each input receives at most one value, and
                        // the two rows' window columns are written whole.
                        vectorized(|| {
                            for (oh, grad_row) in grad.chunks_exact(g.wo).enumerate() {
                                let (top, bottom) = (2 * oh * g.w, (2 * oh + 1) * g.w);
                                let (out_top, out_bottom) = out[top..].split_at_mut(g.w);
                                max_2x2_row_backward(
                                    &plane[top..][..2 * g.wo],
                                    &plane[bottom..][..2 * g.wo],
                                    grad_row,
                                    &mut out_top[..2 * g.wo],
                                    &mut out_bottom[..2 * g.wo],
                                );
                            }
                        });
                        return;
                    }
                    for oh in 0..g.ho {
                        let grad_row = &grad[oh * g.wo..(oh + 1) * g.wo];
                        for (ow, &d) in grad_row.iter().enumerate() {
                            out[argmax(plane, &g, attrs, oh, ow)] += d;
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
        let mut y = written_in_full(g.planes * g.ho * g.wo);
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

    /// The vector backward (whole groups of 16 windows, then the scalar rest) picks what the
    /// scalar loop picks, ties and NaN included, on a row of 37 windows.
    #[test]
    fn vector_backward_agrees_with_the_scalar_rows() {
        let wo = 37;
        let mut state = 777u32;
        for trial in 0..50 {
            let mut next = || {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match (state >> 24) % 7 {
                    0 if trial % 2 == 0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    v => (v % 3) as f32,
                }
            };
            let top: Vec<f32> = (0..2 * wo).map(|_| next()).collect();
            let bottom: Vec<f32> = (0..2 * wo).map(|_| next()).collect();
            let dy: Vec<f32> = (0..wo).map(|j| j as f32 + 1.0).collect();
            let mut want = (vec![9.0; 2 * wo], vec![9.0; 2 * wo]);
            super::max_2x2_row_backward_scalar(&top, &bottom, &dy, &mut want.0, &mut want.1);
            let mut got = (vec![9.0; 2 * wo], vec![9.0; 2 * wo]);
            max_2x2_row_backward(&top, &bottom, &dy, &mut got.0, &mut got.1);
            assert_eq!(got, want, "trial {trial}");
        }
    }

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
