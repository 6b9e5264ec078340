//! Winograd F(2×2, 3×3) convolution with AVX-512 for the 3×3, stride-1 convolutions of a U-Net's
//! wide levels (and, through flipped filters, their data gradients).
//!
//! Each 2×2 block of outputs ("tile") of one output channel is computed from the 4×4 input patch
//! under it: the patch is transformed (`V = Bᵀ d B`, additions only), multiplied element-wise
//! with the transformed filter (`U = G g Gᵀ`, 16 values per (output, input) channel pair) and
//! summed over the input channels, and the 16 sums are transformed back (`Y = Aᵀ M A`). The sum
//! over input channels, 16 multiply-adds per tile and channel pair, is where the time goes: 4 per
//! output against the direct kernel's 9, so the multiplications are 2.25× fewer (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Per image, a block of tile rows at a time (so that the transformed input stays in L2):
//! the input transform vectorised over 16 tiles of a tile row (even and odd columns split by a
//! two-register permute), the channel sums as register tiles of [`OUT_BLOCK`] output channels ×
//! 32 tiles (16 accumulators, one fused multiply-add per (frequency, input channel, output
//! channel, 16 tiles)), then the output transform of those 32 tiles, interleaved back into
//! output columns. Rounding: every output is a fixed sum in f32 of 16 products of transformed
//! values; with the transforms' small integer and ½ coefficients its error stays within a few
//! units of the last place of the direct sum's magnitude (checked against f64 in the tests).
//!
//! Chosen at run time (see `conv.rs`): AVX-512F present and `MAGMA_CPU_CONV` neither `direct`
//! nor `im2col`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, __m512i, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_set1_ps, _mm512_setr_epi32,
    _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps, _mm512_sub_ps,
};

use rayon::prelude::*;

use super::buffers::line_aligned_len;
use super::direct_conv;

/// Output channels per register tile of the channel sums.
pub(crate) const OUT_BLOCK: usize = 8;
/// Tiles per register tile of the channel sums (two vectors of 16; F(4×4)'s too).
pub(crate) const GROUP: usize = 32;
/// Tiles per vector.
const LANES: usize = 16;

/// The transformed input of one block of tile rows is kept within this many floats (512 KiB),
/// unless one register tile of tiles (32) needs more: blocks hold whole register tiles.
const MAX_BLOCK_FLOATS: usize = 128 * 1024;

/// The greatest common divisor of `a` and `b`.
const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Tile rows per block of the forward pass, for both plans (F(2×2) and F(4×4); their register
/// tiles of the channel sums are both [`GROUP`] tiles): enough rows for a few register tiles,
/// their transformed input (`per_row` floats a tile row) within [`MAX_BLOCK_FLOATS`], yet
/// whole register tiles even past that budget — a block of 16 tiles (two 16² tile rows of 512
/// channels, one 64² tile row of 128) left half of every channel sum's lanes idle — and whole
/// vectors of tiles (`rows_per_vector`), no more than the image's `tile_rows`.
pub(crate) fn forward_block_rows(
    per_row: usize,
    row_tiles: usize,
    tile_rows: usize,
    rows_per_vector: usize,
) -> usize {
    let group_rows = GROUP / gcd(GROUP, row_tiles);
    (4 * GROUP)
        .div_ceil(row_tiles)
        .min((MAX_BLOCK_FLOATS / per_row).max(1))
        .next_multiple_of(group_rows)
        .min(tile_rows)
        .next_multiple_of(rows_per_vector)
}
/// The filter gradient's transformed input and output gradient of one block: from 1 MiB (so
/// that with few channels they stay in L2 between the transforms and the sums; at 8 threads
/// larger blocks made the 128² and 64² levels memory-bound) up to 4 MiB for many channel pairs
/// (`16·o·c·16` floats and more: a whole 32² image of 128 + 64 channels in one block, so each
/// register tile's lanes are added up once per image).
const MIN_FILTER_BLOCK_FLOATS: usize = 256 * 1024;
const MAX_FILTER_BLOCK_FLOATS: usize = 1024 * 1024;
/// Output and input channels per register tile of the filter gradient's sums over tiles.
pub(crate) const FILTER_BLOCK: usize = 4;
/// The fewest tiles per group of images (one thread's share of the batch) for which the filter
/// gradient takes the Winograd kernel: below, the accumulator's zeroing and the sum of the
/// groups' accumulators cost more than the multiplications saved (measured, 2 and 8 threads on
/// 2 cores: a 16² plane (64 tiles) wins with 4 images per thread and loses with one).
const FILTER_MIN_TILES: usize = 256;
/// Tiles per pass of the filter gradient's sums (the output-gradient rows of a register tile,
/// 16 KiB, stay in L1 while every input-channel block reads them).
pub(crate) const FILTER_CHUNK: usize = 1024;

/// Whether this process uses the Winograd kernels: the direct kernels' conditions (AVX-512F,
/// not `MAGMA_CPU_CONV=im2col`) and not `MAGMA_CPU_CONV=direct`. (`MAGMA_CPU_CONV=no-winograd-filter`
/// keeps them for the forward pass and data gradient only: [`filter_enabled`].)
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        let wanted = std::env::var("MAGMA_CPU_CONV").map_or(true, |v| v != "direct");
        wanted && direct_conv::enabled()
    })
}

/// Whether the filter gradient uses the Winograd kernel where it can: [`enabled`] and not
/// `MAGMA_CPU_CONV=no-winograd-filter` (a switch for benchmarks).
pub(crate) fn filter_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        enabled() && std::env::var("MAGMA_CPU_CONV").map_or(true, |v| v != "no-winograd-filter")
    })
}

