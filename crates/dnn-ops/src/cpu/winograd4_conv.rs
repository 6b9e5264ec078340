//! Winograd F(4×4, 3×3) convolution with AVX-512: the forward pass and (through flipped
//! filters) the data gradient of the 3×3, stride-1 convolutions that [`super::winograd_conv`]'s
//! F(2×2, 3×3) also takes, with 36 multiplications per 4×4 outputs instead of 64 (2.25 per
//! output and input channel against F(2×2)'s 4 and the direct kernel's 9).
//!
//! Each 4×4 block of outputs ("tile") of one output channel is computed from the 6×6 input patch
//! under it: `V = Bᵀ d B`, multiplied element-wise with `U = G g Gᵀ` (36 values per (output,
//! input) channel pair) and summed over the input channels, then `Y = Aᵀ M A` (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016; interpolation points 0, ±1, ±2):
//!
//! ```text
//! Bᵀ = [4  0 −5  0 1 0]   G = [ 1/4     0    0]   Aᵀ = [1 1  1 1  1 0]
//!      [0 −4 −4  1 1 0]       [−1/6 −1/6 −1/6]        [0 1 −1 2 −2 0]
//!      [0  4 −4 −1 1 0]       [−1/6  1/6 −1/6]        [0 1  1 4  4 0]
//!      [0 −2 −1  2 1 0]       [1/24 1/12  1/6]        [0 1 −1 8 −8 1]
//!      [0  2 −1 −2 1 0]       [1/24 −1/12 1/6]
//!      [0  4  0 −5 0 1]       [   0     0    1]
//! ```
//!
//! Layout as in F(2×2): per image, blocks of tile rows whose transformed input stays in L2; the
//! input transform vectorised over 16 tiles — each vector's tiles are four runs of four
//! consecutive tiles (one 16-float load each, so a vector covers 16 tiles of one tile row, or 8
//! of two rows, or 4 of four rows on narrow images), their patch columns gathered by two
//! two-register permutes and a blend; the channel sums as register tiles of [`OUT_BLOCK`] output
//! channels × 32 tiles; the output transform interleaved back into rows of 16 columns.
//!
//! The filter gradient is the transpose, F(3×3, 4×4): `dW = Gᵀ [Σ (Bᵀ d B) ⊙ (A dy Aᵀ)] G` over
//! the tiles, the same input transform, the output gradient's 4×4 tiles transformed by `A`
//! (columns gathered as the padded rows' phases are), and the sums over tiles shared with
//! F(2×2) (`winograd_conv::WinogradFilter`, `tile_sums`).
//!
//! Rounding: the transforms' coefficients (up to 8, down to 1/24) make the error larger than
//! F(2×2)'s: a few 10⁻⁶ of the output's magnitude with 64 input channels (simulated in f32
//! against f64, and checked against f64 loops in `conv.rs`'s tests), well inside what training
//! in f32 resolves. `MAGMA_CPU_CONV=winograd2` keeps F(2×2) for comparisons.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, __m512i, _mm_loadu_ps, _mm256_castps_pd, _mm256_loadu_ps, _mm512_add_ps,
    _mm512_castpd_ps, _mm512_castps_pd, _mm512_castps256_ps512, _mm512_fmadd_ps,
    _mm512_insertf32x4, _mm512_insertf64x4, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_set1_ps, _mm512_setr_epi32,
    _mm512_setzero_ps, _mm512_storeu_ps, _mm512_sub_ps,
};

use rayon::prelude::*;

use super::buffers::line_aligned_len;
use super::winograd_conv::{
    self, FILTER_BLOCK, FILTER_CHUNK, WinogradFilter, filter_acc_index, forward_block_rows,
};

/// Output channels per register tile of the channel sums.
pub(crate) const OUT_BLOCK: usize = 8;
/// Tiles per register tile of the channel sums (two vectors of 16), as F(2×2)'s: the block
/// rule (`forward_block_rows`) is shared.
const GROUP: usize = winograd_conv::GROUP;
/// Tiles per vector.
const LANES: usize = 16;
/// Transformed values per tile (6 × 6).
const FREQ: usize = 36;
/// The filter gradient's transformed input and output gradient of one block, as in F(2×2)
/// (`winograd_conv`): from 1 MiB up to 4 MiB for many channel pairs.
const MIN_FILTER_BLOCK_FLOATS: usize = 256 * 1024;
const MAX_FILTER_BLOCK_FLOATS: usize = 1024 * 1024;
/// The fewest tiles per group of images (one thread's share of the batch) for which the filter
/// gradient takes F(3×3, 4×4) rather than F(2×2)'s F(3×3, 2×2).
const FILTER_MIN_TILES: usize = 128;

/// Whether this process uses F(4×4, 3×3): the Winograd kernels are on ([`winograd_conv::enabled`])
/// and `MAGMA_CPU_CONV` is not `winograd2` (F(2×2) only, a switch for benchmarks).
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        winograd_conv::enabled()
            && std::env::var("MAGMA_CPU_CONV").map_or(true, |v| v != "winograd2")
    })
}

