//! Convolution and transposed convolution on the CPU: im2col + GEMM, batch-parallel.
//!
//! The transposed convolution is built from the same three primitives as on cuDNN: its forward
//! pass is a convolution's data gradient, its data gradient is a convolution, and its weight
//! gradient is a convolution's filter gradient with input and output gradient swapped.

use std::ops::Range;

use magma_tensor::Tensor;
use rayon::prelude::*;

use super::CpuBackend;
use super::buffers::{
    line_aligned_len, with_shared_scratch, with_thread_scratch, written_in_full, zeroed,
};
use super::direct_conv::{DirectPlan, TILE_W};
use super::elementwise::add_channel_bias_in_place;
use super::gemm::{MatMut, MatRef, gemm_into};
use super::vectorized::vectorized;
use super::winograd_conv::{self, WinogradFilter, WinogradPlan};
use super::winograd4_conv::Winograd4Plan;
use crate::attrs::{Conv2dAttrs, ConvTranspose2dAttrs};
use crate::backend::ConvOps;
use crate::error::{Result, shape_err};

/// Sizes of one convolution problem.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    attrs: Conv2dAttrs,
}

impl ConvGeometry {
    fn new(x_shape: [usize; 4], w_shape: [usize; 4], attrs: &Conv2dAttrs) -> Result<Self> {
        let [n, c, h, w] = x_shape;
        let [o, ci, kh, kw] = w_shape;
        if ci != c {
            return shape_err(
                "conv2d",
                "weight",
                &w_shape,
                format!("[out, {c}, kh, kw] for an input with {c} channels"),
            );
        }
        let [ho, wo] = attrs.output_size([h, w], [kh, kw])?;
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            ho,
            wo,
            attrs: *attrs,
        })
    }

    fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }
    fn in_image(&self) -> usize {
        self.c * self.h * self.w
    }
    /// A 1×1, stride-1, unpadded convolution needs no im2col: the image is the column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.attrs.stride == [1, 1] && self.attrs.padding == [0, 0]
    }
    /// The direct kernel's plan for the forward pass, if it handles this convolution (stride 1,
    /// dilation 1, a batch that keeps every thread busy; see `direct_conv`).
    fn direct_forward(&self) -> Option<DirectPlan> {
        let a = &self.attrs;
        if a.stride != [1, 1] || a.dilation != [1, 1] || !self.batch_parallel() {
            return None;
        }
        DirectPlan::new(
            [self.c, self.h, self.w],
            self.o,
            [self.kh, self.kw],
            a.padding,
        )
    }
    /// Whether the Winograd kernels can compute this convolution: a 3×3 kernel, stride 1,
    /// dilation 1.
    fn winograd_3x3(&self) -> bool {
        let a = &self.attrs;
        a.stride == [1, 1] && a.dilation == [1, 1] && [self.kh, self.kw] == [3, 3]
    }
    /// The Winograd kernel's plan for the forward pass, if it handles this convolution (3×3,
    /// stride 1, dilation 1, a batch that keeps every thread busy; see `winograd_conv`).
    fn winograd_forward(&self) -> Option<WinogradPlan> {
        let a = &self.attrs;
        if !self.winograd_3x3() || !self.batch_parallel() {
            return None;
        }
        WinogradPlan::new([self.c, self.h, self.w], self.o, a.padding)
    }
    /// The F(4×4, 3×3) Winograd kernel's plan for the forward pass, under the conditions of
    /// [`ConvGeometry::winograd_forward`] (see `winograd4_conv`).
    fn winograd4_forward(&self) -> Option<Winograd4Plan> {
        let a = &self.attrs;
        if !self.winograd_3x3() || !self.batch_parallel() {
            return None;
        }
        Winograd4Plan::new([self.c, self.h, self.w], self.o, a.padding)
    }
    /// The F(4×4, 3×3) plan for the data gradient, as [`ConvGeometry::winograd_backward_data`].
    fn winograd4_backward_data(&self) -> Option<Winograd4Plan> {
        let a = &self.attrs;
        if !self.winograd_3x3() || !self.batch_parallel() || a.padding[0] >= 3 || a.padding[1] >= 3
        {
            return None;
        }
        let plan = Winograd4Plan::new(
            [self.o, self.ho, self.wo],
            self.c,
            [2 - a.padding[0], 2 - a.padding[1]],
        )?;
        debug_assert_eq!(
            plan.out_len(),
            self.in_image(),
            "stride 1 maps back onto the input"
        );
        Some(plan)
    }
    /// The Winograd kernel's plan for the data gradient: the convolution of the output gradient
    /// with the filters flipped and transposed, padded by `2 − p`.
    fn winograd_backward_data(&self) -> Option<WinogradPlan> {
        let a = &self.attrs;
        if !self.winograd_3x3() || !self.batch_parallel() || a.padding[0] >= 3 || a.padding[1] >= 3
        {
            return None;
        }
        let plan = WinogradPlan::new(
            [self.o, self.ho, self.wo],
            self.c,
            [2 - a.padding[0], 2 - a.padding[1]],
        )?;
        debug_assert_eq!(
            plan.out_len(),
            self.in_image(),
            "stride 1 maps back onto the input"
        );
        Some(plan)
    }
    /// The Winograd kernel's plan for the filter gradient: the forward plan, input channels in
    /// blocks of 4, and enough tiles per thread's group of images (see
    /// [`WinogradPlan::filter_supported`]).
    fn winograd_filter(&self) -> Option<WinogradPlan> {
        let group = self.n.div_ceil(rayon::current_num_threads());
        self.winograd_forward()
            .filter(|plan| plan.filter_supported(group))
    }
    /// Whether the filter gradient of a Winograd plan takes the batch-wide kernel
    /// ([`winograd_filter_batch`]): images of at most [`BATCH_FILTER_MAX_IMAGE_TILES`] tiles
    /// (too few to repay a per-thread accumulator each), [`BATCH_FILTER_MIN_TILES`] in the batch,
    /// input channels in whole register tiles.
    fn batch_filter_fits(&self, plan: &impl WinogradFilter) -> bool {
        let [_, c] = plan.channels();
        winograd_conv::filter_enabled()
            && c.is_multiple_of(winograd_conv::FILTER_BLOCK)
            && plan.image_tiles() <= BATCH_FILTER_MAX_IMAGE_TILES
            && self.n * plan.image_tiles() >= BATCH_FILTER_MIN_TILES
    }
    /// The F(4×4) plan for the batch-wide filter gradient: a 3×3, stride-1, dilation-1
    /// convolution that F(4×4) takes, on images small enough ([`ConvGeometry::batch_filter_fits`];
    /// any batch size: the work is split by frequency, not by image).
    fn winograd4_batch_filter(&self) -> Option<Winograd4Plan> {
        if !self.winograd_3x3() {
            return None;
        }
        Winograd4Plan::new([self.c, self.h, self.w], self.o, self.attrs.padding)
            .filter(|plan| self.batch_filter_fits(plan))
    }
    /// The F(2×2) plan for the batch-wide filter gradient, as
    /// [`ConvGeometry::winograd4_batch_filter`].
    fn winograd_batch_filter(&self) -> Option<WinogradPlan> {
        if !self.winograd_3x3() {
            return None;
        }
        WinogradPlan::new([self.c, self.h, self.w], self.o, self.attrs.padding)
            .filter(|plan| self.batch_filter_fits(plan))
    }
    /// The F(4×4) plan for the filter gradient (F(3×3, 4×4)), under the conditions of
    /// [`ConvGeometry::winograd_filter`] (see [`WinogradFilter::filter_supported`]).
    fn winograd4_filter(&self) -> Option<Winograd4Plan> {
        let group = self.n.div_ceil(rayon::current_num_threads());
        self.winograd4_forward()
            .filter(|plan| plan.filter_supported(group))
    }
    /// The direct kernel's plan for the filter gradient: the forward plan on rows of at least
    /// [`TILE_W`] columns (on narrower rows, where each (input channel, kernel row) has few
    /// products to add, the im2col GEMM measured faster).
    fn direct_filter(&self) -> Option<DirectPlan> {
        self.direct_forward().filter(|_| self.wo >= TILE_W)
    }
    /// The direct kernel's plan for the data gradient, computed as the convolution of the
    /// output gradient with the filters flipped and transposed, padded by `k − 1 − p`.
    fn direct_backward_data(&self) -> Option<DirectPlan> {
        let a = &self.attrs;
        if a.stride != [1, 1] || a.dilation != [1, 1] || !self.batch_parallel() {
            return None;
        }
        if a.padding[0] >= self.kh || a.padding[1] >= self.kw {
            return None;
        }
        let plan = DirectPlan::new(
            [self.o, self.ho, self.wo],
            self.c,
            [self.kh, self.kw],
            [self.kh - 1 - a.padding[0], self.kw - 1 - a.padding[1]],
        )?;
        debug_assert_eq!(
            plan.out_len(),
            self.in_image(),
            "stride 1 maps back onto the input"
        );
        Some(plan)
    }
    /// Filters `[o, c, kh, kw]` as `[c, o, kh, kw]`, each kernel rotated by 180°: the filters
    /// whose convolution with the output gradient is the data gradient (stride 1).
    fn flipped_filters(&self, w: &[f32]) -> Vec<f32> {
        let (kk, ckk) = (self.kh * self.kw, self.ckk());
        let mut flipped = vec![0.0f32; w.len()];
        if kk == 0 || self.o == 0 {
            return flipped;
        }
        flipped
            .par_chunks_mut(self.o * kk)
            .enumerate()
            .for_each(|(ci, dst)| {
                for (o, dst) in dst.chunks_exact_mut(kk).enumerate() {
                    let src = &w[o * ckk + ci * kk..][..kk];
                    for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                        *d = v;
                    }
                }
            });
        flipped
    }
    /// Run samples in parallel (single-threaded GEMMs) or one after another (parallel GEMMs).
    fn batch_parallel(&self) -> bool {
        self.n >= rayon::current_num_threads()
    }
}