/// A 3×3, stride-1, dilation-1 convolution of one image `[c, h, w]` with `o` filters `[c, 3, 3]`
/// and zero padding `(ph, pw)`, each below 3, in the layout the kernels read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WinogradPlan {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ph: usize,
    pw: usize,
    ho: usize,
    wo: usize,
    /// Tile rows of the output, and tiles per tile row rounded up to whole vectors (or to 8,
    /// half a vector, when `paired`).
    tile_rows: usize,
    row_tiles: usize,
    /// Whether each vector of 16 tiles holds two tile rows of 8 (rows of at most 16 columns).
    paired: bool,
    /// Tile rows per block (the transformed input of a block is reused by every output channel).
    block_rows: usize,
    /// Tile rows per block of the filter gradient (transformed input and output gradient).
    filter_rows: usize,
    /// Rows and row length of the padded image.
    hp: usize,
    wp: usize,
}

impl WinogradPlan {
    /// The plan, if the Winograd kernels handle this problem: a 3×3 kernel, output channels in
    /// whole blocks, output rows at least 16 columns wide (8 tiles; narrower rows would leave
    /// most of each vector idle), and padding below 3.
    pub(crate) fn new([c, h, w]: [usize; 3], o: usize, [ph, pw]: [usize; 2]) -> Option<Self> {
        if !enabled() || o == 0 || !o.is_multiple_of(OUT_BLOCK) || c == 0 || h == 0 || w == 0 {
            return None;
        }
        if ph >= 3 || pw >= 3 || h + 2 * ph < 3 {
            return None;
        }
        let (ho, wo) = (h + 2 * ph - 2, (w + 2 * pw).checked_sub(2)?);
        if wo < LANES || ho == 0 {
            return None;
        }
        let tile_rows = ho.div_ceil(2);
        // Rows of at most 8 tiles (16 columns) share each vector between two tile rows.
        let paired = wo.div_ceil(2) <= LANES / 2;
        let row_tiles = if paired {
            LANES / 2
        } else {
            wo.div_ceil(2).next_multiple_of(LANES)
        };
        let rows_per_vector = if paired { 2 } else { 1 };
        let block_rows =
            forward_block_rows(16 * c * row_tiles, row_tiles, tile_rows, rows_per_vector);
        let filter_budget =
            (16 * o * c * LANES).clamp(MIN_FILTER_BLOCK_FLOATS, MAX_FILTER_BLOCK_FLOATS);
        let filter_rows = (filter_budget / (16 * (c + o) * row_tiles))
            .max(1)
            .min(tile_rows)
            .next_multiple_of(rows_per_vector);
        Some(Self {
            c,
            h,
            w,
            o,
            ph,
            pw,
            ho,
            wo,
            tile_rows,
            row_tiles,
            paired,
            block_rows,
            filter_rows,
            // Tile row r reads padded rows 2r..2r + 4 (the last vector of paired rows may read
            // one tile row past the last); tile t reads columns 2t..2t + 4, and the permuted
            // loads of the last vector of tiles read up to column 2·row_tiles + 1.
            hp: 2 * (tile_rows + rows_per_vector),
            wp: 2 * row_tiles + 2,
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

    /// Floats of the per-thread scratch (`scratch` of [`WinogradPlan::forward`]): the
    /// transformed input of a block of tile rows and the channel sums of one register tile.
    pub(crate) fn scratch_len(&self) -> usize {
        let tiles = (self.block_rows * self.row_tiles).next_multiple_of(GROUP);
        16 * self.c * tiles + 16 * OUT_BLOCK * GROUP
    }

    /// Copies one image `[c, h, w]` into `padded` (`padded_len` elements) at row `ph`, column
    /// `pw`, zeros around it (only the border is zeroed: the interior is written once).
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

    /// Filters `[o, c, 3, 3]` transformed (`U = G g Gᵀ`) and laid out
    /// `[o / OUT_BLOCK, 16, c, OUT_BLOCK]`: for one output block and frequency, the values of
    /// consecutive input channels are adjacent.
    pub(crate) fn transform_filters(&self, w: &[f32]) -> Vec<f32> {
        assert_eq!(w.len(), self.o * self.c * 9, "winograd conv: filters");
        let mut packed = vec![0.0f32; self.o * self.c * 16];
        // One output block per task (serial, a 256 × 128 layer's transform held up 8 threads).
        packed
            .par_chunks_mut(16 * self.c * OUT_BLOCK)
            .enumerate()
            .for_each(|(block, dst)| {
                for lane in 0..OUT_BLOCK {
                    let o = block * OUT_BLOCK + lane;
                    for ch in 0..self.c {
                        let g = &w[(o * self.c + ch) * 9..][..9];
                        for (xi, u) in filter_transform(g).into_iter().enumerate() {
                            dst[(xi * self.c + ch) * OUT_BLOCK + lane] = u;
                        }
                    }
                }
            });
        packed
    }

    /// `out` (`[o, ho, wo]`) = the convolution of one padded image with transformed filters;
    /// `scratch` holds at least `scratch_len` floats (any contents).
    pub(crate) fn forward(
        &self,
        padded: &[f32],
        filters: &[f32],
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        assert_eq!(
            padded.len(),
            self.padded_len(),
            "winograd conv: padded image"
        );
        assert_eq!(
            filters.len(),
            self.o * self.c * 16,
            "winograd conv: filters"
        );
        assert_eq!(out.len(), self.out_len(), "winograd conv: output");
        assert!(
            scratch.len() >= self.scratch_len(),
            "winograd conv: scratch"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `WinogradPlan::new` returns a plan only when `enabled()`, which checked at run
        // time that the CPU has AVX-512F, the one feature `forward_avx512` is compiled for.
        unsafe {
            forward_avx512(self, padded, filters, out, scratch)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("WinogradPlan::new returns None without AVX-512")
    }
}

/// A Winograd plan's filter gradient, summed over a group of images (`conv.rs` runs one group
/// per thread): per image, [`WinogradFilter::filter_accumulate`] adds the sums over its tiles of
/// the transformed products, one per (frequency, output, input channel), into an accumulator of
/// [`WinogradFilter::filter_acc_len`] floats (each register tile's 16 lanes are added up once
/// per pass over a block's tiles, so the accumulator is 16× smaller than the lanes themselves
/// and stays in L2); [`WinogradFilter::filter_finish`] transforms the result back once per
/// group. F(2×2)'s [`WinogradPlan`] computes it as F(3×3, 2×2), F(4×4)'s as F(3×3, 4×4).
pub(crate) trait WinogradFilter: Sync {
    /// Whether the kernel takes a group of `images`: input channels in whole register tiles and
    /// enough tiles per block to repay the accumulator.
    fn filter_supported(&self, images: usize) -> bool;
    /// Floats of the accumulator: one sum per (frequency, o, c).
    fn filter_acc_len(&self) -> usize;
    /// Floats of the per-thread scratch: a padded image and the transformed input and output
    /// gradient of one block.
    fn filter_scratch_len(&self) -> usize;
    /// `acc` += the lane-wise sums over the tiles of one `image` (`[c, h, w]`) of the
    /// transformed output gradient times the transformed input, with `dy` its output gradient
    /// (`[o, ho, wo]`); `scratch` holds at least `filter_scratch_len` floats (any contents).
    fn filter_accumulate(&self, image: &[f32], dy: &[f32], acc: &mut [f32], scratch: &mut [f32]);
    /// `dw_k` (`[c, 3, 3]`, output channel `k`) += the filter transform's transpose applied to
    /// the sums of `acc`.
    fn filter_finish_channel(&self, acc: &[f32], k: usize, dw_k: &mut [f32]);

    /// `dw` (`[o, c, 3, 3]`) += the filter transform's transpose applied to the sums of `acc`.
    fn filter_finish(&self, acc: &[f32], dw: &mut [f32]) {
        let [o, c] = self.channels();
        assert_eq!(dw.len(), o * c * 9, "winograd conv: filters");
        for (k, dw_k) in dw.chunks_exact_mut(c * 9).enumerate() {
            self.filter_finish_channel(acc, k, dw_k);
        }
    }

    // The batch-wide filter gradient, for small images (see `conv.rs`): every image's
    // transforms at once, then the sums over all of them per frequency.

    /// Output and input channels `[o, c]`.
    fn channels(&self) -> [usize; 2];
    /// Transformed values per tile: 16 (F(2×2)) or 36 (F(4×4)).
    fn frequencies(&self) -> usize;
    /// Tiles of one whole image as the transforms lay them out (whole vectors of 16).
    fn image_tiles(&self) -> usize;
    /// Elements of one padded image.
    fn padded_len(&self) -> usize;
    /// The transforms of one whole image: `v` (`[frequencies, c, image_tiles]`) from `image`
    /// (`[c, h, w]`, padded into `padded`, `padded_len` floats), `d` (`[frequencies, o,
    /// image_tiles]`) from its output gradient `dy` (`[o, ho, wo]`).
    fn transform_image(
        &self,
        image: &[f32],
        dy: &[f32],
        padded: &mut [f32],
        v: &mut [f32],
        d: &mut [f32],
    );

    /// `ax` (`[o / 4, c / 4, 4, 4]`: one frequency of the accumulator, or a block of its output
    /// channels) += the sums over the first `tiles` tiles of every part `(v, d)`: one frequency's
    /// `c` rows of transformed input and `o` rows of transformed output gradient, each row
    /// `cap` floats long.
    fn tile_sums(
        &self,
        [o, c]: [usize; 2],
        parts: &[(&[f32], &[f32])],
        cap: usize,
        tiles: usize,
        ax: &mut [f32],
    ) {
        assert!(
            o.is_multiple_of(FILTER_BLOCK) && c.is_multiple_of(FILTER_BLOCK),
            "winograd conv: channel blocks"
        );
        assert!(
            tiles <= cap && tiles.is_multiple_of(LANES),
            "winograd conv: tiles"
        );
        assert_eq!(ax.len(), o * c, "winograd conv: accumulator");
        for &(v, d) in parts {
            assert!(
                v.len() >= c * cap && d.len() >= o * cap,
                "winograd conv: rows"
            );
        }
        for t0 in (0..tiles).step_by(FILTER_CHUNK) {
            let len = (tiles - t0).min(FILTER_CHUNK);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: both plans exist only where the CPU has AVX-512F (their constructors
            // check `enabled()`), the one feature `tile_sums` is compiled for.
            unsafe {
                tile_sums([o, c], parts, cap, t0, len, ax)
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("no Winograd plan without AVX-512");
        }
    }
}

/// The filter gradient, `dW = G^T [(Bᵀ d B) ⊙ (A dy Aᵀ)] G` summed over the tiles (the
/// transpose of the forward algorithm: the 3×3 correlation of each 4×4 input patch with the 2×2
/// output-gradient tile under it, F(3×3, 2×2)).
impl WinogradFilter for WinogradPlan {
    /// Input channels in blocks of [`FILTER_BLOCK`] (output channels come in blocks of
    /// [`OUT_BLOCK`]) and [`FILTER_MIN_TILES`] tiles or more.
    fn filter_supported(&self, images: usize) -> bool {
        filter_enabled()
            && self.c.is_multiple_of(FILTER_BLOCK)
            && self.tile_rows * self.row_tiles * images >= FILTER_MIN_TILES
    }

    /// Laid out `[16 frequencies, o / 4, c / 4, 4, 4]` (one register tile's 16 sums together).
    fn filter_acc_len(&self) -> usize {
        16 * self.o * self.c
    }

    fn filter_scratch_len(&self) -> usize {
        line_aligned_len(self.padded_len())
            + 16 * (self.c + self.o) * self.filter_rows * self.row_tiles
    }

    fn filter_accumulate(&self, image: &[f32], dy: &[f32], acc: &mut [f32], scratch: &mut [f32]) {
        assert!(
            self.c.is_multiple_of(FILTER_BLOCK),
            "winograd conv: channel blocks"
        );
        assert_eq!(
            image.len(),
            self.c * self.h * self.w,
            "winograd conv: image"
        );
        assert_eq!(dy.len(), self.out_len(), "winograd conv: output gradient");
        assert_eq!(
            acc.len(),
            self.filter_acc_len(),
            "winograd conv: accumulator"
        );
        assert!(
            scratch.len() >= self.filter_scratch_len(),
            "winograd conv: scratch"
        );
        let (padded, scratch) = scratch.split_at_mut(line_aligned_len(self.padded_len()));
        let padded = &mut padded[..self.padded_len()];
        self.pad_image(image, padded);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `forward`: a plan exists only where the CPU has AVX-512F.
        unsafe {
            filter_accumulate_avx512(self, padded, dy, acc, scratch)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("WinogradPlan::new returns None without AVX-512")
    }

    /// `dw_k += G^T M G`, with `G^T = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]]`.
    fn filter_finish_channel(&self, acc: &[f32], k: usize, dw_k: &mut [f32]) {
        assert_eq!(
            acc.len(),
            self.filter_acc_len(),
            "winograd conv: accumulator"
        );
        assert!(k < self.o, "winograd conv: output channel");
        assert_eq!(dw_k.len(), self.c * 9, "winograd conv: filters");
        let back = |m: [f32; 4]| {
            [
                m[0] + 0.5 * (m[1] + m[2]),
                0.5 * (m[1] - m[2]),
                0.5 * (m[1] + m[2]) + m[3],
            ]
        };
        for (ch, dst) in dw_k.chunks_exact_mut(9).enumerate() {
            let mut m = [[0.0f32; 4]; 4];
            for (xi, v) in m.iter_mut().flatten().enumerate() {
                *v = acc[filter_acc_index([self.o, self.c], xi, k, ch)];
            }
            // Gᵀ M: 3 rows of 4, column by column; then each row times G.
            let mut t = [[0.0f32; 4]; 3];
            for j in 0..4 {
                let col = back([m[0][j], m[1][j], m[2][j], m[3][j]]);
                for (row, v) in t.iter_mut().zip(col) {
                    row[j] = v;
                }
            }
            for (a, row) in t.iter().enumerate() {
                for (b, v) in back(*row).into_iter().enumerate() {
                    dst[3 * a + b] += v;
                }
            }
        }
    }

    fn channels(&self) -> [usize; 2] {
        [self.o, self.c]
    }

    fn frequencies(&self) -> usize {
        16
    }

    fn image_tiles(&self) -> usize {
        self.vectors(self.tile_rows) * LANES
    }

    fn padded_len(&self) -> usize {
        WinogradPlan::padded_len(self)
    }

    fn transform_image(
        &self,
        image: &[f32],
        dy: &[f32],
        padded: &mut [f32],
        v: &mut [f32],
        d: &mut [f32],
    ) {
        let tiles = WinogradFilter::image_tiles(self);
        assert_eq!(
            image.len(),
            self.c * self.h * self.w,
            "winograd conv: image"
        );
        assert_eq!(dy.len(), self.out_len(), "winograd conv: output gradient");
        assert_eq!(
            padded.len(),
            self.padded_len(),
            "winograd conv: padded image"
        );
        assert_eq!(
            v.len(),
            16 * self.c * tiles,
            "winograd conv: transformed input"
        );
        assert_eq!(
            d.len(),
            16 * self.o * tiles,
            "winograd conv: transformed gradient"
        );
        self.pad_image(image, padded);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `forward`: a plan exists only where the CPU has AVX-512F.
        unsafe {
            input_transform(self, padded, 0, self.tile_rows, tiles, v);
            gradient_transform(self, dy, 0, self.tile_rows, tiles, d);
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("WinogradPlan::new returns None without AVX-512")
    }
}

/// Where the sum of frequency `xi`, output channel `k` and input channel `ch` lies in a filter
/// gradient's accumulator for `o` output and `c` input channels (`[frequencies, o / 4, c / 4, 4,
/// 4]`, the layout [`tile_sums`] adds into).
pub(crate) fn filter_acc_index([o, c]: [usize; 2], xi: usize, k: usize, ch: usize) -> usize {
    const B: usize = FILTER_BLOCK;
    let tile = (xi * o / B + k / B) * (c / B) + ch / B;
    tile * B * B + (k % B) * B + ch % B
}

impl WinogradPlan {
    /// Vectors of 16 tiles in `rows` tile rows of a block.
    fn vectors(&self, rows: usize) -> usize {
        (rows * self.row_tiles).div_ceil(LANES)
    }

    /// Where vector `m` of a block lies: the block-relative tile row and first tile of its lanes
    /// 0..8 and 8..16 (paired rows: tiles 0..8 of rows 2m and 2m + 1; else 16 tiles of one row).
    fn vector_tiles(&self, m: usize) -> [(usize, usize); 2] {
        if self.paired {
            [(2 * m, 0), (2 * m + 1, 0)]
        } else {
            let (r, t0) = (LANES * m / self.row_tiles, LANES * m % self.row_tiles);
            [(r, t0), (r, t0 + LANES / 2)]
        }
    }
}

/// `U = G g Gᵀ` of one 3×3 filter `g` (row-major), row-major 4×4, with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
fn filter_transform(g: &[f32]) -> [f32; 16] {
    let col = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    // G g: 4 rows of 3, column by column.
    let mut gg = [[0.0f32; 3]; 4];
    for j in 0..3 {
        let t = col(g[j], g[3 + j], g[6 + j]);
        for (row, v) in gg.iter_mut().zip(t) {
            row[j] = v;
        }
    }
    let mut u = [0.0f32; 16];
    for (i, row) in gg.iter().enumerate() {
        u[4 * i..4 * i + 4].copy_from_slice(&col(row[0], row[1], row[2]));
    }
    u
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn forward_avx512(
    p: &WinogradPlan,
    padded: &[f32],
    filters: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let tiles_cap = (p.block_rows * p.row_tiles).next_multiple_of(GROUP);
    let (v, rest) = scratch.split_at_mut(16 * p.c * tiles_cap);
    let m = &mut rest[..16 * OUT_BLOCK * GROUP];
    for tr0 in (0..p.tile_rows).step_by(p.block_rows) {
        let rows = (p.tile_rows - tr0).min(p.block_rows);
        input_transform(p, padded, tr0, rows, GROUP, v);
        let groups = (rows * p.row_tiles).div_ceil(GROUP);
        for block in 0..p.o / OUT_BLOCK {
            let u = &filters[block * 16 * p.c * OUT_BLOCK..][..16 * p.c * OUT_BLOCK];
            for group in 0..groups {
                let vg = &v[group * 16 * p.c * GROUP..][..16 * p.c * GROUP];
                channel_sums(p.c, vg, u, m);
                output_transform(p, m, block, tr0, group, rows, out);
            }
        }
    }
}

/// Lane indices of the even (`EVEN`) and odd elements of two concatenated vectors, and of the
/// interleaving of two vectors' low (`LOW`) and high halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn permutes() -> [__m512i; 4] {
    [
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31),
    ]
}

/// `V = Bᵀ d B` of the tiles of tile rows `tr0..tr0 + rows`, every input channel, into `v`
/// laid out `[tiles / group, 16 frequencies, c, group]` (tiles numbered row by row within the
/// block, `row_tiles` per row; `group` a multiple of 16), with
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn input_transform(
    p: &WinogradPlan,
    padded: &[f32],
    tr0: usize,
    rows: usize,
    group_len: usize,
    v: &mut [f32],
) {
    let [even, odd, _, _] = permutes();
    let channel_len = p.hp * p.wp;
    for ch in 0..p.c {
        let channel = &padded[ch * channel_len..][..channel_len];
        for m in 0..p.vectors(rows) {
            let [(r, t0), (r_hi, _)] = p.vector_tiles(m);
            // Per input row i of the patch, its 4 columns transformed: (d0 − d2, d1 + d2,
            // d2 − d1, d1 − d3) for 16 tiles.
            let mut t = [[_mm512_setzero_ps(); 4]; 4];
            for (i, ti) in t.iter_mut().enumerate() {
                let at = |tr: usize, t: usize| (2 * (tr0 + tr) + i) * p.wp + 2 * t;
                // The floats of the low lanes' tiles (`lo`) and of the high lanes' (`hi`):
                // consecutive columns of one row, or the first 18 columns of two rows.
                let (lo, hi) = if p.paired {
                    (&channel[at(r, 0)..][..18], &channel[at(r_hi, 0)..][..18])
                } else {
                    let row = &channel[at(r, t0)..][..2 * LANES + 2];
                    (&row[..18], &row[16..])
                };
                // SAFETY: `lo` and `hi` hold 18 floats each; the loads read floats 0..16 and
                // 2..18 of each.
                let [a, b, a2, b2] = unsafe {
                    [
                        _mm512_loadu_ps(lo.as_ptr()),
                        _mm512_loadu_ps(hi.as_ptr()),
                        _mm512_loadu_ps(lo.as_ptr().add(2)),
                        _mm512_loadu_ps(hi.as_ptr().add(2)),
                    ]
                };
                let d0 = _mm512_permutex2var_ps(a, even, b);
                let d1 = _mm512_permutex2var_ps(a, odd, b);
                let d2 = _mm512_permutex2var_ps(a2, even, b2);
                let d3 = _mm512_permutex2var_ps(a2, odd, b2);
                *ti = [
                    _mm512_sub_ps(d0, d2),
                    _mm512_add_ps(d1, d2),
                    _mm512_sub_ps(d2, d1),
                    _mm512_sub_ps(d1, d3),
                ];
            }
            let tile = LANES * m;
            let (group, lane) = (tile / group_len, tile % group_len);
            let dst = &mut v[group * 16 * p.c * group_len..][..16 * p.c * group_len];
            let [t0, t1, t2, t3] = t;
            for (j, (((&r0, &r1), &r2), &r3)) in t0.iter().zip(&t1).zip(&t2).zip(&t3).enumerate() {
                let cols = [
                    _mm512_sub_ps(r0, r2),
                    _mm512_add_ps(r1, r2),
                    _mm512_sub_ps(r2, r1),
                    _mm512_sub_ps(r1, r3),
                ];
                for (i, vec) in cols.into_iter().enumerate() {
                    let xi = 4 * i + j;
                    let d = &mut dst[(xi * p.c + ch) * group_len + lane..][..LANES];
                    // SAFETY: `d` holds 16 floats.
                    unsafe { _mm512_storeu_ps(d.as_mut_ptr(), vec) };
                }
            }
        }
    }
}

/// `m[ξ, k, t] = Σ_c u[ξ, c, k] · vg[ξ, c, t]` for the 16 frequencies ξ, one block of
/// [`OUT_BLOCK`] output channels k and one group of 32 tiles t.
///
/// In a block's last group the tiles past the block (up to 16 lanes) hold whatever the thread's
/// scratch held before; lanes never mix and their sums are not stored, so only their time counts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn channel_sums(c: usize, vg: &[f32], u: &[f32], m: &mut [f32]) {
    for xi in 0..16 {
        let vx = &vg[xi * c * GROUP..][..c * GROUP];
        let ux = &u[xi * c * OUT_BLOCK..][..c * OUT_BLOCK];
        let mut acc = [[_mm512_setzero_ps(); 2]; OUT_BLOCK];
        for (vc, uc) in vx.chunks_exact(GROUP).zip(ux.chunks_exact(OUT_BLOCK)) {
            // SAFETY: `vc` holds 32 floats: the loads read 0..16 and 16..32.
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(vc.as_ptr()),
                    _mm512_loadu_ps(vc.as_ptr().add(16)),
                )
            };
            for (a, &uk) in acc.iter_mut().zip(uc) {
                let b = _mm512_set1_ps(uk);
                a[0] = _mm512_fmadd_ps(b, v0, a[0]);
                a[1] = _mm512_fmadd_ps(b, v1, a[1]);
            }
        }
        let mx = &mut m[xi * OUT_BLOCK * GROUP..][..OUT_BLOCK * GROUP];
        for (dst, a) in mx.chunks_exact_mut(GROUP).zip(&acc) {
            // SAFETY: `dst` holds 32 floats: the stores write 0..16 and 16..32.
            unsafe {
                _mm512_storeu_ps(dst.as_mut_ptr(), a[0]);
                _mm512_storeu_ps(dst.as_mut_ptr().add(16), a[1]);
            }
        }
    }
}

/// `Y = Aᵀ M A` of one group of 32 tiles and one block of output channels, written into the
/// output rows and columns those tiles cover (tiles past the output's edge are not written),
/// with `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn output_transform(
    p: &WinogradPlan,
    m: &[f32],
    block: usize,
    tr0: usize,
    group: usize,
    rows: usize,
    out: &mut [f32],
) {
    let [_, _, low, high] = permutes();
    let plane = p.ho * p.wo;
    for half in 0..GROUP / LANES {
        let vector = group * GROUP / LANES + half;
        if vector >= p.vectors(rows) {
            continue;
        }
        let [(r, t0), (r_hi, _)] = p.vector_tiles(vector);
        for k in 0..OUT_BLOCK {
            let mut mv = [_mm512_setzero_ps(); 16];
            for (xi, mvx) in mv.iter_mut().enumerate() {
                let src = &m[(xi * OUT_BLOCK + k) * GROUP + LANES * half..][..LANES];
                // SAFETY: `src` holds 16 floats.
                *mvx = unsafe { _mm512_loadu_ps(src.as_ptr()) };
            }
            // Aᵀ M: two rows of 4.
            let mut s = [[_mm512_setzero_ps(); 4]; 2];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mv[j], mv[4 + j], mv[8 + j], mv[12 + j]);
                s[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                s[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
            }
            let o = block * OUT_BLOCK + k;
            for (i, si) in s.iter().enumerate() {
                let even = _mm512_add_ps(_mm512_add_ps(si[0], si[1]), si[2]);
                let odd = _mm512_sub_ps(_mm512_sub_ps(si[1], si[2]), si[3]);
                // Output columns 2t, 2t + 1 of the low lanes' tiles, then of the high lanes'.
                let lo = _mm512_permutex2var_ps(even, low, odd);
                let hi = _mm512_permutex2var_ps(even, high, odd);
                let mut row = |tr: usize, x0: usize, width: usize, lo, hi| {
                    let y = 2 * (tr0 + tr) + i;
                    if tr < rows && y < p.ho && x0 < p.wo {
                        let valid = (p.wo - x0).min(width);
                        let dst = &mut out[o * plane + y * p.wo + x0..][..valid];
                        store_first(dst, lo, hi);
                    }
                };
                if p.paired {
                    row(r, 0, LANES, lo, lo);
                    row(r_hi, 0, LANES, hi, hi);
                } else {
                    row(r, 2 * t0, 2 * LANES, lo, hi);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn filter_accumulate_avx512(
    p: &WinogradPlan,
    padded: &[f32],
    dy: &[f32],
    acc: &mut [f32],
    scratch: &mut [f32],
) {
    let cap = p.filter_rows * p.row_tiles;
    let (v, rest) = scratch.split_at_mut(16 * p.c * cap);
    let d = &mut rest[..16 * p.o * cap];
    for tr0 in (0..p.tile_rows).step_by(p.filter_rows) {
        let rows = (p.tile_rows - tr0).min(p.filter_rows);
        input_transform(p, padded, tr0, rows, cap, v);
        gradient_transform(p, dy, tr0, rows, cap, d);
        let tiles = p.vectors(rows) * LANES;
        for xi in 0..16 {
            let vx = &v[xi * p.c * cap..][..p.c * cap];
            let dx = &d[xi * p.o * cap..][..p.o * cap];
            let ax = &mut acc[xi * p.o * p.c..][..p.o * p.c];
            for t0 in (0..tiles).step_by(FILTER_CHUNK) {
                let len = (tiles - t0).min(FILTER_CHUNK);
                tile_sums([p.o, p.c], &[(vx, dx)], cap, t0, len, ax);
            }
        }
    }
}

/// `ax[k, c] += Σ_parts Σ_t dx[k, t] · vx[c, t]` over the tiles `t0..t0 + len` (in vectors of
/// 16) of one frequency, for `o` output and `c` input channels: each part `(vx, dx)` a block's
/// or an image's rows of that frequency (`cap` floats apart), all parts added up in registers
/// before the register tile's 16 lanes are (once per call), in register tiles of
/// [`FILTER_BLOCK`] × [`FILTER_BLOCK`] channel pairs (`ax` laid out `[o / 4, c / 4, 4, 4]`, one
/// frequency of the accumulator; F(4×4)'s filter gradient shares it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn tile_sums(
    [o, c]: [usize; 2],
    parts: &[(&[f32], &[f32])],
    cap: usize,
    t0: usize,
    len: usize,
    ax: &mut [f32],
) {
    const B: usize = FILTER_BLOCK;
    for kb in (0..o).step_by(B) {
        for cb in (0..c).step_by(B) {
            let mut a = [[_mm512_setzero_ps(); B]; B];
            for &(vx, dx) in parts {
                let mut drows = [&dx[..0]; B];
                for (i, row) in drows.iter_mut().enumerate() {
                    *row = &dx[(kb + i) * cap + t0..][..len];
                }
                let mut vrows = [&vx[..0]; B];
                for (j, row) in vrows.iter_mut().enumerate() {
                    *row = &vx[(cb + j) * cap + t0..][..len];
                }
                for t in (0..len).step_by(LANES) {
                    let mut dv = [_mm512_setzero_ps(); B];
                    let mut vv = [_mm512_setzero_ps(); B];
                    for (x, row) in dv.iter_mut().zip(&drows) {
                        let s = &row[t..t + LANES];
                        // SAFETY: `s` holds 16 floats.
                        *x = unsafe { _mm512_loadu_ps(s.as_ptr()) };
                    }
                    for (x, row) in vv.iter_mut().zip(&vrows) {
                        let s = &row[t..t + LANES];
                        // SAFETY: `s` holds 16 floats.
                        *x = unsafe { _mm512_loadu_ps(s.as_ptr()) };
                    }
                    for (ai, &di) in a.iter_mut().zip(&dv) {
                        for (aij, &vj) in ai.iter_mut().zip(&vv) {
                            *aij = _mm512_fmadd_ps(di, vj, *aij);
                        }
                    }
                }
            }
            // The 16 sums of the register tile, (i, j) at 4i + j, added to its accumulator.
            let [a0, a1, a2, a3] = a;
            let dst = &mut ax[((kb / B) * (c / B) + cb / B) * B * B..][..B * B];
            // SAFETY: `dst` holds 16 floats.
            unsafe {
                let sums = sums_of_16([
                    a0[0], a1[0], a2[0], a3[0], a0[1], a1[1], a2[1], a3[1], a0[2], a1[2], a2[2],
                    a3[2], a0[3], a1[3], a2[3], a3[3],
                ]);
                let old = _mm512_loadu_ps(dst.as_ptr());
                _mm512_storeu_ps(dst.as_mut_ptr(), _mm512_add_ps(old, sums));
            }
        }
    }
}

/// The sums of 16 vectors, in the order of a 4 × 4 transpose: lane `4m + k` holds the sum of
/// `a[m + 4k]` (a transposing tree of 128-bit and in-lane shuffles: 30 shuffles and 15 adds
/// instead of 16 separate reductions).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sums_of_16(a: [__m512; 16]) -> __m512 {
    // 16 → 8: b[p] holds a[2p]'s 8 pair sums in its low half and a[2p + 1]'s in its high half.
    let mut b = [_mm512_setzero_ps(); 8];
    for (bp, pair) in b.iter_mut().zip(a.chunks_exact(2)) {
        *bp = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(pair[0], pair[1]),
            _mm512_shuffle_f32x4::<0xEE>(pair[0], pair[1]),
        );
    }
    // 8 → 4: 128-bit lane m of c[p] holds 4 partial sums of a[4p + m].
    let mut c = [_mm512_setzero_ps(); 4];
    for (cp, pair) in c.iter_mut().zip(b.chunks_exact(2)) {
        *cp = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(pair[0], pair[1]),
            _mm512_shuffle_f32x4::<0xDD>(pair[0], pair[1]),
        );
    }
    // 4 → 2: lane m of d[p]: 2 partial sums of a[8p + m], then 2 of a[8p + 4 + m].
    let mut d = [_mm512_setzero_ps(); 2];
    for (dp, pair) in d.iter_mut().zip(c.chunks_exact(2)) {
        *dp = _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(pair[0], pair[1]),
            _mm512_shuffle_ps::<0xEE>(pair[0], pair[1]),
        );
    }
    // 2 → 1: lane m holds the sums of a[m], a[4 + m], a[8 + m], a[12 + m].
    _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(d[0], d[1]),
        _mm512_shuffle_ps::<0xDD>(d[0], d[1]),
    )
}

/// `A dy Aᵀ` of the 2×2 output-gradient tiles of tile rows `tr0..tr0 + rows`, every output
/// channel, into `d` laid out `[16 frequencies, o, cap]` (tiles as in [`input_transform`]), with
/// `A = [[1, 0], [1, 1], [1, −1], [0, −1]]`; outputs past the last row or column read as zeros,
/// so tiles there add nothing.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gradient_transform(
    p: &WinogradPlan,
    dy: &[f32],
    tr0: usize,
    rows: usize,
    cap: usize,
    d: &mut [f32],
) {
    let [even, odd, _, _] = permutes();
    let plane = p.ho * p.wo;
    let zero = _mm512_setzero_ps();
    for k in 0..p.o {
        let grad = &dy[k * plane..][..plane];
        for m in 0..p.vectors(rows) {
            let [(r, t0), (r_hi, _)] = p.vector_tiles(m);
            // The first `width` output-gradient values of row i of tile row `tr` from column
            // `x0`, zeros past the output's last row or column.
            let load = |tr: usize, i: usize, x0: usize, width: usize| {
                let y = 2 * (tr0 + tr) + i;
                if y >= p.ho || x0 >= p.wo {
                    return (zero, zero);
                }
                let valid = (p.wo - x0).min(width);
                load_first(&grad[y * p.wo + x0..][..valid])
            };
            // Even and odd columns of the tiles' two rows: [g00, g01] above [g10, g11].
            let mut halves = [[zero; 2]; 2];
            for (i, h) in halves.iter_mut().enumerate() {
                let (a, b) = if p.paired {
                    (load(r, i, 0, LANES).0, load(r_hi, i, 0, LANES).0)
                } else {
                    load(r, i, 2 * t0, 2 * LANES)
                };
                *h = [
                    _mm512_permutex2var_ps(a, even, b),
                    _mm512_permutex2var_ps(a, odd, b),
                ];
            }
            let [[g00, g01], [g10, g11]] = halves;
            // A dy: rows (g00, g01), (g00 + g10, g01 + g11), (g00 − g10, g01 − g11),
            // (−g10, −g11); each row (u, v) times Aᵀ: (u, u + v, u − v, −v).
            let rows4 = [
                (g00, g01),
                (_mm512_add_ps(g00, g10), _mm512_add_ps(g01, g11)),
                (_mm512_sub_ps(g00, g10), _mm512_sub_ps(g01, g11)),
                (_mm512_sub_ps(zero, g10), _mm512_sub_ps(zero, g11)),
            ];
            let tile = LANES * m;
            for (a, (u, v)) in rows4.into_iter().enumerate() {
                let vals = [
                    u,
                    _mm512_add_ps(u, v),
                    _mm512_sub_ps(u, v),
                    _mm512_sub_ps(zero, v),
                ];
                for (b, val) in vals.into_iter().enumerate() {
                    let xi = 4 * a + b;
                    let dst = &mut d[(xi * p.o + k) * cap + tile..][..LANES];
                    // SAFETY: `dst` holds 16 floats.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), val) };
                }
            }
        }
    }
}

/// The first `src.len()` (1 to 32) floats of `src` as two vectors, zeros after them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn load_first(src: &[f32]) -> (__m512, __m512) {
    let n = src.len();
    debug_assert!((1..=2 * LANES).contains(&n));
    let mask = |k: usize| {
        if k >= 16 {
            0xFFFF
        } else {
            ((1u32 << k) - 1) as u16
        }
    };
    // SAFETY: the first load reads lanes 0..min(n, 16) from the start of `src`; the second,
    // made only when n > 16, reads lanes 0..n − 16 from float 16: both inside `src`. Masked-off
    // lanes are not read.
    unsafe {
        let a = _mm512_maskz_loadu_ps(mask(n), src.as_ptr());
        let b = if n > LANES {
            _mm512_maskz_loadu_ps(mask(n - LANES), src.as_ptr().add(LANES))
        } else {
            _mm512_setzero_ps()
        };
        (a, b)
    }
}

/// Writes the first `dst.len()` (≤ 32) floats of the vectors `lo`, `hi` into `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn store_first(dst: &mut [f32], lo: __m512, hi: __m512) {
    let n = dst.len();
    debug_assert!(n <= 2 * LANES);
    let mask = |k: usize| {
        if k >= 16 {
            0xFFFF
        } else {
            ((1u32 << k) - 1) as u16
        }
    };
    // SAFETY: the first store writes lanes 0..min(n, 16) from the start of `dst`; the second,
    // made only when n > 16, writes lanes 0..n − 16 from float 16, so both stay inside `dst`.
    unsafe {
        _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask(n), lo);
        if n > LANES {
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(LANES), mask(n - LANES), hi);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::filter_transform;