/// A 3×3, stride-1, dilation-1 convolution of one image `[c, h, w]` with `o` filters `[c, 3, 3]`
/// and zero padding `(ph, pw)`, each below 3, in the layout the kernel reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Winograd4Plan {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ph: usize,
    pw: usize,
    ho: usize,
    wo: usize,
    /// Tile rows of the output.
    tile_rows: usize,
    /// Tiles per tile row as laid out in vectors: 4 or 8 (a vector holds 4 or 2 tile rows), or
    /// a multiple of 16.
    row_tiles: usize,
    /// Tile rows per block (the transformed input of a block is reused by every output channel).
    block_rows: usize,
    /// Tile rows per block of the filter gradient (transformed input and output gradient).
    filter_rows: usize,
    /// Rows of the padded image, and the length of each of a padded row's four phases (see
    /// [`Winograd4Plan::pad_image`]).
    hp: usize,
    phase_len: usize,
}

impl Winograd4Plan {
    /// The plan, if the kernel handles this problem: a 3×3 kernel, output channels in whole
    /// blocks, output rows at least 16 columns wide (4 tiles), at least 32 tiles, and padding
    /// below 3.
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
        let tile_rows = ho.div_ceil(4);
        let tiles = wo.div_ceil(4);
        let row_tiles = match tiles {
            ..=4 => 4,
            5..=8 => 8,
            _ => tiles.next_multiple_of(LANES),
        };
        // Fewer tiles than a register tile's 32 (a 16² image has 16) would leave half of every
        // channel sum idle: F(2×2) is faster there (measured: 256 → 128 channels at 16², 6.5
        // against 4.2 ms).
        if tile_rows * row_tiles < GROUP {
            return None;
        }
        let rows_per_vector = (LANES / row_tiles).max(1);
        let block_rows =
            forward_block_rows(FREQ * c * row_tiles, row_tiles, tile_rows, rows_per_vector);
        let filter_budget =
            (FREQ * o * c * LANES).clamp(MIN_FILTER_BLOCK_FLOATS, MAX_FILTER_BLOCK_FLOATS);
        let filter_rows = (filter_budget / (FREQ * (c + o) * row_tiles))
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
            block_rows,
            filter_rows,
            // Tile row r reads padded rows 4r..4r + 6, and the last vector may hold tile rows up
            // to the next multiple of `rows_per_vector`; tile t reads columns 4t..4t + 6, so
            // positions t and t + 1 of the phases.
            hp: 4 * tile_rows.next_multiple_of(rows_per_vector) + 2,
            phase_len: row_tiles + 2,
        })
    }

    /// Elements of one padded image.
    pub(crate) fn padded_len(&self) -> usize {
        self.c * self.hp * self.row_len()
    }

    /// Elements of one output image `[o, ho, wo]`.
    pub(crate) fn out_len(&self) -> usize {
        self.o * self.ho * self.wo
    }

    /// Floats of the per-thread scratch (`scratch` of [`Winograd4Plan::forward`]): the
    /// transformed input of a block of tile rows and the channel sums of one register tile.
    pub(crate) fn scratch_len(&self) -> usize {
        FREQ * self.c * self.tiles_cap() + FREQ * OUT_BLOCK * GROUP
    }

    /// Tiles of a block's transformed input, whole groups.
    fn tiles_cap(&self) -> usize {
        (self.block_rows * self.row_tiles).next_multiple_of(GROUP)
    }

    /// Floats of one padded row: its four phases.
    fn row_len(&self) -> usize {
        4 * self.phase_len
    }

    /// Copies one image `[c, h, w]` into `padded` (`padded_len` elements): zero padding of
    /// `ph` rows and `pw` columns before the image and zeros after it, each padded row split
    /// into four phases — phase φ holds its columns φ, 4 + φ, 8 + φ, … — so that column j of
    /// the patches of consecutive tiles (columns 4t + j) lies at consecutive positions
    /// `t + j / 4` of phase `j mod 4`.
    pub(crate) fn pad_image(&self, image: &[f32], padded: &mut [f32]) {
        assert_eq!(
            padded.len(),
            self.padded_len(),
            "winograd F(4x4) conv: padded image"
        );
        assert_eq!(
            image.len(),
            self.c * self.h * self.w,
            "winograd F(4x4) conv: image"
        );
        let row_len = self.row_len();
        for (ch, channel) in padded.chunks_exact_mut(self.hp * row_len).enumerate() {
            for (r, dst) in channel.chunks_exact_mut(row_len).enumerate() {
                let Some(y) = r.checked_sub(self.ph).filter(|&y| y < self.h) else {
                    dst.fill(0.0);
                    continue;
                };
                let src = &image[(ch * self.h + y) * self.w..][..self.w];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as in `forward`: a plan exists only where the CPU has AVX-512F.
                unsafe {
                    split_phases(src, self.pw, self.phase_len, dst)
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("Winograd4Plan::new returns None without AVX-512");
            }
        }
    }

    /// Filters `[o, c, 3, 3]` transformed (`U = G g Gᵀ`, computed in f64) and laid out
    /// `[o / OUT_BLOCK, 36, c, OUT_BLOCK]`: for one output block and frequency, the values of
    /// consecutive input channels are adjacent.
    pub(crate) fn transform_filters(&self, w: &[f32]) -> Vec<f32> {
        assert_eq!(
            w.len(),
            self.o * self.c * 9,
            "winograd F(4x4) conv: filters"
        );
        let mut packed = vec![0.0f32; self.o * self.c * FREQ];
        // One output block per task (a 256 × 256 layer has 65 536 filters to transform).
        packed
            .par_chunks_mut(FREQ * self.c * OUT_BLOCK)
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
            "winograd F(4x4) conv: padded image"
        );
        assert_eq!(
            filters.len(),
            self.o * self.c * FREQ,
            "winograd F(4x4) conv: filters"
        );
        assert_eq!(out.len(), self.out_len(), "winograd F(4x4) conv: output");
        assert!(
            scratch.len() >= self.scratch_len(),
            "winograd F(4x4) conv: scratch"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Winograd4Plan::new` returns a plan only when `enabled()`, which checked at run
        // time that the CPU has AVX-512F, the one feature `forward_avx512` is compiled for.
        unsafe {
            forward_avx512(self, padded, filters, out, scratch)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("Winograd4Plan::new returns None without AVX-512")
    }

    /// Vectors of 16 tiles in `rows` tile rows of a block.
    fn vectors(&self, rows: usize) -> usize {
        (rows * self.row_tiles).div_ceil(LANES)
    }

    /// Where the run of four tiles that starts at block tile `tile` (a multiple of 4) lies: its
    /// block-relative tile row and its first output column.
    fn run_at(&self, tile: usize) -> (usize, usize) {
        (tile / self.row_tiles, 4 * (tile % self.row_tiles))
    }

    /// Tiles of one whole image as laid out in vectors.
    fn image_tiles(&self) -> usize {
        self.vectors(self.tile_rows) * LANES
    }
}

/// The filter gradient, F(3×3, 4×4): `dW = Gᵀ [Σ_tiles (Bᵀ d B) ⊙ (A dy Aᵀ)] G` (the transpose
/// of the forward algorithm: the 3×3 correlation of each 6×6 input patch with the 4×4
/// output-gradient tile under it), 36 multiplications per tile and channel pair where F(2×2)'s
/// F(3×3, 2×2) needs 64 for the same 16 outputs. Built as F(2×2)'s (see [`WinogradFilter`]):
/// per image, blocks of tile rows transformed into L2-sized buffers, then one sum per
/// (frequency, output, input channel) in the accumulator through `winograd_conv::tile_sums`.
impl WinogradFilter for Winograd4Plan {
    /// Input channels in whole register tiles and [`FILTER_MIN_TILES`] tiles or more per block
    /// (any number of images: the blocks are tile rows of one image).
    fn filter_supported(&self, _images: usize) -> bool {
        winograd_conv::filter_enabled()
            && self.c.is_multiple_of(FILTER_BLOCK)
            && self.filter_rows.min(self.tile_rows) * self.row_tiles >= FILTER_MIN_TILES
    }

    /// Laid out `[36 frequencies, o / 4, c / 4, 4, 4]`.
    fn filter_acc_len(&self) -> usize {
        FREQ * self.o * self.c
    }

    fn filter_scratch_len(&self) -> usize {
        line_aligned_len(self.padded_len())
            + FREQ * (self.c + self.o) * self.filter_rows * self.row_tiles
    }

    fn filter_accumulate(&self, image: &[f32], dy: &[f32], acc: &mut [f32], scratch: &mut [f32]) {
        assert_eq!(
            image.len(),
            self.c * self.h * self.w,
            "winograd F(4x4) conv: image"
        );
        assert_eq!(
            dy.len(),
            self.out_len(),
            "winograd F(4x4) conv: output gradient"
        );
        assert!(
            self.c.is_multiple_of(FILTER_BLOCK),
            "winograd F(4x4) conv: channel blocks"
        );
        assert_eq!(
            acc.len(),
            self.filter_acc_len(),
            "winograd F(4x4) conv: accumulator"
        );
        assert!(
            scratch.len() >= self.filter_scratch_len(),
            "winograd F(4x4) conv: scratch"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `forward`: a plan exists only where the CPU has AVX-512F.
        unsafe {
            filter_accumulate_avx512(self, image, dy, acc, scratch)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("Winograd4Plan::new returns None without AVX-512")
    }

    /// `dw_k += Gᵀ M G` in f64, with `Gᵀ` (3 × 6) the transpose of `G` in the module docs.
    fn filter_finish_channel(&self, acc: &[f32], k: usize, dw_k: &mut [f32]) {
        assert_eq!(
            acc.len(),
            self.filter_acc_len(),
            "winograd F(4x4) conv: accumulator"
        );
        assert!(k < self.o, "winograd F(4x4) conv: output channel");
        assert_eq!(dw_k.len(), self.c * 9, "winograd F(4x4) conv: filters");
        const SIXTH: f64 = 1.0 / 6.0;
        let back = |m: [f64; 6]| {
            let (sum, diff) = (m[1] + m[2], m[2] - m[1]);
            let (sum2, diff2) = (m[3] + m[4], m[3] - m[4]);
            [
                0.25 * m[0] - sum * SIXTH + sum2 / 24.0,
                diff * SIXTH + diff2 / 12.0,
                (sum2 - sum) * SIXTH + m[5],
            ]
        };
        for (ch, dst) in dw_k.chunks_exact_mut(9).enumerate() {
            let mut m = [[0.0f64; 6]; 6];
            for (xi, v) in m.iter_mut().flatten().enumerate() {
                *v = acc[filter_acc_index([self.o, self.c], xi, k, ch)].into();
            }
            // Gᵀ M: 3 rows of 6, column by column; then each row times G.
            let mut t = [[0.0f64; 6]; 3];
            for j in 0..6 {
                let col = back([m[0][j], m[1][j], m[2][j], m[3][j], m[4][j], m[5][j]]);
                for (row, v) in t.iter_mut().zip(col) {
                    row[j] = v;
                }
            }
            for (a, row) in t.iter().enumerate() {
                for (b, v) in back(*row).into_iter().enumerate() {
                    dst[3 * a + b] += v as f32;
                }
            }
        }
    }

    fn channels(&self) -> [usize; 2] {
        [self.o, self.c]
    }

    fn frequencies(&self) -> usize {
        FREQ
    }

    fn image_tiles(&self) -> usize {
        Winograd4Plan::image_tiles(self)
    }

    fn padded_len(&self) -> usize {
        Winograd4Plan::padded_len(self)
    }

    fn transform_image(
        &self,
        image: &[f32],
        dy: &[f32],
        padded: &mut [f32],
        v: &mut [f32],
        d: &mut [f32],
    ) {
        let tiles = Winograd4Plan::image_tiles(self);
        assert_eq!(
            image.len(),
            self.c * self.h * self.w,
            "winograd F(4x4) conv: image"
        );
        assert_eq!(
            dy.len(),
            self.out_len(),
            "winograd F(4x4) conv: output gradient"
        );
        assert_eq!(v.len(), FREQ * self.c * tiles, "winograd F(4x4) conv: v");
        assert_eq!(d.len(), FREQ * self.o * tiles, "winograd F(4x4) conv: d");
        self.pad_image(image, padded);
        let layout = TileLayout {
            group: tiles,
            channels: self.c,
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `forward`: a plan exists only where the CPU has AVX-512F.
        unsafe {
            input_transform(self, padded, 0, self.tile_rows, layout, v);
            gradient_transform(self, dy, 0, self.tile_rows, tiles, d);
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("Winograd4Plan::new returns None without AVX-512")
    }
}

/// `U = G g Gᵀ` of one 3×3 filter `g` (row-major), row-major 6×6, computed in f64.
fn filter_transform(g: &[f32]) -> [f32; FREQ] {
    const SIXTH: f64 = 1.0 / 6.0;
    let col = |a: f64, b: f64, c: f64| {
        let (even, odd) = (0.25 * a + c, 0.5 * b);
        [
            0.25 * a,
            -(a + b + c) * SIXTH,
            -(a - b + c) * SIXTH,
            (even + odd) * SIXTH,
            (even - odd) * SIXTH,
            c,
        ]
    };
    // G g: 6 rows of 3, column by column.
    let mut gg = [[0.0f64; 3]; 6];
    for j in 0..3 {
        let t = col(g[j].into(), g[3 + j].into(), g[6 + j].into());
        for (row, v) in gg.iter_mut().zip(t) {
            row[j] = v;
        }
    }
    let mut u = [0.0f32; FREQ];
    for (i, row) in gg.iter().enumerate() {
        for (j, v) in col(row[0], row[1], row[2]).into_iter().enumerate() {
            u[6 * i + j] = v as f32;
        }
    }
    u
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn forward_avx512(
    p: &Winograd4Plan,
    padded: &[f32],
    filters: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let (v, rest) = scratch.split_at_mut(FREQ * p.c * p.tiles_cap());
    let m = &mut rest[..FREQ * OUT_BLOCK * GROUP];
    for tr0 in (0..p.tile_rows).step_by(p.block_rows) {
        let rows = (p.tile_rows - tr0).min(p.block_rows);
        let layout = TileLayout {
            group: GROUP,
            channels: p.c,
        };
        input_transform(p, padded, tr0, rows, layout, v);
        let groups = (rows * p.row_tiles).div_ceil(GROUP);
        for block in 0..p.o / OUT_BLOCK {
            let u = &filters[block * FREQ * p.c * OUT_BLOCK..][..FREQ * p.c * OUT_BLOCK];
            for group in 0..groups {
                let vg = &v[group * FREQ * p.c * GROUP..][..FREQ * p.c * GROUP];
                channel_sums(p.c, vg, u, m);
                output_transform(p, m, block, tr0, group, rows, out);
            }
        }
    }
}

/// The filter gradient's sums over the tiles of one image (see [`WinogradFilter`]), block of tile
/// rows by block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn filter_accumulate_avx512(
    p: &Winograd4Plan,
    image: &[f32],
    dy: &[f32],
    acc: &mut [f32],
    scratch: &mut [f32],
) {
    let cap = p.filter_rows * p.row_tiles;
    let (padded, rest) = scratch.split_at_mut(line_aligned_len(p.padded_len()));
    let padded = &mut padded[..p.padded_len()];
    let (v, rest) = rest.split_at_mut(FREQ * p.c * cap);
    let d = &mut rest[..FREQ * p.o * cap];
    p.pad_image(image, padded);
    let layout = TileLayout {
        group: cap,
        channels: p.c,
    };
    for tr0 in (0..p.tile_rows).step_by(p.filter_rows) {
        let rows = (p.tile_rows - tr0).min(p.filter_rows);
        input_transform(p, padded, tr0, rows, layout, v);
        gradient_transform(p, dy, tr0, rows, cap, d);
        filter_block_sums(p, v, d, cap, p.vectors(rows) * LANES, acc);
    }
}

/// `acc` += the sums over the first `tiles` tiles of a block's transformed input `v`
/// (`[36, c, cap]`) and output gradient `d` (`[36, o, cap]`), frequency by frequency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn filter_block_sums(
    p: &Winograd4Plan,
    v: &[f32],
    d: &[f32],
    cap: usize,
    tiles: usize,
    acc: &mut [f32],
) {
    for xi in 0..FREQ {
        let vx = &v[xi * p.c * cap..][..p.c * cap];
        let dx = &d[xi * p.o * cap..][..p.o * cap];
        let ax = &mut acc[xi * p.o * p.c..][..p.o * p.c];
        for t0 in (0..tiles).step_by(FILTER_CHUNK) {
            let len = (tiles - t0).min(FILTER_CHUNK);
            winograd_conv::tile_sums([p.o, p.c], &[(vx, dx)], cap, t0, len, ax);
        }
    }
}

/// `A dy Aᵀ` of the 4×4 output-gradient tiles of tile rows `tr0..tr0 + rows`, every output
/// channel, into `d` laid out `[36 frequencies, o, cap]` (tiles as in [`input_transform`]);
/// outputs past the last row or column read as zeros, so tiles there add nothing.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gradient_transform(
    p: &Winograd4Plan,
    dy: &[f32],
    tr0: usize,
    rows: usize,
    cap: usize,
    d: &mut [f32],
) {
    let plane = p.ho * p.wo;
    for k in 0..p.o {
        let grad = &dy[k * plane..][..plane];
        for vector in 0..p.vectors(rows) {
            let tile = LANES * vector;
            let mut runs = [(0usize, 0usize); 4];
            for (q, run) in runs.iter_mut().enumerate() {
                *run = p.run_at(tile + 4 * q);
            }
            // A along each tile row i (array literals, as in `input_transform`), then down each
            // column b, stored by frequency 6a + b.
            let row = |i| gradient_row(p, grad, tr0, runs, i);
            let [r0, r1, r2, r3] = [row(0), row(1), row(2), row(3)];
            for (b, (((&x0, &x1), &x2), &x3)) in r0.iter().zip(&r1).zip(&r2).zip(&r3).enumerate() {
                for (a, val) in transform_at([x0, x1, x2, x3]).into_iter().enumerate() {
                    let dst = &mut d[((6 * a + b) * p.o + k) * cap + tile..][..LANES];
                    // SAFETY: `dst` holds 16 floats.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), val) };
                }
            }
        }
    }
}

/// `A` along row `i` of the output-gradient tiles of one vector (its four runs of four tiles at
/// `runs`, block-relative tile row and first column): each run's 16 values loaded (zeros past
/// the output), their columns gathered as in [`split_phases`], then transformed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn gradient_row(
    p: &Winograd4Plan,
    grad: &[f32],
    tr0: usize,
    runs: [(usize, usize); 4],
    i: usize,
) -> [__m512; 6] {
    let load = |q: usize| {
        let (r, x0) = runs[q];
        let y = 4 * (tr0 + r) + i;
        if y >= p.ho || x0 >= p.wo {
            return _mm512_setzero_ps();
        }
        let valid = (p.wo - x0).min(LANES);
        load_first(&grad[y * p.wo + x0..][..valid])
    };
    let [x0, x1, x2, x3] = columns_of_runs([load(0), load(1), load(2), load(3)]);
    transform_at([x0, x1, x2, x3])
}

/// The four columns of four runs of four 4-wide tiles (run `q`, tile `s`, column `j` at lane
/// `4s + j` of `runs[q]`): vector `j` holds column `j` of tile `4q + s` at lane `4q + s`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn columns_of_runs(runs: [__m512; 4]) -> [__m512; 4] {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let [v0, v1, v2, v3] = runs;
    // Columns 2t (a, c) and 2t + 1 (b, d) of each pair of runs, then every fourth.
    let (a, b) = (
        _mm512_permutex2var_ps(v0, even, v1),
        _mm512_permutex2var_ps(v0, odd, v1),
    );
    let (c, d) = (
        _mm512_permutex2var_ps(v2, even, v3),
        _mm512_permutex2var_ps(v2, odd, v3),
    );
    [
        _mm512_permutex2var_ps(a, even, c),
        _mm512_permutex2var_ps(b, even, d),
        _mm512_permutex2var_ps(a, odd, c),
        _mm512_permutex2var_ps(b, odd, d),
    ]
}

/// `A x` of four vectors: six, with `A` the transpose of `Aᵀ` in the module docs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transform_at(x: [__m512; 4]) -> [__m512; 6] {
    let [x0, x1, x2, x3] = x;
    // Rows 1, 2: (x0 + x2) ± (x1 + x3); rows 3, 4: (x0 + 4x2) ± 2(x1 + 4x3).
    let four = _mm512_set1_ps(4.0);
    let (even, odd) = (_mm512_add_ps(x0, x2), _mm512_add_ps(x1, x3));
    let even4 = _mm512_fmadd_ps(four, x2, x0);
    let odd4 = _mm512_fmadd_ps(four, x3, x1);
    let odd4 = _mm512_add_ps(odd4, odd4);
    [
        x0,
        _mm512_add_ps(even, odd),
        _mm512_sub_ps(even, odd),
        _mm512_add_ps(even4, odd4),
        _mm512_sub_ps(even4, odd4),
        x3,
    ]
}

/// The first `src.len()` (1 to 16) floats of `src` as a vector, zeros after them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn load_first(src: &[f32]) -> __m512 {
    let n = src.len();
    debug_assert!((1..=LANES).contains(&n));
    let mask = if n >= LANES {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as u16
    };
    // SAFETY: the load reads lanes 0..n from the start of `src`, which holds n floats;
    // masked-off lanes are not read.
    unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr()) }
}

/// `Bᵀ x` of six vectors (one transform along a patch row or column).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transform_b(x: [__m512; 6]) -> [__m512; 6] {
    let [x0, x1, x2, x3, x4, x5] = x;
    let (four, minus_four, minus_five) = (
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(-4.0),
        _mm512_set1_ps(-5.0),
    );
    // Rows 1, 2: (x4 − 4x2) ± (x3 − 4x1); rows 3, 4: (x4 − x2) ± 2(x3 − x1).
    let a = _mm512_fmadd_ps(minus_four, x2, x4);
    let b = _mm512_fmadd_ps(minus_four, x1, x3);
    let c = _mm512_sub_ps(x4, x2);
    let d = _mm512_sub_ps(x3, x1);
    let e = _mm512_add_ps(d, d);
    [
        _mm512_fmadd_ps(four, x0, _mm512_fmadd_ps(minus_five, x2, x4)),
        _mm512_add_ps(a, b),
        _mm512_sub_ps(a, b),
        _mm512_add_ps(c, e),
        _mm512_sub_ps(c, e),
        _mm512_fmadd_ps(four, x1, _mm512_fmadd_ps(minus_five, x3, x5)),
    ]
}

/// `Aᵀ m` of six vectors: four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transform_a(m: [__m512; 6]) -> [__m512; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (s, d) = (_mm512_add_ps(m1, m2), _mm512_sub_ps(m1, m2));
    let (s2, d2) = (_mm512_add_ps(m3, m4), _mm512_sub_ps(m3, m4));
    [
        _mm512_add_ps(_mm512_add_ps(m0, s), s2),
        _mm512_fmadd_ps(_mm512_set1_ps(2.0), d2, d),
        _mm512_fmadd_ps(_mm512_set1_ps(4.0), s2, s),
        _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d2, d), m5),
    ]
}

/// Lane indices: the interleaving of two vectors' low (`PAIR_LOW`) and high halves, and of
/// pairs of floats of two vectors' low (`QUAD_LOW`) and high halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn permutes() -> [__m512i; 4] {
    [
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31),
        _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23),
        _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31),
    ]
}

/// `dst[φ·len + t] = row[4t + φ]` for `t < len` (`dst` holds `4·len` floats), where `row` is
/// the image row `src` after `pad` zeros and followed by zeros: the padding is read as masked-off
/// lanes, so the row is never copied.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn split_phases(src: &[f32], pad: usize, len: usize, dst: &mut [f32]) {
    assert!(dst.len() == 4 * len);
    for t0 in (0..len).step_by(LANES) {
        // Padded columns 4·t0 .. 4·t0 + 64 are image columns from `start`.
        let start = (4 * t0) as isize - pad as isize;
        // (No `array::map` here: its closure would be compiled without AVX-512 and not inlined.)
        let (v0, v1) = (load_inside(src, start), load_inside(src, start + 16));
        let (v2, v3) = (load_inside(src, start + 32), load_inside(src, start + 48));
        // Every fourth column: the columns of 16 runs of four.
        let phases = columns_of_runs([v0, v1, v2, v3]);
        let n = (len - t0).min(LANES);
        for (phi, v) in phases.into_iter().enumerate() {
            store_first(&mut dst[phi * len + t0..][..n], v);
        }
    }
}

/// The 16 floats of `src` from index `start` (which may lie before it or run past its end),
/// zero where outside it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn load_inside(src: &[f32], start: isize) -> __m512 {
    let len = src.len() as isize;
    let (first, end) = ((-start).clamp(0, 16), (len - start).clamp(0, 16));
    if first >= end {
        return _mm512_setzero_ps();
    }
    let mask = (((1u32 << end) - 1) & !((1u32 << first) - 1)) as u16;
    // SAFETY: lane l is read only where its bit is set, i.e. where 0 <= start + l < len, an
    // element of `src`; masked-off lanes are not accessed (AVX-512 masked loads suppress them),
    // so the pointer may point outside `src` (`wrapping_offset` never dereferences it).
    unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().wrapping_offset(start)) }
}

/// Where a block's transformed values lie: `[tiles / group, 36 frequencies, channels, group]`
/// (tiles numbered row by row within the block, `row_tiles` per row; `group` a multiple of 16).
/// The forward pass groups 32 tiles (one register tile of its channel sums); the filter
/// gradient puts a block's tiles (or a whole image's) in one group, so each (frequency,
/// channel) is one row.
#[derive(Debug, Clone, Copy)]
struct TileLayout {
    group: usize,
    channels: usize,
}

impl TileLayout {
    /// The offset of the 16 values of frequency `xi`, channel `ch`, tiles `tile..tile + 16`.
    fn offset(&self, xi: usize, ch: usize, tile: usize) -> usize {
        let (group, lane) = (tile / self.group, tile % self.group);
        ((group * FREQ + xi) * self.channels + ch) * self.group + lane
    }
}

/// `V = Bᵀ d B` of the tiles of tile rows `tr0..tr0 + rows`, every input channel, into `v`
/// laid out as `layout` says.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn input_transform(
    p: &Winograd4Plan,
    padded: &[f32],
    tr0: usize,
    rows: usize,
    layout: TileLayout,
    v: &mut [f32],
) {
    let row_len = p.row_len();
    let channel_len = p.hp * row_len;
    for ch in 0..p.c {
        let channel = &padded[ch * channel_len..][..channel_len];
        for vector in 0..p.vectors(rows) {
            let tile = LANES * vector;
            // The four runs of four tiles: the offset of each run's first tile in patch row 0's
            // phases (phase 0, position t).
            let mut runs = [0usize; 4];
            for (q, run) in runs.iter_mut().enumerate() {
                let (r, x) = p.run_at(tile + 4 * q);
                *run = 4 * (tr0 + r) * row_len + x / 4;
            }
            // Bᵀ along each patch row i: the row's six columns for the 16 tiles, then transformed.
            // (Array literals, not a zeroed array filled in a loop: 36 vectors do not fit in
            // registers, and zeroing their stack copy was a memset per vector.)
            let row = |i| patch_row(p, channel, runs, i);
            let h = [row(0), row(1), row(2), row(3), row(4), row(5)];
            // Bᵀ down each column k, stored by frequency 6i + k.
            let [h0, h1, h2, h3, h4, h5] = h;
            for (k, (((((&a0, &a1), &a2), &a3), &a4), &a5)) in h0
                .iter()
                .zip(&h1)
                .zip(&h2)
                .zip(&h3)
                .zip(&h4)
                .zip(&h5)
                .enumerate()
            {
                let column = transform_b([a0, a1, a2, a3, a4, a5]);
                for (i, vec) in column.into_iter().enumerate() {
                    let d = &mut v[layout.offset(6 * i + k, ch, tile)..][..LANES];
                    // SAFETY: `d` holds 16 floats.
                    unsafe { _mm512_storeu_ps(d.as_mut_ptr(), vec) };
                }
            }
        }
    }
}

/// `Bᵀ` of patch row `i` of the 16 tiles whose runs start at `runs` (see `input_transform`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn patch_row(p: &Winograd4Plan, channel: &[f32], runs: [usize; 4], i: usize) -> [__m512; 6] {
    let load = |j: usize| {
        let shift = i * p.row_len() + (j % 4) * p.phase_len + j / 4;
        load_runs(channel, runs, shift, p.row_tiles)
    };
    transform_b([load(0), load(1), load(2), load(3), load(4), load(5)])
}

/// The 16 floats at `runs[q] + shift + 0..4` for q = 0..4, in order: one load when the runs
/// are consecutive (rows of at least 16 tiles), two of 8 or four of 4 floats otherwise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn load_runs(channel: &[f32], runs: [usize; 4], shift: usize, row_tiles: usize) -> __m512 {
    match row_tiles {
        4 => {
            let mut v = _mm512_setzero_ps();
            for (q, &run) in runs.iter().enumerate() {
                let src = &channel[run + shift..][..4];
                // SAFETY: `src` holds 4 floats.
                let x = unsafe { _mm_loadu_ps(src.as_ptr()) };
                v = match q {
                    0 => _mm512_insertf32x4::<0>(v, x),
                    1 => _mm512_insertf32x4::<1>(v, x),
                    2 => _mm512_insertf32x4::<2>(v, x),
                    _ => _mm512_insertf32x4::<3>(v, x),
                };
            }
            v
        }
        8 => {
            let (low, high) = (
                &channel[runs[0] + shift..][..8],
                &channel[runs[2] + shift..][..8],
            );
            // SAFETY: `low` and `high` hold 8 floats each.
            unsafe {
                let v = _mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(low.as_ptr())));
                let high = _mm256_castps_pd(_mm256_loadu_ps(high.as_ptr()));
                _mm512_castpd_ps(_mm512_insertf64x4::<1>(v, high))
            }
        }
        _ => {
            let src = &channel[runs[0] + shift..][..LANES];
            // SAFETY: `src` holds 16 floats.
            unsafe { _mm512_loadu_ps(src.as_ptr()) }
        }
    }
}

/// `m[ξ, k, t] = Σ_c u[ξ, c, k] · vg[ξ, c, t]` for the 36 frequencies ξ, one block of
/// [`OUT_BLOCK`] output channels k and one group of 32 tiles t.
///
/// In a block's last group the tiles past the block (up to 16 lanes) hold whatever the thread's
/// scratch held before; lanes never mix here and their sums are not stored.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn channel_sums(c: usize, vg: &[f32], u: &[f32], m: &mut [f32]) {
    for xi in 0..FREQ {
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
/// output rows and columns those tiles cover (tiles past the output's edge are not written).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn output_transform(
    p: &Winograd4Plan,
    m: &[f32],
    block: usize,
    tr0: usize,
    group: usize,
    rows: usize,
    out: &mut [f32],
) {
    let [pair_low, pair_high, quad_low, quad_high] = permutes();
    let plane = p.ho * p.wo;
    for half in 0..GROUP / LANES {
        let vector = group * GROUP / LANES + half;
        if vector >= p.vectors(rows) {
            continue;
        }
        let tile = LANES * vector;
        for k in 0..OUT_BLOCK {
            // Aᵀ M: six columns of four (array literals, as in `input_transform`).
            let col = |j| m_column(m, k, half, j);
            let [c0, c1, c2, c3, c4, c5] = [col(0), col(1), col(2), col(3), col(4), col(5)];
            // Its four rows (a literal again: `array::map`'s closure would not be built for
            // AVX-512, and the vectors would go through memory).
            let m_rows = [
                [c0[0], c1[0], c2[0], c3[0], c4[0], c5[0]],
                [c0[1], c1[1], c2[1], c3[1], c4[1], c5[1]],
                [c0[2], c1[2], c2[2], c3[2], c4[2], c5[2]],
                [c0[3], c1[3], c2[3], c3[3], c4[3], c5[3]],
            ];
            let o = block * OUT_BLOCK + k;
            for (a, row) in m_rows.into_iter().enumerate() {
                // Output columns 0..4 of the 16 tiles, interleaved into four runs of four tiles.
                let [y0, y1, y2, y3] = transform_a(row);
                let (z_low, z_high) = (
                    _mm512_permutex2var_ps(y0, pair_low, y1),
                    _mm512_permutex2var_ps(y0, pair_high, y1),
                );
                let (w_low, w_high) = (
                    _mm512_permutex2var_ps(y2, pair_low, y3),
                    _mm512_permutex2var_ps(y2, pair_high, y3),
                );
                let runs = [
                    _mm512_permutex2var_ps(z_low, quad_low, w_low),
                    _mm512_permutex2var_ps(z_low, quad_high, w_low),
                    _mm512_permutex2var_ps(z_high, quad_low, w_high),
                    _mm512_permutex2var_ps(z_high, quad_high, w_high),
                ];
                for (q, run) in runs.into_iter().enumerate() {
                    let (r, x0) = p.run_at(tile + 4 * q);
                    let y = 4 * (tr0 + r) + a;
                    if r < rows && y < p.ho && x0 < p.wo {
                        let valid = (p.wo - x0).min(LANES);
                        let dst = &mut out[o * plane + y * p.wo + x0..][..valid];
                        store_first(dst, run);
                    }
                }
            }
        }
    }
}

/// `Aᵀ` of column `j` of the channel sums `m` of output channel `k` of a block, for the 16
/// tiles of half `half` of the group (see `output_transform`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn m_column(m: &[f32], k: usize, half: usize, j: usize) -> [__m512; 4] {
    let load = |i: usize| {
        let xi = 6 * i + j;
        let src = &m[(xi * OUT_BLOCK + k) * GROUP + LANES * half..][..LANES];
        // SAFETY: `src` holds 16 floats.
        unsafe { _mm512_loadu_ps(src.as_ptr()) }
    };
    transform_a([load(0), load(1), load(2), load(3), load(4), load(5)])
}

/// Writes the first `dst.len()` (≤ 16) floats of `v` into `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn store_first(dst: &mut [f32], v: __m512) {
    let n = dst.len();
    debug_assert!(n <= LANES);
    let mask = if n >= LANES {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as u16
    };
    // SAFETY: the store writes lanes 0..n from the start of `dst`, which holds n floats;
    // masked-off lanes are not written.
    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, v) };
}

