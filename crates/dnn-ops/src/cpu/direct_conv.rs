//! Direct convolution with AVX-512 for the stride-1, dilation-1 convolutions that dominate a
//! U-Net (and, through flipped filters, their data gradients).
//!
//! im2col + GEMM copies every input value `kh·kw` times into the unfolded matrix, and the GEMM
//! copies that again into its packed panels; on the wide top levels of a U-Net (16–32 channels,
//! 64²–128²) those copies cost as much as the multiplications. Here the register tile reads the
//! input directly: one zero-padded copy of the image (so that no load needs a bounds test), and
//! per output row a tile of [`TILE_W`] columns × [`OUT_BLOCK`] output channels held in 16
//! vector registers, updated by one fused multiply-add per (input channel, tap, output channel,
//! half-tile). The filter is repacked so that the [`OUT_BLOCK`] values one step needs are
//! adjacent.
//!
//! Chosen at run time: a CPU without AVX-512F, or `MAGMA_CPU_CONV=im2col`, takes the im2col path,
//! which is also the path for every other geometry. Within an image the summation order is fixed
//! (input channel, kernel row, kernel column); the filter gradient adds per-thread partial sums
//! over groups of images, so, as on the im2col path, results depend on the thread count only.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, __mmask16, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_reduce_add_ps, _mm512_set1_ps, _mm512_setzero_ps,
};

/// The largest filter tensor (values) the direct kernel takes: 2 MiB of f32, a core's L2 twice.
pub(crate) const MAX_FILTERS: usize = 512 * 1024;

/// Output channels per register tile.
pub(crate) const OUT_BLOCK: usize = 8;
/// Output columns per register tile on rows at least this wide (two 16-float vectors, one
/// row); narrower rows (16–31 columns) take tiles of one vector on two rows.
pub(crate) const TILE_W: usize = 32;

/// Whether this process uses the direct kernels: AVX-512F present and not turned off with
/// `MAGMA_CPU_CONV=im2col`.
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        let wanted = std::env::var("MAGMA_CPU_CONV").map_or(true, |v| v != "im2col");
        wanted && cpu_has_avx512f()
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx512f() -> bool {
    false
}

/// A stride-1, dilation-1 convolution of one image `[c, h, w]` with `o` filters `[c, kh, kw]`
/// and zero padding `(ph, pw)`, in the padded layout the kernel reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectPlan {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ph: usize,
    pw: usize,
    ho: usize,
    wo: usize,
    /// Register tiles per output row, their width and their height in output rows.
    tiles: usize,
    tile_w: usize,
    tile_rows: usize,
    /// Rows and row length of the padded image.
    hp: usize,
    wp: usize,
}