/// Input row/column read by output position `out` at kernel tap `k`, if inside the image.
#[inline]
fn source_index(
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    size: usize,
) -> Option<usize> {
    let pos = (out * stride + k * dil) as isize - pad as isize;
    (pos >= 0 && (pos as usize) < size).then_some(pos as usize)
}

/// The output positions `lo..hi` (of `out_len`) whose input position `o·stride + k·dil - pad`
/// lies inside `0..size`; the others read padding.
fn valid_outputs(
    out_len: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    size: usize,
) -> (usize, usize) {
    let off = (k * dil) as isize - pad as isize;
    let s = stride as isize;
    let lo = if off >= 0 {
        0
    } else {
        ((-off + s - 1) / s) as usize
    };
    let last = size as isize - 1 - off;
    let hi = if last < 0 {
        0
    } else {
        ((last / s) as usize + 1).min(out_len)
    };
    (lo.min(out_len), hi.max(lo.min(out_len)))
}

/// Unfolds output rows `rows` of one image `[c, h, w]` into `[c·kh·kw, rows.len()·wo]`: per
/// (channel, kernel offset, output row) the padding columns are zeroed and the rest copied — a
/// contiguous slice copy at stride 1.
fn im2col(g: &ConvGeometry, image: &[f32], col: &mut [f32], rows: Range<usize>) {
    if column_pairs(g) {
        return vectorized(|| im2col_column_pairs(g, image, col, rows));
    }
    let a = &g.attrs;
    let plane = rows.len() * g.wo;
    let (s, d, p) = (a.stride[1], a.dilation[1], a.padding[1]);
    for ci in 0..g.c {
        let channel = &image[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (ci * g.kh + ki) * g.kw + kj;
                let dst = &mut col[row * plane..(row + 1) * plane];
                let (lo, hi) = valid_outputs(g.wo, kj, s, p, d, g.w);
                let first = (lo * s + kj * d).wrapping_sub(p);
                for (r, oh) in rows.clone().enumerate() {
                    let out_row = &mut dst[r * g.wo..(r + 1) * g.wo];
                    let Some(ih) =
                        source_index(oh, ki, a.stride[0], a.padding[0], a.dilation[0], g.h)
                    else {
                        out_row.fill(0.0);
                        continue;
                    };
                    let src = &channel[ih * g.w..(ih + 1) * g.w];
                    out_row[..lo].fill(0.0);
                    out_row[hi..].fill(0.0);
                    if hi == lo {
                        continue;
                    }
                    if s == 1 {
                        out_row[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (i, v) in out_row[lo..hi].iter_mut().enumerate() {
                            *v = src[first + i * s];
                        }
                    }
                }
            }
        }
    }
}