    /// Checks, for plans of 8–1024 channels at 16²–128² that `plan(c, side)` builds (`None`
    /// without AVX-512 or for sizes the plan does not take), that every block of tile rows but
    /// an image's last holds whole register tiles of tiles: `plan` gives `(block_rows,
    /// row_tiles, tile_rows)`.
    pub(crate) fn assert_blocks_hold_whole_register_tiles(
        plan: impl Fn(usize, usize) -> Option<(usize, usize, usize)>,
    ) {
        let mut checked = 0;
        for c in [8, 64, 128, 256, 512, 1024] {
            for side in [16, 20, 24, 32, 40, 64, 96, 128] {
                let Some((block_rows, row_tiles, tile_rows)) = plan(c, side) else {
                    continue;
                };
                let tiles = block_rows * row_tiles;
                assert!(
                    block_rows >= tile_rows || tiles % super::GROUP == 0,
                    "{c} channels at {side}²: blocks of {block_rows} rows × {row_tiles} tiles"
                );
                checked += 1;
            }
        }
        if checked == 0 {
            eprintln!("skipped: no AVX-512F on this CPU (no Winograd plan)");
        }
    }

    /// Every block of tile rows but an image's last holds whole register tiles of tiles (a
    /// multiple of `GROUP`), whatever the channel count: the L2 budget alone had cut blocks of
    /// many channels (16² with 512, 32² with 256, 64² with 128) to 16 tiles, leaving half of
    /// every channel sum's lanes idle.
    #[test]
    fn blocks_hold_whole_register_tiles() {
        assert_blocks_hold_whole_register_tiles(|c, side| {
            let p = super::WinogradPlan::new([c, side, side], 64, [1, 1])?;
            Some((p.block_rows, p.row_tiles, p.tile_rows))
        });
    }