impl DirectPlan {
    /// The plan, if the direct kernel handles this problem: output channels in whole blocks,
    /// output rows at least 16 wide (narrower rows would waste much of each vector; the GEMM path
    /// is efficient there), padding smaller than the kernel, a kernel larger than 1×1 (a 1×1
    /// convolution needs no unfolding and is one GEMM), and filters of at most [`MAX_FILTERS`]
    /// values (every row tile streams all of them; measured up to 256 → 128 channels, 3×3).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        [c, h, w]: [usize; 3],
        o: usize,
        [kh, kw]: [usize; 2],
        [ph, pw]: [usize; 2],
    ) -> Option<Self> {
        if !enabled() || o == 0 || !o.is_multiple_of(OUT_BLOCK) || c == 0 || h == 0 || w == 0 {
            return None;
        }
        if kh * kw <= 1 || o * c * kh * kw > MAX_FILTERS {
            return None;
        }
        if ph >= kh || pw >= kw || h + 2 * ph < kh || w + 2 * pw < kw {
            return None;
        }
        let (ho, wo) = (h + 2 * ph - kh + 1, w + 2 * pw - kw + 1);
        if wo < 16 || ho == 0 {
            return None;
        }
        let tile_w = if wo >= TILE_W { TILE_W } else { 16 };
        let tile_rows = TILE_W / tile_w;
        let tiles = wo.div_ceil(tile_w);
        Some(Self {
            c,
            h,
            w,
            o,
            kh,
            kw,
            ph,
            pw,
            ho,
            wo,
            tiles,
            tile_w,
            tile_rows,
            // A tile of two rows may start on the last output row: one more row of zeros.
            hp: h + 2 * ph + tile_rows - 1,
            // Every tile's loads stay inside the row, the last tile's unused columns included.
            wp: tiles * tile_w + kw - 1,
        })
    }

    /// Elements of one padded image.
    pub(crate) fn padded_len(&self) -> usize {
        self.c * self.hp * self.wp
    }

    /// Elements of one output image `[o, ho, wo]`.
    pub(crate) fn out_len(&self) -> usize {
        self.o * self.ho * self.wo
    }

    /// Copies one image `[c, h, w]` into `padded` (`padded_len` elements), zeros around it
    /// (only the border is zeroed: the interior is written once).
    pub(crate) fn pad_image(&self, image: &[f32], padded: &mut [f32]) {
        let channel_len = self.hp * self.wp;
        for (ch, channel) in padded
            .chunks_exact_mut(channel_len)
            .enumerate()
            .take(self.c)
        {
            let (top, rest) = channel.split_at_mut(self.ph * self.wp);
            top.fill(0.0);
            let (body, bottom) = rest.split_at_mut(self.h * self.wp);
            bottom.fill(0.0);
            for (r, row) in body.chunks_exact_mut(self.wp).enumerate() {
                let src = &image[(ch * self.h + r) * self.w..][..self.w];
                row[..self.pw].fill(0.0);
                row[self.pw..self.pw + self.w].copy_from_slice(src);
                row[self.pw + self.w..].fill(0.0);
            }
        }
    }

    /// Filters `[o, c, kh, kw]` repacked as `[o / OUT_BLOCK, c, kh, kw, OUT_BLOCK]`.
    pub(crate) fn pack_filters(&self, w: &[f32]) -> Vec<f32> {
        let taps = self.c * self.kh * self.kw;
        let mut packed = vec![0.0f32; self.o * taps];
        for (o, filter) in w.chunks_exact(taps).enumerate().take(self.o) {
            let (block, lane) = (o / OUT_BLOCK, o % OUT_BLOCK);
            for (t, &v) in filter.iter().enumerate() {
                packed[(block * taps + t) * OUT_BLOCK + lane] = v;
            }
        }
        packed
    }

    /// `out` (`[o, ho, wo]`) = the convolution of one padded image with packed filters.
    pub(crate) fn forward(&self, padded: &[f32], packed: &[f32], out: &mut [f32]) {
        assert_eq!(padded.len(), self.padded_len(), "direct conv: padded image");
        assert_eq!(
            packed.len(),
            self.o * self.c * self.kh * self.kw,
            "direct conv: filters"
        );
        assert_eq!(out.len(), self.out_len(), "direct conv: output");
        debug_assert!(
            cpu_has_avx512f(),
            "a DirectPlan exists only where AVX-512F does"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `DirectPlan::new` returns a plan only when `enabled()`, which checked at run
        // time that the CPU has AVX-512F, the one feature `forward_avx512` is compiled for.
        unsafe {
            forward_avx512(self, padded, packed, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("DirectPlan::new returns None without AVX-512")
    }
}

impl DirectPlan {
    /// `dw` (`[o, c, kh, kw]`) += the filter gradient of one image, `Σ dy[o, i, j] ·
    /// padded[c, i + ki, j + kj]` over the output positions, from the padded image and the
    /// output gradient `dy` (`[o, ho, wo]`).
    pub(crate) fn filter_gradient(&self, padded: &[f32], dy: &[f32], dw: &mut [f32]) {
        assert_eq!(padded.len(), self.padded_len(), "direct conv: padded image");
        assert_eq!(dy.len(), self.out_len(), "direct conv: output gradient");
        assert_eq!(
            dw.len(),
            self.o * self.c * self.kh * self.kw,
            "direct conv: filters"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `forward`: a plan exists only where the CPU has AVX-512F.
        unsafe {
            filter_gradient_avx512(self, padded, dy, dw)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("DirectPlan::new returns None without AVX-512")
    }
}

/// The lanes `0..n` (n ≤ 16) of a 16-float vector.
#[cfg(target_arch = "x86_64")]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn forward_avx512(p: &DirectPlan, padded: &[f32], packed: &[f32], out: &mut [f32]) {
    if p.tile_rows == 1 {
        forward_tiles::<1, 2>(p, padded, packed, out)
    } else {
        forward_tiles::<2, 1>(p, padded, packed, out)
    }
}

/// The forward pass with register tiles of `R` output rows × `V` vectors of 16 columns ×
/// [`OUT_BLOCK`] output channels (`R·V·OUT_BLOCK` = 16 accumulators).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn forward_tiles<const R: usize, const V: usize>(
    p: &DirectPlan,
    padded: &[f32],
    packed: &[f32],
    out: &mut [f32],
) {
    let taps = p.c * p.kh * p.kw;
    let plane = p.ho * p.wo;
    let tile_w = 16 * V;
    debug_assert_eq!((tile_w, R), (p.tile_w, p.tile_rows));
    let span = tile_w + p.kw - 1;
    for oh0 in (0..p.ho).step_by(R) {
        let rows = (p.ho - oh0).min(R);
        for t in 0..p.tiles {
            let x0 = t * tile_w;
            let valid = (p.wo - x0).min(tile_w);
            let mut masks = [0; V];
            for (v, m) in masks.iter_mut().enumerate() {
                *m = lanes(valid.saturating_sub(16 * v));
            }
            for block in 0..p.o / OUT_BLOCK {
                let filters = &packed[block * taps * OUT_BLOCK..][..taps * OUT_BLOCK];
                let mut acc = [[[_mm512_setzero_ps(); V]; R]; OUT_BLOCK];
                for ch in 0..p.c {
                    for ki in 0..p.kh {
                        let mut input = [&padded[..0]; R];
                        for (r, row) in input.iter_mut().enumerate() {
                            *row = &padded[(ch * p.hp + oh0 + r + ki) * p.wp + x0..][..span];
                        }
                        let tap0 = (ch * p.kh + ki) * p.kw;
                        for kj in 0..p.kw {
                            let mut a = [[_mm512_setzero_ps(); V]; R];
                            for (ar, row) in a.iter_mut().zip(&input) {
                                let seg = &row[kj..kj + tile_w];
                                for (v, av) in ar.iter_mut().enumerate() {
                                    // SAFETY: `seg` holds 16·V floats; vector v reads floats
                                    // 16v..16v+16 of it.
                                    *av = unsafe { _mm512_loadu_ps(seg.as_ptr().add(16 * v)) };
                                }
                            }
                            let wv = &filters[(tap0 + kj) * OUT_BLOCK..][..OUT_BLOCK];
                            for (acc_o, &wo) in acc.iter_mut().zip(wv) {
                                let b = _mm512_set1_ps(wo);
                                for (acc_r, ar) in acc_o.iter_mut().zip(&a) {
                                    for (acc_v, &av) in acc_r.iter_mut().zip(ar) {
                                        *acc_v = _mm512_fmadd_ps(b, av, *acc_v);
                                    }
                                }
                            }
                        }
                    }
                }
                for (lane, acc_o) in acc.iter().enumerate() {
                    let o = block * OUT_BLOCK + lane;
                    for (r, acc_r) in acc_o.iter().enumerate().take(rows) {
                        let dst = &mut out[o * plane + (oh0 + r) * p.wo + x0..][..valid];
                        store_masked(dst, acc_r, &masks);
                    }
                }
            }
        }
    }
}

/// Writes the first `dst.len()` (≤ 16·V) lanes of the vectors `v` into `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn store_masked<const V: usize>(dst: &mut [f32], v: &[__m512; V], masks: &[__mmask16; V]) {
    debug_assert_eq!(
        masks.iter().map(|m| m.count_ones()).sum::<u32>(),
        dst.len() as u32
    );
    for (i, (&vec, &mask)) in v.iter().zip(masks).enumerate() {
        if mask == 0 {
            break;
        }
        // SAFETY: mask i selects lanes 0..min(16, len − 16i) in order (lanes(valid − 16i)),
        // so every written address lies inside `dst`; a vector with an empty mask is not
        // written, so its base pointer 16i stays within the slice.
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(16 * i), mask, vec) };
    }
}