/// Folds `[c·kh·kw, rows.len()·wo]` (output rows `rows`) back into one image `[c, h, w]`, adding
/// to what is there (the adjoint of [`im2col`]); the caller zeroes `image` before the first
/// block.
fn col2im(g: &ConvGeometry, col: &[f32], image: &mut [f32], rows: Range<usize>) {
    if column_pairs(g) {
        return vectorized(|| col2im_column_pairs(g, col, image, rows));
    }
    let a = &g.attrs;
    let plane = rows.len() * g.wo;
    let (s, d, p) = (a.stride[1], a.dilation[1], a.padding[1]);
    for ci in 0..g.c {
        let channel = &mut image[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (ci * g.kh + ki) * g.kw + kj;
                let src = &col[row * plane..(row + 1) * plane];
                let (lo, hi) = valid_outputs(g.wo, kj, s, p, d, g.w);
                let first = (lo * s + kj * d).wrapping_sub(p);
                for (r, oh) in rows.clone().enumerate() {
                    let Some(ih) =
                        source_index(oh, ki, a.stride[0], a.padding[0], a.dilation[0], g.h)
                    else {
                        continue;
                    };
                    if hi == lo {
                        continue;
                    }
                    let dst = &mut channel[ih * g.w..(ih + 1) * g.w];
                    let vals = &src[r * g.wo + lo..r * g.wo + hi];
                    if s == 1 {
                        for (o, &v) in dst[first..first + (hi - lo)].iter_mut().zip(vals) {
                            *o += v;
                        }
                    } else {
                        for (i, &v) in vals.iter().enumerate() {
                            dst[first + i * s] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Whether the kernel's two columns read disjoint column pairs of the input (kernel width 2,
/// column stride 2, no column padding or dilation: the U-Net's 2×2 stride-2 transposed
/// convolutions), so that [`im2col`] and [`col2im`] split or interleave whole rows instead of
/// copying every other value.
fn column_pairs(g: &ConvGeometry) -> bool {
    let a = &g.attrs;
    g.kw == 2 && a.stride[1] == 2 && a.padding[1] == 0 && a.dilation[1] == 1 && 2 * g.wo <= g.w
}

/// [`im2col`] where [`column_pairs`] holds: per input row read, columns `2j` and `2j + 1` go to
/// the rows of kernel columns 0 and 1.
#[inline(always)]
fn im2col_column_pairs(g: &ConvGeometry, image: &[f32], col: &mut [f32], rows: Range<usize>) {
    let a = &g.attrs;
    let plane = rows.len() * g.wo;
    for ci in 0..g.c {
        let channel = &image[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            let row = (ci * g.kh + ki) * 2;
            let (even, odd) = col[row * plane..(row + 2) * plane].split_at_mut(plane);
            for (r, oh) in rows.clone().enumerate() {
                let (even, odd) = (
                    &mut even[r * g.wo..(r + 1) * g.wo],
                    &mut odd[r * g.wo..(r + 1) * g.wo],
                );
                match source_index(oh, ki, a.stride[0], a.padding[0], a.dilation[0], g.h) {
                    Some(ih) => {
                        let src = &channel[ih * g.w..][..2 * g.wo];
                        for ((e, o), pair) in even.iter_mut().zip(odd).zip(src.chunks_exact(2)) {
                            *e = pair[0];
                            *o = pair[1];
                        }
                    }
                    None => {
                        even.fill(0.0);
                        odd.fill(0.0);
                    }
                }
            }
        }
    }
}

/// [`col2im`] where [`column_pairs`] holds: the rows of kernel columns 0 and 1 are interleaved
/// back into the input row's column pairs (added to what is there).
#[inline(always)]
fn col2im_column_pairs(g: &ConvGeometry, col: &[f32], image: &mut [f32], rows: Range<usize>) {
    let a = &g.attrs;
    let plane = rows.len() * g.wo;
    for ci in 0..g.c {
        let channel = &mut image[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            let row = (ci * g.kh + ki) * 2;
            let (even, odd) = col[row * plane..(row + 2) * plane].split_at(plane);
            for (r, oh) in rows.clone().enumerate() {
                let Some(ih) = source_index(oh, ki, a.stride[0], a.padding[0], a.dilation[0], g.h)
                else {
                    continue;
                };
                let dst = &mut channel[ih * g.w..][..2 * g.wo];
                let (even, odd) = (
                    &even[r * g.wo..(r + 1) * g.wo],
                    &odd[r * g.wo..(r + 1) * g.wo],
                );
                for ((pair, &e), &o) in dst.chunks_exact_mut(2).zip(even).zip(odd) {
                    pair[0] += e;
                    pair[1] += o;
                }
            }
        }
    }
}

/// Output rows per im2col block. Alone on a core (`parallel` false), a block holds enough output
/// positions for an efficient GEMM (at least 256) and otherwise stays within ≈ 256 KiB, so the
/// GEMM's packing reads it back from the core's L2 cache instead of memory (a whole unfolded
/// 128² image of 16 channels is 9 MiB; unfolded at once, the top level's GEMMs ran at a third of
/// their in-cache speed). A GEMM shared by the threads (`parallel`) takes the whole image.
fn block_rows(g: &ConvGeometry, parallel: bool) -> usize {
    const CACHE_FLOATS: usize = 64 * 1024;
    const MIN_POSITIONS: usize = 256;
    if parallel || g.wo == 0 {
        return g.ho.max(1);
    }
    let positions = (CACHE_FLOATS / g.ckk().max(1)).max(MIN_POSITIONS);
    (positions / g.wo).clamp(1, g.ho.max(1))
}

/// The blocks of output rows, in order, that cover `0..ho`.
fn row_blocks(g: &ConvGeometry, parallel: bool) -> impl Iterator<Item = Range<usize>> {
    let step = block_rows(g, parallel);
    let ho = g.ho;
    (0..ho).step_by(step).map(move |r| r..(r + step).min(ho))
}

/// The first `len` elements of the scratch buffer `col`, grown if needed.
fn scratch(col: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if col.len() < len {
        col.resize(len, 0.0);
    }
    &mut col[..len]
}

/// The direct kernel over a batch: images of `in_len` elements in `inputs`, one output image of
/// `plan.out_len()` elements each in `outputs`, samples in parallel (one padded copy per task).
fn direct_batch(
    plan: &DirectPlan,
    inputs: &[f32],
    packed: &[f32],
    outputs: &mut [f32],
    in_len: usize,
) {
    outputs
        .par_chunks_mut(plan.out_len())
        .zip(inputs.par_chunks(in_len))
        .for_each(|(out, image)| {
            with_thread_scratch(plan.padded_len(), |padded| {
                plan.pad_image(image, padded);
                plan.forward(padded, packed, out);
            })
        });
}

/// The F(4×4, 3×3) Winograd kernel over a batch, as [`direct_batch`] (filters already
/// transformed).
fn winograd4_batch(
    plan: &Winograd4Plan,
    inputs: &[f32],
    filters: &[f32],
    outputs: &mut [f32],
    in_len: usize,
) {
    // The transformed tiles after the padded image start on a cache line.
    let (padded_len, lines) = (plan.padded_len(), line_aligned_len(plan.padded_len()));
    outputs
        .par_chunks_mut(plan.out_len())
        .zip(inputs.par_chunks(in_len))
        .for_each(|(out, image)| {
            with_thread_scratch(lines + plan.scratch_len(), |buf| {
                let (padded, scratch) = buf.split_at_mut(lines);
                let padded = &mut padded[..padded_len];
                plan.pad_image(image, padded);
                plan.forward(padded, filters, out, scratch);
            })
        });
}

/// The Winograd kernel over a batch, as [`direct_batch`] (filters already transformed).
fn winograd_batch(
    plan: &WinogradPlan,
    inputs: &[f32],
    filters: &[f32],
    outputs: &mut [f32],
    in_len: usize,
) {
    // The transformed tiles after the padded image start on a cache line.
    let (padded_len, lines) = (plan.padded_len(), line_aligned_len(plan.padded_len()));
    outputs
        .par_chunks_mut(plan.out_len())
        .zip(inputs.par_chunks(in_len))
        .for_each(|(out, image)| {
            with_thread_scratch(lines + plan.scratch_len(), |buf| {
                let (padded, scratch) = buf.split_at_mut(lines);
                let padded = &mut padded[..padded_len];
                plan.pad_image(image, padded);
                plan.forward(padded, filters, out, scratch);
            })
        });
}

fn conv_forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let plane = g.out_plane();
    let out_image = g.o * plane;
    let mut y = written_in_full(g.n * out_image);
    if out_image == 0 {
        return Ok(y);
    }
    if let Some(plan) = g.winograd4_forward() {
        winograd4_batch(&plan, x, &plan.transform_filters(w), &mut y, g.in_image());
        return Ok(y);
    }
    if let Some(plan) = g.winograd_forward() {
        winograd_batch(&plan, x, &plan.transform_filters(w), &mut y, g.in_image());
        return Ok(y);
    }
    if let Some(plan) = g.direct_forward() {
        direct_batch(&plan, x, &plan.pack_filters(w), &mut y, g.in_image());
        return Ok(y);
    }
    let weight = MatRef::row_major(w, g.o, g.ckk());
    let one = |image: &[f32], out: &mut [f32], col: &mut Vec<f32>, parallel: bool| -> Result<()> {
        if g.is_pointwise() {
            return gemm_into(
                MatMut::row_major(out, g.o, plane),
                weight,
                MatRef::row_major(image, g.c, plane),
                false,
                parallel,
            );
        }
        for rows in row_blocks(g, parallel) {
            let (first, cols) = (rows.start * g.wo, rows.len() * g.wo);
            let block = scratch(col, g.ckk() * cols);
            im2col(g, image, block, rows);
            gemm_into(
                MatMut::columns(out, g.o, plane, first, cols),
                weight,
                MatRef::row_major(block, g.ckk(), cols),
                false,
                parallel,
            )?;
        }
        Ok(())
    };
    if g.batch_parallel() {
        y.par_chunks_mut(out_image)
            .zip(x.par_chunks(g.in_image()))
            .try_for_each_init(Vec::new, |col, (out, image)| one(image, out, col, false))?;
    } else {
        let mut col = Vec::new();
        for (out, image) in y.chunks_mut(out_image).zip(x.chunks(g.in_image())) {
            one(image, out, &mut col, true)?;
        }
    }
    Ok(y)
}

fn conv_backward_data(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let plane = g.out_plane();
    let out_image = g.o * plane;
    if g.n * g.in_image() == 0 || out_image == 0 {
        return Ok(zeroed(g.n * g.in_image()));
    }
    // The Winograd passes write every input gradient; the others add into zeros.
    if let Some(plan) = g.winograd4_backward_data() {
        let filters = plan.transform_filters(&g.flipped_filters(w));
        let mut dx = written_in_full(g.n * g.in_image());
        winograd4_batch(&plan, dy, &filters, &mut dx, out_image);
        return Ok(dx);
    }
    if let Some(plan) = g.winograd_backward_data() {
        let filters = plan.transform_filters(&g.flipped_filters(w));
        let mut dx = written_in_full(g.n * g.in_image());
        winograd_batch(&plan, dy, &filters, &mut dx, out_image);
        return Ok(dx);
    }
    let mut dx = zeroed(g.n * g.in_image());
    if let Some(plan) = g.direct_backward_data() {
        let packed = plan.pack_filters(&g.flipped_filters(w));
        direct_batch(&plan, dy, &packed, &mut dx, out_image);
        return Ok(dx);
    }
    let weight_t = MatRef::row_major(w, g.o, g.ckk()).t();
    // `image` arrives zeroed; each block of output rows adds its share.
    let one = |grad: &[f32], image: &mut [f32], col: &mut Vec<f32>, parallel: bool| -> Result<()> {
        if g.is_pointwise() {
            return gemm_into(
                MatMut::row_major(image, g.c, plane),
                weight_t,
                MatRef::row_major(grad, g.o, plane),
                false,
                parallel,
            );
        }
        for rows in row_blocks(g, parallel) {
            let (first, cols) = (rows.start * g.wo, rows.len() * g.wo);
            let block = scratch(col, g.ckk() * cols);
            gemm_into(
                MatMut::row_major(block, g.ckk(), cols),
                weight_t,
                MatRef::strided(&grad[first..], g.o, cols, plane, 1),
                false,
                parallel,
            )?;
            col2im(g, block, image, rows);
        }
        Ok(())
    };
    if g.batch_parallel() {
        dx.par_chunks_mut(g.in_image())
            .zip(dy.par_chunks(out_image))
            .try_for_each_init(Vec::new, |col, (image, grad)| one(grad, image, col, false))?;
    } else {
        let mut col = Vec::new();
        for (image, grad) in dx.chunks_mut(g.in_image()).zip(dy.chunks(out_image)) {
            one(grad, image, &mut col, true)?;
        }
    }
    Ok(dx)
}

/// A filter-shaped sum over the batch, samples in parallel: contiguous groups of samples, one
/// per thread, each accumulating `add(acc, image, output gradient, scratch)` into a partial sum
/// (`scratch` from `new_scratch`, once per group, handed to `finish(acc, scratch)` after the
/// group's last sample)
/// of its own; the partial sums are added in order, so the result does not depend on how rayon
/// schedules the groups (only on the thread count).
fn per_group_sums<S>(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    new_scratch: impl Fn() -> S + Sync,
    add: impl Fn(&mut [f32], &[f32], &[f32], &mut S) -> Result<()> + Sync,
    finish: impl Fn(&mut [f32], S) + Sync,
) -> Result<Vec<f32>> {
    let (wlen, out_image) = (g.o * g.ckk(), g.o * g.out_plane());
    let group = g.n.div_ceil(rayon::current_num_threads());
    let partials = x
        .par_chunks(group * g.in_image())
        .zip(dy.par_chunks(group * out_image))
        .map(|(images, grads)| {
            let (mut acc, mut scratch) = (vec![0.0f32; wlen], new_scratch());
            for (image, grad) in images.chunks(g.in_image()).zip(grads.chunks(out_image)) {
                add(&mut acc, image, grad, &mut scratch)?;
            }
            finish(&mut acc, scratch);
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;
    // Added in group order, in parallel over blocks of the filter tensor (at 8 threads the
    // deepest filter gradient's serial sum of 8 partials of 2.25 MiB took longer than its GEMMs).
    const SUM_BLOCK: usize = 1 << 14;
    let mut partials = partials.into_iter();
    let mut sum = partials.next().unwrap_or_else(|| vec![0.0; wlen]);
    let rest: Vec<Vec<f32>> = partials.collect();
    sum.par_chunks_mut(SUM_BLOCK)
        .enumerate()
        .for_each(|(b, block)| {
            for p in &rest {
                let src = &p[b * SUM_BLOCK..][..block.len()];
                block.iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
        });
    Ok(sum)
}

/// The filter gradient on a Winograd kernel: per group of images, the lane sums of the
/// transformed products, transformed back once (see `winograd_conv`).
fn winograd_filter_sums(
    g: &ConvGeometry,
    plan: &impl WinogradFilter,
    x: &[f32],
    dy: &[f32],
) -> Result<Vec<f32>> {
    per_group_sums(
        g,
        x,
        dy,
        || zeroed(plan.filter_acc_len()),
        |_, image, grad, lanes| {
            with_thread_scratch(plan.filter_scratch_len(), |scratch| {
                plan.filter_accumulate(image, grad, lanes, scratch);
            });
            Ok(())
        },
        |acc, lanes| plan.filter_finish(&lanes, acc),
    )
}

/// Images of at most this many Winograd tiles (a 32² plane in F(4×4), 16² in F(2×2)) take the
/// batch-wide filter gradient, if the batch has [`BATCH_FILTER_MIN_TILES`] or more.
const BATCH_FILTER_MAX_IMAGE_TILES: usize = 64;
const BATCH_FILTER_MIN_TILES: usize = 128;
/// The batch-wide filter gradient's transforms are kept within this many floats (16 MiB): a
/// larger batch goes in several passes.
const BATCH_FILTER_FLOATS: usize = 1 << 22;

/// The filter gradient of small images on a Winograd kernel, split by frequency instead of by
/// image (one image per thread leaves each thread 64 tiles or fewer, too few to repay the
/// per-thread accumulator of [`winograd_filter_sums`]): every image's transformed input and
/// output gradient at once (in parallel over images), then the sums over all the batch's tiles
/// of one frequency and block of output channels per task, then the transform back per output
/// channel. Each sum is made by one task in a fixed order, so the result does not depend on
/// the thread count. Batches whose transforms exceed `max_floats` go in several passes.
fn winograd_filter_batch(
    g: &ConvGeometry,
    plan: &impl WinogradFilter,
    x: &[f32],
    dy: &[f32],
    max_floats: usize,
) -> Vec<f32> {
    let [o, c] = plan.channels();
    let (freq, tiles) = (plan.frequencies(), plan.image_tiles());
    let (v_len, d_len) = (freq * c * tiles, freq * o * tiles);
    let (in_image, out_image) = (g.in_image(), o * g.out_plane());
    // Tasks of one frequency and a block of output channels: at least 4 per thread.
    let mut k_step = o;
    while freq * (o / k_step) < 4 * rayon::current_num_threads() && k_step.is_multiple_of(8) {
        k_step /= 2;
    }
    let mut acc = zeroed(freq * o * c);
    let per_pass = (max_floats / (v_len + d_len)).clamp(1, g.n);
    for first in (0..g.n).step_by(per_pass) {
        let n = per_pass.min(g.n - first);
        let images = &x[first * in_image..][..n * in_image];
        let grads = &dy[first * out_image..][..n * out_image];
        with_shared_scratch(n * (v_len + d_len), |buf| {
            let (v, d) = buf.split_at_mut(n * v_len);
            v.par_chunks_mut(v_len)
                .zip(d.par_chunks_mut(d_len))
                .zip(images.par_chunks(in_image).zip(grads.par_chunks(out_image)))
                .for_each(|((vi, di), (image, grad))| {
                    with_thread_scratch(plan.padded_len(), |padded| {
                        plan.transform_image(image, grad, padded, vi, di);
                    });
                });
            let (v, d) = (&*v, &*d);
            acc.par_chunks_mut(k_step * c)
                .enumerate()
                .for_each(|(task, ax)| {
                    let (xi, k0) = (task / (o / k_step), task % (o / k_step) * k_step);
                    let parts: Vec<(&[f32], &[f32])> = (0..n)
                        .map(|i| {
                            (
                                &v[i * v_len + xi * c * tiles..][..c * tiles],
                                &d[i * d_len + (xi * o + k0) * tiles..][..k_step * tiles],
                            )
                        })
                        .collect();
                    plan.tile_sums([k_step, c], &parts, tiles, tiles, ax);
                });
        });
    }
    let mut dw = zeroed(o * c * 9);
    dw.par_chunks_mut(c * 9)
        .enumerate()
        .for_each(|(k, dw_k)| plan.filter_finish_channel(&acc, k, dw_k));
    dw
}

/// The filter gradient on the direct kernel.
fn direct_filter_sums(
    g: &ConvGeometry,
    plan: &DirectPlan,
    x: &[f32],
    dy: &[f32],
) -> Result<Vec<f32>> {
    per_group_sums(
        g,
        x,
        dy,
        || (),
        |acc, image, grad, ()| {
            with_thread_scratch(plan.padded_len(), |padded| {
                plan.pad_image(image, padded);
                plan.filter_gradient(padded, grad, acc);
            });
            Ok(())
        },
        |_, ()| {},
    )
}

/// The most floats of unfolded images [`filter_gemm_over_batch`] holds at once (32 MiB), and
/// the largest output plane it takes: with more output positions per image the per-image
/// products are long enough to repay their partial sums (measured at 16², 8 threads on 2 cores:
/// 1.3–2.6× slower over the batch).
const BATCH_COLUMNS_MAX: usize = 8 << 20;
const BATCH_PLANE_MAX: usize = 64;

/// The im2col filter gradient with one image per thread or fewer, as one GEMM over the whole
/// batch: `dW [o, c·kh·kw] = dy [o, n·plane] · colᵀ`, where `col [c·kh·kw, n·plane]` holds every
/// image's unfolded patches side by side (one task per input channel) and `dy` is regrouped by
/// output channel. Per-thread partial sums would each be a whole filter gradient (at 8², 256
/// channels: 2.25 MiB) for a few hundred products per value; per-image GEMMs with a 64-long
/// inner dimension (the 8² level) ran at a tenth of the cores' peak at 8 threads. One GEMM with
/// an inner dimension of `n·plane` lets the GEMM kernel split the output over the threads and
/// reuse its packed panels, and writes `dW` in its final layout. `None` where the per-group
/// path applies (several images per thread, a pointwise convolution, planes above
/// [`BATCH_PLANE_MAX`] positions, or unfolded images above [`BATCH_COLUMNS_MAX`]).
fn filter_gemm_over_batch(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Result<Option<Vec<f32>>> {
    let threads = rayon::current_num_threads();
    let (ckk, plane) = (g.ckk(), g.out_plane());
    let k = g.n * plane;
    if g.n.div_ceil(threads) > 1
        || g.is_pointwise()
        || plane > BATCH_PLANE_MAX
        || ckk * k > BATCH_COLUMNS_MAX
        || ckk * k == 0
    {
        return Ok(None);
    }
    let taps = g.kh * g.kw;
    let one_channel = ConvGeometry { c: 1, ..*g };
    let channel_len = g.h * g.w;
    // Input channel ci owns rows ci·taps.. of `col`: its taps' patches, image after image.
    let mut cols = written_in_full(ckk * k);
    cols.par_chunks_mut(taps * k)
        .enumerate()
        .for_each_init(Vec::new, |unfolded, (ci, rows)| {
            unfolded.resize(taps * plane, 0.0);
            for n in 0..g.n {
                let channel = &x[n * g.in_image() + ci * channel_len..][..channel_len];
                im2col(&one_channel, channel, unfolded, 0..g.ho);
                for (t, patch) in unfolded.chunks_exact(plane).enumerate() {
                    rows[t * k + n * plane..][..plane].copy_from_slice(patch);
                }
            }
        });
    let mut grads = written_in_full(g.o * k);
    grads.par_chunks_mut(k).enumerate().for_each(|(o, row)| {
        for (n, run) in row.chunks_exact_mut(plane).enumerate() {
            run.copy_from_slice(&dy[(n * g.o + o) * plane..][..plane]);
        }
    });
    let mut dw = written_in_full(g.o * ckk);
    gemm_into(
        MatMut::row_major(&mut dw, g.o, ckk),
        MatRef::row_major(&grads, g.o, k),
        MatRef::row_major(&cols, ckk, k).t(),
        false,
        true,
    )?;
    Ok(Some(dw))
}

/// `dWᵀ [c·kh·kw, o]` → `dW [o, c·kh·kw]`, in blocks of 16 output channels on the rayon pool
/// (each block's 16 destination rows take one source line per filter position).
fn transposed_filter_gradient(dw_t: &[f32], o: usize, ckk: usize) -> Vec<f32> {
    const BLOCK: usize = 16;
    let mut dw = written_in_full(o * ckk);
    if dw.is_empty() {
        return dw;
    }
    dw.par_chunks_mut(BLOCK * ckk)
        .enumerate()
        .for_each(|(b, rows)| {
            let (o0, count) = (b * BLOCK, rows.len() / ckk);
            for (r, src) in dw_t.chunks_exact(o).enumerate() {
                for (j, &v) in src[o0..o0 + count].iter().enumerate() {
                    rows[j * ckk + r] = v;
                }
            }
        });
    dw
}

fn conv_backward_filter(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
    let wlen = g.o * g.ckk();
    let plane = g.out_plane();
    let out_image = g.o * plane;
    if g.n == 0 || out_image == 0 {
        return Ok(vec![0.0; wlen]);
    }
    if let Some(plan) = g.winograd4_batch_filter() {
        return Ok(winograd_filter_batch(g, &plan, x, dy, BATCH_FILTER_FLOATS));
    }
    if let Some(plan) = g.winograd4_filter() {
        return winograd_filter_sums(g, &plan, x, dy);
    }
    if let Some(plan) = g.winograd_batch_filter() {
        return Ok(winograd_filter_batch(g, &plan, x, dy, BATCH_FILTER_FLOATS));
    }
    if let Some(plan) = g.winograd_filter() {
        return winograd_filter_sums(g, &plan, x, dy);
    }
    if let Some(plan) = g.direct_filter() {
        return direct_filter_sums(g, &plan, x, dy);
    }
    // dWᵀ [c·kh·kw, o] += col · dyᵀ per block of output rows, accumulated into `acc`: with the
    // long pixel axis as the GEMM's inner dimension and the small channel count as its narrow
    // output, this orientation ran 2–4× faster than dW = dy · colᵀ on the U-Net's shapes.
    let one = |acc: &mut [f32],
               image: &[f32],
               grad: &[f32],
               col: &mut Vec<f32>,
               parallel: bool|
     -> Result<()> {
        if g.is_pointwise() {
            return gemm_into(
                MatMut::row_major(acc, g.c, g.o),
                MatRef::row_major(image, g.c, plane),
                MatRef::row_major(grad, g.o, plane).t(),
                true,
                parallel,
            );
        }
        for rows in row_blocks(g, parallel) {
            let (first, cols) = (rows.start * g.wo, rows.len() * g.wo);
            let block = scratch(col, g.ckk() * cols);
            im2col(g, image, block, rows);
            gemm_into(
                MatMut::row_major(acc, g.ckk(), g.o),
                MatRef::row_major(block, g.ckk(), cols),
                MatRef::strided(&grad[first..], g.o, cols, plane, 1).t(),
                true,
                parallel,
            )?;
        }
        Ok(())
    };
    if let Some(dw) = filter_gemm_over_batch(g, x, dy)? {
        return Ok(dw);
    }
    let dw_t = if g.batch_parallel() {
        per_group_sums(
            g,
            x,
            dy,
            Vec::new,
            |acc, image, grad, col| one(acc, image, grad, col, false),
            |_, _| {},
        )?
    } else {
        let mut dw_t = vec![0.0f32; wlen];
        let mut col = Vec::new();
        for (image, grad) in x.chunks(g.in_image()).zip(dy.chunks(out_image)) {
            one(&mut dw_t, image, grad, &mut col, true)?;
        }
        dw_t
    };
    Ok(transposed_filter_gradient(&dw_t, g.o, g.ckk()))
}

fn check_dy(g: &ConvGeometry, dy: &Tensor, op: &'static str) -> Result<()> {
    let want = [g.n, g.o, g.ho, g.wo];
    if dy.shape() != want {
        return shape_err(op, "output gradient", dy.shape(), format!("{want:?}"));
    }
    Ok(())
}

fn check_bias(bias: Option<&Tensor>, channels: usize, op: &'static str) -> Result<()> {
    if let Some(b) = bias
        && b.shape() != [channels]
    {
        return shape_err(op, "bias", b.shape(), format!("[{channels}]"));
    }
    Ok(())
}

// Used by the CUDA backend.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl ConvGeometry {
    /// `[n, c, h, w]` of the input.
    pub(crate) fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    /// `[o, c, kh, kw]` of the weight.
    pub(crate) fn w_shape(&self) -> [usize; 4] {
        [self.o, self.c, self.kh, self.kw]
    }
    /// `[n, o, ho, wo]` of the output.
    pub(crate) fn y_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
    }
}

/// The shape and attribute checks of the convolutions, shared with the CUDA backend so that both
/// refuse the same inputs with the same typed errors.
impl CpuBackend {
    pub(crate) fn check_conv2d(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &Conv2dAttrs,
    ) -> Result<ConvGeometry> {
        let g = ConvGeometry::new(x.shape4("conv2d input")?, w.shape4("conv2d weight")?, attrs)?;
        check_bias(bias, g.o, "conv2d")?;
        Ok(g)
    }

    pub(crate) fn check_conv2d_backward_data(
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<ConvGeometry> {
        let g = ConvGeometry::new(x_shape, w.shape4("conv2d weight")?, attrs)?;
        check_dy(&g, dy, "conv2d_backward_data")?;
        Ok(g)
    }

    pub(crate) fn check_conv2d_backward_filter(
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<ConvGeometry> {
        let g = ConvGeometry::new(x.shape4("conv2d input")?, w_shape, attrs)?;
        check_dy(&g, dy, "conv2d_backward_filter")?;
        Ok(g)
    }

    /// The output shape `[n, out, ho, wo]` of a transposed convolution.
    pub(crate) fn check_conv_transpose2d(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<[usize; 4]> {
        let [n, cin, h, wd] = x.shape4("conv_transpose2d input")?;
        let [wi, cout, kh, kw] = w.shape4("conv_transpose2d weight")?;
        if wi != cin {
            return shape_err(
                "conv_transpose2d",
                "weight",
                w.shape(),
                format!("[{cin}, out, kh, kw] for an input with {cin} channels"),
            );
        }
        check_bias(bias, cout, "conv_transpose2d")?;
        let [ho, wo] = attrs.output_size([h, wd], [kh, kw])?;
        Ok([n, cout, ho, wo])
    }
}

/// Adds the optional bias to `y` (`[n, channels, plane]`) in place.
fn add_bias(y: &mut [f32], bias: Option<&Tensor>, plane: usize) -> Result<()> {
    if let Some(bias) = bias {
        add_channel_bias_in_place(y, &bias.to_vec()?, plane);
    }
    Ok(())
}

impl CpuBackend {
    /// The values of `conv2d_backward_data` (also the transposed convolution's forward pass,
    /// which adds its bias to them in place).
    fn backward_data_values(
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Vec<f32>> {
        let g = Self::check_conv2d_backward_data(dy, w, x_shape, attrs)?;
        let (dy, w) = (dy.contiguous()?, w.contiguous()?);
        conv_backward_data(&g, dy.host_data()?, w.host_data()?)
    }
}

impl ConvOps for CpuBackend {
    fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor> {
        let g = Self::check_conv2d(x, w, bias, attrs)?;
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let mut y = conv_forward(&g, x.host_data()?, w.host_data()?)?;
        add_bias(&mut y, bias, g.out_plane())?;
        Ok(Tensor::from_vec(y, &[g.n, g.o, g.ho, g.wo])?)
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor> {
        let dx = Self::backward_data_values(dy, w, x_shape, attrs)?;
        Ok(Tensor::from_vec(dx, &x_shape)?)
    }

    fn conv2d_backward_filter(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &Conv2dAttrs,
    ) -> Result<Tensor> {
        let g = Self::check_conv2d_backward_filter(x, dy, w_shape, attrs)?;
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let dw = conv_backward_filter(&g, x.host_data()?, dy.host_data()?)?;
        Ok(Tensor::from_vec(dw, &w_shape)?)
    }

    fn conv_transpose2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor> {
        let y_shape = Self::check_conv_transpose2d(x, w, bias, attrs)?;
        let mut y = Self::backward_data_values(x, w, y_shape, &attrs.as_conv())?;
        add_bias(&mut y, bias, y_shape[2] * y_shape[3])?;
        Ok(Tensor::from_vec(y, &y_shape)?)
    }

    fn conv_transpose2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor> {
        self.conv2d(dy, w, None, &attrs.as_conv())
    }

    fn conv_transpose2d_backward_filter(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: [usize; 4],
        attrs: &ConvTranspose2dAttrs,
    ) -> Result<Tensor> {
        self.conv2d_backward_filter(dy, x, w_shape, &attrs.as_conv())
    }
}

#[cfg(test)]
mod valid_output_tests {
    use super::{source_index, valid_outputs};

    /// The closed-form range agrees with the per-element rule for every small geometry.
    #[test]
    fn valid_outputs_match_source_index() {
        for size in 0..7 {
            for out_len in 0..9 {
                for k in 0..4 {
                    for stride in 1..4 {
                        for pad in 0..4 {
                            for dil in 1..3 {
                                let (lo, hi) = valid_outputs(out_len, k, stride, pad, dil, size);
                                for o in 0..out_len {
                                    let inside = (lo..hi).contains(&o);
                                    let valid = source_index(o, k, stride, pad, dil, size);
                                    assert_eq!(
                                        inside,
                                        valid.is_some(),
                                        "o {o} k {k} s {stride} p {pad} d {dil} size {size}"
                                    );
                                    if let Some(i) = valid {
                                        assert_eq!(i, (o * stride + k * dil) - pad);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod blocked_tests {
    use magma_tensor::SeededRng;

    use super::{
        ConvGeometry, WinogradFilter, block_rows, conv_backward_data, conv_backward_filter,
        conv_forward, direct_batch, direct_filter_sums, winograd_batch, winograd_filter_batch,
        winograd_filter_sums,
    };
    use crate::attrs::Conv2dAttrs;
    use crate::cpu::{direct_conv, winograd_conv, winograd4_conv};

    /// The three passes by their definition, in f64, one loop over every (sample, output
    /// channel, output position, input channel, tap) that reads inside the image:
    /// y += x·w, dx += dy·w, dw += dy·x.
    fn direct(g: &ConvGeometry, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
        let a = &g.attrs;
        let mut y = vec![0.0f64; g.n * g.o * g.ho * g.wo];
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        for n in 0..g.n {
            for o in 0..g.o {
                for i in 0..g.ho {
                    for j in 0..g.wo {
                        let yi = ((n * g.o + o) * g.ho + i) * g.wo + j;
                        for c in 0..g.c {
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let r = (i * a.stride[0] + ki * a.dilation[0]) as isize
                                        - a.padding[0] as isize;
                                    let q = (j * a.stride[1] + kj * a.dilation[1]) as isize
                                        - a.padding[1] as isize;
                                    if r < 0 || q < 0 || r >= g.h as isize || q >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((n * g.c + c) * g.h + r as usize) * g.w + q as usize;
                                    let wi = ((o * g.c + c) * g.kh + ki) * g.kw + kj;
                                    y[yi] += f64::from(x[xi]) * f64::from(w[wi]);
                                    dx[xi] += f64::from(dy[yi]) * f64::from(w[wi]);
                                    dw[wi] += f64::from(dy[yi]) * f64::from(x[xi]);
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    fn random(len: usize, rng: &mut SeededRng) -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-5 * scale,
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// F(2×2, 3×3)'s three passes, where they apply to `g`, against [`direct`] (the default
    /// passes prefer F(4×4, 3×3)).
    fn assert_f2_passes_match(g: &ConvGeometry, rng: &mut SeededRng, what: &str) {
        let x = random(g.n * g.in_image(), rng);
        let w = random(g.o * g.ckk(), rng);
        let dy = random(g.n * g.o * g.out_plane(), rng);
        let [y, dx, dw] = direct(g, &x, &w, &dy);
        if let Some(plan) = g.winograd_filter() {
            let got = winograd_filter_sums(g, &plan, &x, &dy).unwrap();
            assert_close(&format!("F(2x2) filter gradient, {what}"), &got, &dw);
        }
        if let Some(plan) = g.winograd_forward() {
            let mut got = vec![0.0; y.len()];
            winograd_batch(
                &plan,
                &x,
                &plan.transform_filters(&w),
                &mut got,
                g.in_image(),
            );
            assert_close(&format!("F(2x2) forward, {what}"), &got, &y);
        }
        if let Some(plan) = g.winograd_backward_data() {
            let mut got = vec![0.0; dx.len()];
            let filters = plan.transform_filters(&g.flipped_filters(&w));
            winograd_batch(&plan, &dy, &filters, &mut got, g.o * g.out_plane());
            assert_close(&format!("F(2x2) data gradient, {what}"), &got, &dx);
        }
    }

    /// F(3×3, 4×4)'s per-image filter gradient, wherever an F(4×4) plan exists and the input
    /// channels fill its register tiles (also where the default prefers the batch-wide kernel or
    /// F(2×2) for speed), against [`direct`]; whether it ran.
    fn assert_f4_filter_matches(g: &ConvGeometry, rng: &mut SeededRng, what: &str) -> bool {
        let Some(plan) = g
            .winograd4_forward()
            .filter(|_| g.c.is_multiple_of(winograd_conv::FILTER_BLOCK))
        else {
            return false;
        };
        let x = random(g.n * g.in_image(), rng);
        let w = random(g.o * g.ckk(), rng);
        let dy = random(g.n * g.o * g.out_plane(), rng);
        let [_, _, dw] = direct(g, &x, &w, &dy);
        let got = winograd_filter_sums(g, &plan, &x, &dy).unwrap();
        assert_close(&format!("F(4x4) filter gradient, {what}"), &got, &dw);
        true
    }

    /// All three passes on random operands of geometry `g` against [`direct`].
    fn assert_passes_match(g: &ConvGeometry, rng: &mut SeededRng, what: &str) {
        let x = random(g.n * g.in_image(), rng);
        let w = random(g.o * g.ckk(), rng);
        let dy = random(g.n * g.o * g.out_plane(), rng);
        let [y, dx, dw] = direct(g, &x, &w, &dy);
        assert_close(
            &format!("forward, {what}"),
            &conv_forward(g, &x, &w).unwrap(),
            &y,
        );
        assert_close(
            &format!("data gradient, {what}"),
            &conv_backward_data(g, &dy, &w).unwrap(),
            &dx,
        );
        assert_close(
            &format!("filter gradient, {what}"),
            &conv_backward_filter(g, &x, &dy).unwrap(),
            &dw,
        );
    }

    /// Images large enough to be unfolded in several blocks of output rows agree with the
    /// definition in all three passes, for several strides, dilations and paddings, and so does
    /// a batch of one (the whole-image path with the GEMM shared by the threads).
    #[test]
    fn blocked_passes_match_direct_loops() {
        let mut rng = SeededRng::new(7);
        for (n, attrs) in [
            (3, Conv2dAttrs::new().with_padding([1, 1])),
            (
                3,
                Conv2dAttrs::new().with_stride([2, 2]).with_padding([1, 1]),
            ),
            (
                2,
                Conv2dAttrs::new()
                    .with_dilation([2, 2])
                    .with_padding([2, 1]),
            ),
            (1, Conv2dAttrs::new().with_padding([1, 1])),
        ] {
            let g = ConvGeometry::new([n, 40, 61, 23], [5, 40, 3, 3], &attrs).unwrap();
            let rows = block_rows(&g, false);
            assert!(
                rows < g.ho,
                "several blocks needed: {rows} rows of {}",
                g.ho
            );
            assert_passes_match(&g, &mut rng, &format!("n {n}, {attrs:?}"));
        }
    }

    /// The direct AVX-512 kernels (forward, data and filter gradients) agree with the
    /// definition: a ragged last tile (45 and 33 columns), a 5×5 kernel (kernel columns in a
    /// group of 3 and one of 2), no padding, several filter blocks, several row chunks, and rows
    /// of 16–31 columns (tiles of two rows, an odd row count leaving the last tile half used).
    /// On a CPU without AVX-512 the same geometries check the im2col path instead.
    #[test]
    fn direct_kernel_matches_direct_loops() {
        // Two threads and two images per thread (the padded buffer is reused between images),
        // whatever the machine's core count.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(direct_kernel_cases);
    }

    fn direct_kernel_cases() {
        let mut rng = SeededRng::new(8);
        let n = 4;
        for (c, o, [h, w], k, pad) in [
            (5, 16, [37, 45], 3, 1),
            (16, 8, [20, 33], 5, 2),
            (8, 24, [12, 40], 3, 0),
            (8, 16, [17, 16], 3, 1),
            (16, 8, [19, 23], 3, 1),
        ] {
            let attrs = Conv2dAttrs::new().with_padding([pad, pad]);
            let g = ConvGeometry::new([n, c, h, w], [o, c, k, k], &attrs).unwrap();
            let forward_direct = g.direct_forward().is_some();
            let data_direct = g.direct_backward_data().is_some();
            assert_eq!(
                forward_direct,
                direct_conv::enabled(),
                "forward path for {g:?}"
            );
            assert_eq!(
                data_direct,
                direct_conv::enabled() && c % 8 == 0,
                "data path for {g:?}"
            );
            let what = format!("c {c} o {o} {h}x{w} k {k} pad {pad}");
            assert_passes_match(&g, &mut rng, &what);
            // The 3×3 geometries with wide rows take the Winograd kernels above: the direct
            // kernel's own passes, called here, must agree too.
            let x = random(n * g.in_image(), &mut rng);
            let wt = random(o * g.ckk(), &mut rng);
            let dy = random(n * o * g.out_plane(), &mut rng);
            let [y, dx, dw] = direct(&g, &x, &wt, &dy);
            if let Some(plan) = g.direct_forward() {
                let mut got = vec![0.0f32; y.len()];
                direct_batch(&plan, &x, &plan.pack_filters(&wt), &mut got, g.in_image());
                assert_close(&format!("direct forward, {what}"), &got, &y);
            }
            if let Some(plan) = g.direct_backward_data() {
                let mut got = vec![0.0f32; dx.len()];
                let packed = plan.pack_filters(&g.flipped_filters(&wt));
                direct_batch(&plan, &dy, &packed, &mut got, o * g.out_plane());
                assert_close(&format!("direct data gradient, {what}"), &got, &dx);
            }
            if let Some(plan) = g.direct_filter() {
                let got = direct_filter_sums(&g, &plan, &x, &dy).unwrap();
                assert_close(&format!("direct filter gradient, {what}"), &got, &dw);
            }
        }
    }

    /// Kernels of width 2 at column stride 2 (the transposed convolutions' 2×2 stride-2 view)
    /// unfold and fold whole column pairs: all three passes agree with the definition, with an
    /// odd input width whose last column no output reads, row stride 1 and 2, and row padding.
    #[test]
    fn column_pair_unfolding_matches_direct_loops() {
        let mut rng = SeededRng::new(13);
        for (n, [c, h, w], o, [kh, kw], attrs) in [
            (
                2,
                [6, 10, 12],
                5,
                [2, 2],
                Conv2dAttrs::new().with_stride([2, 2]),
            ),
            (
                3,
                [4, 9, 13],
                3,
                [2, 2],
                Conv2dAttrs::new().with_stride([2, 2]),
            ),
            (
                2,
                [3, 7, 9],
                4,
                [3, 2],
                Conv2dAttrs::new().with_stride([1, 2]).with_padding([1, 0]),
            ),
        ] {
            let g = ConvGeometry::new([n, c, h, w], [o, c, kh, kw], &attrs).unwrap();
            assert!(super::column_pairs(&g), "column pairs for {g:?}");
            assert_passes_match(&g, &mut rng, &format!("{g:?}"));
        }
    }

    /// With one image per thread on small planes, the im2col filter gradient is one GEMM over
    /// the whole batch (`filter_gemm_over_batch`): it agrees with the definition, with odd
    /// channel counts, asymmetric padding, non-square planes and stride 2.
    #[test]
    fn filter_gemm_over_batch_matches_direct_loops() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| {
            let mut rng = SeededRng::new(11);
            for (n, [c, h, w], o, attrs) in [
                (3, [12, 8, 8], 8, Conv2dAttrs::new().with_padding([1, 1])),
                (4, [7, 9, 7], 5, Conv2dAttrs::new().with_padding([1, 0])),
                (
                    2,
                    [5, 10, 10],
                    6,
                    Conv2dAttrs::new().with_stride([2, 2]).with_padding([1, 1]),
                ),
            ] {
                let g = ConvGeometry::new([n, c, h, w], [o, c, 3, 3], &attrs).unwrap();
                let x = random(g.n * g.in_image(), &mut rng);
                let wt = random(g.o * g.ckk(), &mut rng);
                let dy = random(g.n * g.o * g.out_plane(), &mut rng);
                let [_, _, want] = direct(&g, &x, &wt, &dy);
                assert!(
                    super::filter_gemm_over_batch(&g, &x, &dy)
                        .unwrap()
                        .is_some(),
                    "the batch-rows path for {g:?}"
                );
                assert_close(
                    &format!("filter gradient over the batch, {g:?}"),
                    &conv_backward_filter(&g, &x, &dy).unwrap(),
                    &want,
                );
            }
        });
    }

    /// The Winograd kernels (forward, data and filter gradients) agree with the definition: odd output
    /// heights and widths (half-used tiles), a ragged last vector of tiles, padding 0, 1 and 2
    /// (the data gradient then pads by 2, 1 and 0), several blocks of tile rows, a register tile
    /// of tiles spanning two tile rows and a last one half used, several output-channel blocks,
    /// rows of 16 columns (two tile rows per vector, an odd number of tile rows among them, in
    /// the filter gradient too).
    /// F(4×4, 3×3) takes the three passes where it applies (rows of 16 columns: four tile rows
    /// per vector; of 17–32: two, an odd count among them; wider: runs of 16 tiles; the filter
    /// gradient in several blocks of tile rows); F(2×2, 3×3)'s three passes are checked on every
    /// geometry they take.
    /// On a CPU without AVX-512 the same geometries check the other paths instead.
    #[test]
    fn winograd_kernel_matches_direct_loops() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let mut rng = SeededRng::new(9);
            let n = 4;
            let (mut filter_winograd, mut f4_forward, mut f4_data, mut f4_filter) = (0, 0, 0, 0);
            for (c, o, [h, w], pad) in [
                (5, 16, [37, 45], 1),
                (16, 8, [30, 64], 0),
                (8, 24, [21, 33], 2),
                (24, 16, [66, 70], 1),
                (24, 16, [40, 40], 1),
                (8, 8, [65, 16], 1),
                (3, 16, [32, 32], 1),
                (16, 8, [16, 16], 1),
                (8, 16, [13, 16], 1),
                (24, 8, [20, 14], 2),
                (12, 16, [40, 18], 0),
                (16, 16, [25, 30], 1),
            ] {
                let attrs = Conv2dAttrs::new().with_padding([pad, pad]);
                let g = ConvGeometry::new([n, c, h, w], [o, c, 3, 3], &attrs).unwrap();
                let what = format!("c {c} o {o} {h}x{w} pad {pad}");
                let (tile_rows, tiles) = (g.ho.div_ceil(4), g.wo.div_ceil(4));
                let row_tiles = if tiles <= 8 {
                    tiles.next_power_of_two().max(4)
                } else {
                    16
                };
                assert_eq!(
                    g.winograd4_forward().is_some(),
                    winograd4_conv::enabled() && tile_rows * row_tiles >= 32,
                    "F(4x4) forward path for {g:?}"
                );
                f4_forward += usize::from(g.winograd4_forward().is_some());
                f4_data += usize::from(g.winograd4_backward_data().is_some());
                assert_f2_passes_match(&g, &mut rng, &what);
                assert_eq!(
                    g.winograd_forward().is_some(),
                    winograd_conv::enabled(),
                    "forward path for {g:?}"
                );
                assert_eq!(
                    g.winograd_backward_data().is_some(),
                    winograd_conv::enabled() && c % 8 == 0 && w >= 16,
                    "data path for {g:?}"
                );
                filter_winograd += usize::from(g.winograd_filter().is_some());
                f4_filter += usize::from(assert_f4_filter_matches(&g, &mut rng, &what));
                assert_passes_match(&g, &mut rng, &format!("c {c} o {o} {h}x{w} pad {pad}"));
            }
            if winograd_conv::enabled() {
                assert!(
                    filter_winograd >= 3,
                    "{filter_winograd} filter gradients on Winograd"
                );
                assert!(
                    f4_forward >= 8 && f4_data >= 6 && f4_filter >= 6,
                    "F(4x4): {f4_forward} forward, {f4_data} data and {f4_filter} filter passes"
                );
            }
        });
    }

    /// The batch-wide filter gradient (images of 64 tiles or fewer) agrees with the definition
    /// on F(2×2) and F(4×4) plans (a ragged last tile row and column among them), in one pass or
    /// several, and gives the same bits on 1 and 16 threads (where each frequency's output
    /// channels are split between tasks).
    #[test]
    fn winograd_filter_batch_matches_direct_loops() {
        if !winograd_conv::enabled() {
            eprintln!("skipped: no Winograd kernel on this CPU");
            return;
        }
        let mut rng = SeededRng::new(12);
        for (n, c, o, [h, w], pad, f4) in [
            (5, 16, 8, [16, 16], 1, false),
            (3, 8, 16, [32, 32], 1, true),
            (4, 12, 8, [30, 29], 0, true),
        ] {
            let attrs = Conv2dAttrs::new().with_padding([pad, pad]);
            let g = ConvGeometry::new([n, c, h, w], [o, c, 3, 3], &attrs).unwrap();
            let what = format!("n {n} c {c} o {o} {h}x{w} pad {pad}");
            let x = random(g.n * g.in_image(), &mut rng);
            let wt = random(g.o * g.ckk(), &mut rng);
            let dy = random(g.n * g.o * g.out_plane(), &mut rng);
            let [_, _, want] = direct(&g, &x, &wt, &dy);
            let run = |threads: usize, max_floats: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| match (g.winograd4_batch_filter(), f4) {
                    (Some(plan), true) => winograd_filter_batch(&g, &plan, &x, &dy, max_floats),
                    (None, false) => {
                        let plan = g
                            .winograd_batch_filter()
                            .unwrap_or_else(|| panic!("{what}: F(2x2) batch-wide"));
                        winograd_filter_batch(&g, &plan, &x, &dy, max_floats)
                    }
                    (plan, _) => panic!("{what}: F(4x4) batch-wide plan {plan:?}"),
                })
            };
            let one_pass = run(16, usize::MAX);
            assert_close(&format!("batch-wide, {what}"), &one_pass, &want);
            assert_eq!(run(1, usize::MAX), one_pass, "{what}: 1 thread against 16");
            // Two images per pass (and one left over where n is odd).
            let per_image = match g.winograd4_batch_filter() {
                Some(plan) => 36 * (c + o) * WinogradFilter::image_tiles(&plan),
                None => {
                    let plan = g.winograd_batch_filter().unwrap();
                    16 * (c + o) * WinogradFilter::image_tiles(&plan)
                }
            };
            let passes = run(16, 2 * per_image);
            assert_close(
                &format!("batch-wide in passes of 2, {what}"),
                &passes,
                &want,
            );
        }
    }

    /// Past the last output column the filter-gradient kernel's vectors still cover image
    /// columns that no output reads at some taps; an infinite value there must not leak into
    /// those taps' gradients (0·∞ = NaN), only into the one tap that reads it.
    #[test]
    fn filter_gradient_ignores_columns_no_output_reads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let mut rng = SeededRng::new(10);
            let attrs = Conv2dAttrs::new();
            let g = ConvGeometry::new([4, 8, 47, 47], [8, 8, 3, 3], &attrs).unwrap();
            let mut x = random(4 * g.in_image(), &mut rng);
            // Column 45 of channel 0, row 5, first image: only tap kj = 2 at output column 43
            // reads it (wo = 45).
            x[5 * 47 + 45] = f32::INFINITY;
            let wt = random(g.o * g.ckk(), &mut rng);
            let dy = random(4 * g.o * g.out_plane(), &mut rng);
            let [_, _, want] = direct(&g, &x, &wt, &dy);
            // The direct kernel (the Winograd kernel takes this geometry by default: below).
            let got = match g.direct_filter() {
                Some(plan) => direct_filter_sums(&g, &plan, &x, &dy).unwrap(),
                None => conv_backward_filter(&g, &x, &dy).unwrap(),
            };
            for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.is_finite(), b.is_finite(), "element {i}: {a} vs {b}");
                if b.is_finite() {
                    assert!(
                        (f64::from(a) - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "element {i}"
                    );
                }
            }
            assert!(
                want.iter().any(|v| !v.is_finite()),
                "the infinity reaches its own tap"
            );
            // The Winograd kernel mixes a tile's 16 inputs in every transformed value, so the
            // infinity reaches every tap of its channel's filters (as NaN or ±∞): never a finite
            // value where the definition has none.
            if winograd_conv::enabled() {
                let plan = g
                    .winograd_filter()
                    .expect("4 images on 2 threads, 23 × 32 tiles");
                let f2 = winograd_filter_sums(&g, &plan, &x, &dy).unwrap();
                let f4 = g
                    .winograd4_filter()
                    .map(|plan| winograd_filter_sums(&g, &plan, &x, &dy).unwrap());
                assert_eq!(
                    f4.is_some(),
                    winograd4_conv::enabled(),
                    "F(4x4): 12 × 16 tiles"
                );
                for wino in [Some(f2), f4].into_iter().flatten() {
                    for (i, (&a, &b)) in wino.iter().zip(&want).enumerate() {
                        assert!(b.is_finite() || !a.is_finite(), "element {i}: {a} vs {b}");
                    }
                }
            }
        });
    }
}