#[cfg(test)]
mod tests {
    use super::filter_transform;

    /// As F(2×2)'s test of the same name, on F(4×4) plans (the block rule is shared,
    /// `winograd_conv::forward_block_rows`; its tile rows per vector differ).
    #[test]
    fn blocks_hold_whole_register_tiles() {
        crate::cpu::winograd_conv::tests::assert_blocks_hold_whole_register_tiles(|c, side| {
            let p = super::Winograd4Plan::new([c, side, side], 64, [1, 1])?;
            Some((p.block_rows, p.row_tiles, p.tile_rows))
        });
    }

    /// `U = G g Gᵀ` of the filter that is 1 at one tap: the transform's columns, by hand.
    #[test]
    fn filter_transform_of_unit_taps() {
        let g_matrix: [[f64; 3]; 6] = [
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        for tap in 0..9 {
            let mut g = [0.0f32; 9];
            g[tap] = 1.0;
            let u = filter_transform(&g);
            let (a, b) = (tap / 3, tap % 3);
            for i in 0..6 {
                for j in 0..6 {
                    let want = g_matrix[i][a] * g_matrix[j][b];
                    let got = f64::from(u[6 * i + j]);
                    assert!(
                        (got - want).abs() <= 1e-7 * want.abs(),
                        "tap {tap}, ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