    /// The transposing reduction of 16 vectors: lane `4m + k` is the sum of vector `m + 4k`.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sums_of_16_transposes_4_by_4() {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        // Vector v, lane l: v·100 + l² (distinct sums, exact in f32).
        let values: Vec<[f32; 16]> = (0..16)
            .map(|v| std::array::from_fn(|l| (v * 100 + l * l) as f32))
            .collect();
        let mut got = [0.0f32; 16];
        // SAFETY: AVX-512F is present (checked above); every load and store covers 16 floats of
        // a 16-float array.
        unsafe {
            let vectors = std::array::from_fn(|v| _mm512_loadu_ps(values[v].as_ptr()));
            _mm512_storeu_ps(got.as_mut_ptr(), super::sums_of_16(vectors));
        }
        for (lane, &g) in got.iter().enumerate() {
            let (m, k) = (lane / 4, lane % 4);
            let want: f32 = values[m + 4 * k].iter().sum();
            assert_eq!(g, want, "lane {lane}");
        }
    }

    /// `U = G g Gᵀ` of the filter that is 1 at one tap: the transform's columns, by hand.
    #[test]
    fn filter_transform_of_unit_taps() {
        let g_matrix = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0f32],
        ];
        for tap in 0..9 {
            let mut g = [0.0f32; 9];
            g[tap] = 1.0;
            let u = filter_transform(&g);
            let (a, b) = (tap / 3, tap % 3);
            for i in 0..4 {
                for j in 0..4 {
                    assert_eq!(u[4 * i + j], g_matrix[i][a] * g_matrix[j][b], "tap {tap}");
                }
            }
        }
    }
}