/// Kernel columns per filter-gradient tile ([`OUT_BLOCK`] × this many vector accumulators).
#[cfg(target_arch = "x86_64")]
const FILTER_COLS: usize = 3;

/// Output positions per filter-gradient chunk: the chunk's gradient rows for one block of
/// output channels (8 × 512 floats, 16 KiB) stay in L1 while every (input channel, kernel row)
/// reads them.
#[cfg(target_arch = "x86_64")]
const FILTER_CHUNK: usize = 512;

/// The filter gradient as vector partial sums: for each block of 8 output channels, the output
/// rows are taken in chunks; per chunk, every (input channel, kernel row, group of up to 3
/// kernel columns) loads its 8 × 3 accumulators from `partial`, adds the chunk's products and
/// stores them back; the 16 lanes of each accumulator are added at the end. The order of all
/// additions is fixed by the geometry.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn filter_gradient_avx512(p: &DirectPlan, padded: &[f32], dy: &[f32], dw: &mut [f32]) {
    let plane = p.ho * p.wo;
    let groups = p.kw.div_ceil(FILTER_COLS);
    let per_tap_row = OUT_BLOCK * FILTER_COLS;
    let chunk_rows = (FILTER_CHUNK / p.wo).max(1);
    let row_len = p.wo.next_multiple_of(16);
    let mut partial = vec![_mm512_setzero_ps(); p.c * p.kh * groups * per_tap_row];
    // The chunk's gradient rows, `[row][lane][row_len]` with zeros past `wo`: one contiguous
    // block (the 8 channels' rows of a plane are a multiple of 4 KiB apart in `dy`, which
    // would map them onto the same L1 sets) that needs no masked loads.
    let mut chunk = vec![0.0f32; chunk_rows * OUT_BLOCK * row_len];
    for block in 0..p.o / OUT_BLOCK {
        partial.fill(_mm512_setzero_ps());
        let grads = &dy[block * OUT_BLOCK * plane..][..OUT_BLOCK * plane];
        for r0 in (0..p.ho).step_by(chunk_rows) {
            let rows = r0..(r0 + chunk_rows).min(p.ho);
            for (r, oh) in rows.clone().enumerate() {
                for lane in 0..OUT_BLOCK {
                    let dst = &mut chunk[(r * OUT_BLOCK + lane) * row_len..][..row_len];
                    dst[..p.wo].copy_from_slice(&grads[lane * plane + oh * p.wo..][..p.wo]);
                }
            }
            for ch in 0..p.c {
                for ki in 0..p.kh {
                    for group in 0..groups {
                        let kj0 = group * FILTER_COLS;
                        let at = ((ch * p.kh + ki) * groups + group) * per_tap_row;
                        let acc = &mut partial[at..at + per_tap_row];
                        let tap = FilterTap { ch, ki, kj0 };
                        match p.kw - kj0 {
                            1 => filter_chunk::<1>(p, padded, &chunk, tap, rows.clone(), acc),
                            2 => filter_chunk::<2>(p, padded, &chunk, tap, rows.clone(), acc),
                            _ => filter_chunk::<3>(p, padded, &chunk, tap, rows.clone(), acc),
                        }
                    }
                }
            }
        }
        for ch in 0..p.c {
            for ki in 0..p.kh {
                for group in 0..groups {
                    let kj0 = group * FILTER_COLS;
                    let at = ((ch * p.kh + ki) * groups + group) * per_tap_row;
                    for lane in 0..OUT_BLOCK {
                        let o = block * OUT_BLOCK + lane;
                        let dst = ((o * p.c + ch) * p.kh + ki) * p.kw;
                        for kj in kj0..p.kw.min(kj0 + FILTER_COLS) {
                            let v = partial[at + lane * FILTER_COLS + (kj - kj0)];
                            dw[dst + kj] += _mm512_reduce_add_ps(v);
                        }
                    }
                }
            }
        }
    }
}

/// Input channel, kernel row and first kernel column of a filter-gradient tile.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct FilterTap {
    ch: usize,
    ki: usize,
    kj0: usize,
}

/// Adds the products of output rows `rows` (their gradients in `chunk`, laid out as in
/// [`filter_gradient_avx512`]) to the `OUT_BLOCK × K` accumulators `acc` (laid out
/// `[lane][FILTER_COLS]`) of one filter-gradient tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn filter_chunk<const K: usize>(
    p: &DirectPlan,
    padded: &[f32],
    chunk: &[f32],
    tap: FilterTap,
    rows: std::ops::Range<usize>,
    acc: &mut [__m512],
) {
    let row_len = p.wo.next_multiple_of(16);
    let mut regs = [[_mm512_setzero_ps(); K]; OUT_BLOCK];
    for (lane, r) in regs.iter_mut().enumerate() {
        r.copy_from_slice(&acc[lane * FILTER_COLS..lane * FILTER_COLS + K]);
    }
    for (r, oh) in rows.enumerate() {
        let row = &padded[(tap.ch * p.hp + oh + tap.ki) * p.wp..][..p.wp];
        let grads = &chunk[r * OUT_BLOCK * row_len..][..OUT_BLOCK * row_len];
        for x0 in (0..p.wo).step_by(16) {
            // Past the last output column the gradient is zero, but the image there may hold
            // ±∞ or NaN that no output reads at this tap: those lanes load zeros (0·∞ = NaN).
            let mask = lanes(p.wo - x0);
            let mut xv = [_mm512_setzero_ps(); K];
            for (k, v) in xv.iter_mut().enumerate() {
                let seg = &row[x0 + tap.kj0 + k..][..16];
                // SAFETY: `seg` holds 16 floats (the padded row is tiles·tile_w + kw − 1 long,
                // x0 + 16 ≤ tiles·tile_w and kj0 + k ≤ kw − 1); masked-off lanes are not read.
                *v = unsafe { _mm512_maskz_loadu_ps(mask, seg.as_ptr()) };
            }
            for (lane, acc_lane) in regs.iter_mut().enumerate() {
                let g = &grads[lane * row_len + x0..][..16];
                // SAFETY: `g` holds 16 floats (rows are padded to a multiple of 16).
                let d = unsafe { _mm512_loadu_ps(g.as_ptr()) };
                for (a, &x) in acc_lane.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(d, x, *a);
                }
            }
        }
    }
    for (lane, r) in regs.iter().enumerate() {
        acc[lane * FILTER_COLS..lane * FILTER_COLS + K].copy_from_slice(r);
    }
}
