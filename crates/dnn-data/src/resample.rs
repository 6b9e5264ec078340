//! The crate's own resampling of interleaved 8-bit images, used for [`crate::prepare`] and
//! [`crate::resize_rgb`] in builds without the `opencv` feature (the GPU build, which reads
//! `.h5` datasets): same geometry as OpenCV, computed in `f32` instead of OpenCV's fixed point,
//! so pixel values stay within a few levels of OpenCV's (the unit tests compare both).
//!
//! - Resizing is separable: each output index takes weighted source indices ("taps") along each
//!   axis. Bilinear taps follow OpenCV's `INTER_LINEAR` (half-pixel centres, edge pixels
//!   replicated); area taps follow `INTER_AREA` (each output pixel averages the source box it
//!   covers, fractional edges weighted by their coverage).
//! - The affine warp inverts the forward matrix of OpenCV's `getRotationMatrix2D` and samples
//!   bilinearly (image) or at the nearest pixel, halves rounding up (mask), with a constant
//!   outside the source.

// With OpenCV the production paths use OpenCV; this module is then exercised by its tests only.
#![cfg_attr(feature = "opencv", allow(dead_code))]

/// Source indices and weights of one output index along one axis.
type Taps = Vec<(usize, f32)>;

/// OpenCV `INTER_LINEAR` taps mapping `n` source samples onto `out`.
fn bilinear_taps(n: usize, out: usize) -> Vec<Taps> {
    let scale = n as f64 / out as f64;
    (0..out)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let mut s = f.floor();
            let mut frac = f - s;
            if s < 0.0 {
                s = 0.0;
                frac = 0.0;
            }
            let mut s = s as usize;
            if s + 1 >= n {
                s = n - 1;
                frac = 0.0;
            }
            if frac == 0.0 {
                vec![(s, 1.0)]
            } else {
                vec![(s, (1.0 - frac) as f32), (s + 1, frac as f32)]
            }
        })
        .collect()
}

/// OpenCV `INTER_AREA` taps (for shrinking): output `d` averages source `[d·s, (d+1)·s)`.
fn area_taps(n: usize, out: usize) -> Vec<Taps> {
    let scale = n as f64 / out as f64;
    (0..out)
        .map(|d| {
            let f1 = d as f64 * scale;
            let f2 = f1 + scale;
            let s1 = f1.ceil() as usize;
            let s2 = (f2.floor() as usize).min(n);
            let cell = scale.min(n as f64 - f1);
            let mut taps = Vec::with_capacity(s2.saturating_sub(s1) + 2);
            if s1 as f64 - f1 > 1e-3 && s1 >= 1 {
                taps.push((s1 - 1, ((s1 as f64 - f1) / cell) as f32));
            }
            for s in s1..s2 {
                taps.push((s, (1.0 / cell) as f32));
            }
            if f2 - s2 as f64 > 1e-3 && s2 < n {
                let w = (f2 - s2 as f64).min(1.0).min(cell) / cell;
                taps.push((s2, w as f32));
            }
            taps
        })
        .collect()
}

/// Resizes interleaved 8-bit pixels of `channels` channels from `[h, w]` to `[out_h, out_w]`,
/// by area averaging when `area` is set (meant for shrinking), bilinearly otherwise.
pub(crate) fn resize(
    data: &[u8],
    [h, w]: [usize; 2],
    [out_h, out_w]: [usize; 2],
    channels: usize,
    area: bool,
) -> Vec<u8> {
    debug_assert_eq!(data.len(), h * w * channels);
    let taps = |n, out| {
        if area {
            area_taps(n, out)
        } else {
            bilinear_taps(n, out)
        }
    };
    let (xt, yt) = (taps(w, out_w), taps(h, out_h));
    // Horizontal pass: h rows of out_w pixels, in f32.
    let row_len = out_w * channels;
    let mut rows = vec![0f32; h * row_len];
    for (src, dst) in data
        .chunks_exact(w * channels)
        .zip(rows.chunks_exact_mut(row_len))
    {
        for (px, taps) in dst.chunks_exact_mut(channels).zip(&xt) {
            for &(s, weight) in taps {
                for (o, &v) in px.iter_mut().zip(&src[s * channels..(s + 1) * channels]) {
                    *o += weight * f32::from(v);
                }
            }
        }
    }
    // Vertical pass.
    let mut out = vec![0u8; out_h * row_len];
    let mut acc = vec![0f32; row_len];
    for (dst, taps) in out.chunks_exact_mut(row_len).zip(&yt) {
        acc.fill(0.0);
        for &(s, weight) in taps {
            for (a, &v) in acc.iter_mut().zip(&rows[s * row_len..(s + 1) * row_len]) {
                *a += weight * v;
            }
        }
        for (o, &a) in dst.iter_mut().zip(&acc) {
            *o = to_u8(a);
        }
    }
    out
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The inverse (destination to source) of OpenCV's `getRotationMatrix2D(centre, angle, zoom)`:
/// `[a11, a12, b1, a21, a22, b2]` with `src = (a11·x + a12·y + b1, a21·x + a22·y + b2)`.
fn inverse_rotation([cx, cy]: [f64; 2], angle_deg: f64, zoom: f64) -> [f64; 6] {
    let (sin, cos) = angle_deg.to_radians().sin_cos();
    let (alpha, beta) = (zoom * cos, zoom * sin);
    // Forward: [[alpha, beta, (1-alpha)cx - beta cy], [-beta, alpha, beta cx + (1-alpha)cy]].
    let m = [
        alpha,
        beta,
        (1.0 - alpha) * cx - beta * cy,
        -beta,
        alpha,
        beta * cx + (1.0 - alpha) * cy,
    ];
    let det = m[0] * m[4] - m[1] * m[3];
    let inv = if det != 0.0 { 1.0 / det } else { 0.0 };
    let (a11, a22, a12, a21) = (m[4] * inv, m[0] * inv, -m[1] * inv, -m[3] * inv);
    let b1 = -a11 * m[2] - a12 * m[5];
    let b2 = -a21 * m[2] - a22 * m[5];
    [a11, a12, b1, a21, a22, b2]
}

/// Rotates by `angle_deg` (counter-clockwise) and scales by `zoom` about the centre
/// `((w − 1)/2, (h − 1)/2)`, keeping size `[h, w]`: `rgb` (3 channels) bilinearly with `fill`
/// outside, `labels` (1 channel) at the nearest pixel with `fill_label` outside.
pub(crate) fn warp_rotate(
    rgb: &[u8],
    labels: &[u8],
    [h, w]: [usize; 2],
    angle_deg: f32,
    zoom: f32,
    fill: [u8; 3],
    fill_label: u8,
) -> (Vec<u8>, Vec<u8>) {
    let centre = [(w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0];
    let [a11, a12, b1, a21, a22, b2] =
        inverse_rotation(centre, f64::from(angle_deg), f64::from(zoom));
    let mut out_rgb = vec![0u8; h * w * 3];
    let mut out_labels = vec![fill_label; h * w];
    let inside = |x: i64, y: i64| x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h;
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f64, y as f64);
            let sx = a11 * xf + a12 * yf + b1;
            let sy = a21 * xf + a22 * yf + b2;
            let i = y * w + x;
            // Mask: nearest, halves rounding up.
            let (nx, ny) = ((sx + 0.5).floor() as i64, (sy + 0.5).floor() as i64);
            if inside(nx, ny) {
                out_labels[i] = labels[ny as usize * w + nx as usize];
            }
            // Image: bilinear over the four neighbours, `fill` for those outside.
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let mut px = [0f32; 3];
            for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
                for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                    let weight = wy * wx;
                    if weight == 0.0 {
                        continue;
                    }
                    let (xx, yy) = (x0 + dx, y0 + dy);
                    let src: [u8; 3] = if inside(xx, yy) {
                        let at = (yy as usize * w + xx as usize) * 3;
                        [rgb[at], rgb[at + 1], rgb[at + 2]]
                    } else {
                        fill
                    };
                    for (p, &v) in px.iter_mut().zip(&src) {
                        *p += weight * f32::from(v);
                    }
                }
            }
            for (o, &p) in out_rgb[i * 3..i * 3 + 3].iter_mut().zip(&px) {
                *o = to_u8(p);
            }
        }
    }
    (out_rgb, out_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth test image (gradients and low-frequency waves), so fixed-point differences stay
    /// small.
    fn smooth([h, w]: [usize; 2]) -> Vec<u8> {
        let mut out = Vec::with_capacity(h * w * 3);
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f32 / w as f32, y as f32 / h as f32);
                out.push((255.0 * xf) as u8);
                out.push((127.5 + 120.0 * (6.0 * xf + 4.0 * yf).sin()) as u8);
                out.push((255.0 * (1.0 - yf) * (0.5 + 0.5 * (9.0 * xf).cos())) as u8);
            }
        }
        out
    }

    #[test]
    fn taps_sum_to_one() {
        for (n, out) in [(10, 3), (7, 7), (500, 128), (3, 10), (375, 256)] {
            // Area taps serve shrinking only.
            let area = if out <= n {
                area_taps(n, out)
            } else {
                Vec::new()
            };
            for taps in bilinear_taps(n, out).iter().chain(area.iter()) {
                let sum: f32 = taps.iter().map(|t| t.1).sum();
                assert!((sum - 1.0).abs() < 1e-4, "{n}->{out}: {taps:?}");
                assert!(taps.iter().all(|&(s, _)| s < n));
            }
        }
    }

    #[test]
    fn same_size_resize_and_identity_warp_copy() {
        let img = smooth([9, 13]);
        assert_eq!(resize(&img, [9, 13], [9, 13], 3, false), img);
        let labels: Vec<u8> = (0..9 * 13).map(|i| (i % 7) as u8).collect();
        let (rgb, lab) = warp_rotate(&img, &labels, [9, 13], 0.0, 1.0, [1, 2, 3], 255);
        assert_eq!(rgb, img);
        assert_eq!(lab, labels);
    }

    #[test]
    fn integer_area_shrink_is_the_box_mean() {
        // 4x4 single channel to 2x2: each output is the mean of a 2x2 block.
        let data: Vec<u8> = (0..16).map(|v| v * 10).collect();
        let out = resize(&data, [4, 4], [2, 2], 1, true);
        assert_eq!(out, vec![25, 45, 105, 125]);
    }

    #[test]
    fn quarter_turn_moves_pixels_and_labels_exactly() {
        // A 90° counter-clockwise turn of a square about its centre is a permutation.
        let n = 5;
        let img = smooth([n, n]);
        let labels: Vec<u8> = (0..n * n).map(|i| i as u8).collect();
        let (rgb, lab) = warp_rotate(&img, &labels, [n, n], 90.0, 1.0, [0, 0, 0], 255);
        for y in 0..n {
            for x in 0..n {
                // Destination (x, y) samples source (n-1-y, x).
                let src = x * n + (n - 1 - y);
                assert_eq!(lab[y * n + x], labels[src], "({x}, {y})");
                assert_eq!(rgb[(y * n + x) * 3..][..3], img[src * 3..][..3]);
            }
        }
    }

    #[cfg(feature = "opencv")]
    mod against_opencv {
        use opencv::core::{Mat, Point2f, Scalar, Size};
        use opencv::imgproc;
        use opencv::prelude::*;

        use super::super::*;
        use super::smooth;

        fn mat(data: &[u8], [h, w]: [usize; 2], channels: usize) -> Mat {
            let flat = Mat::new_rows_cols_with_data(h as i32, (w * channels) as i32, data)
                .unwrap()
                .try_clone()
                .unwrap();
            flat.reshape(channels as i32, h as i32)
                .unwrap()
                .try_clone()
                .unwrap()
        }

        fn max_diff(a: &[u8], b: &[u8]) -> u8 {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
        }

        #[test]
        fn resize_matches_opencv_within_two_levels() {
            for (from, to, area) in [
                ([375, 500], [128, 128], true),
                ([300, 301], [100, 64], true),
                ([64, 48], [128, 100], false),
                ([100, 90], [77, 60], false),
                ([40, 40], [20, 20], true),
            ] {
                let img = smooth(from);
                let flag = if area {
                    imgproc::INTER_AREA
                } else {
                    imgproc::INTER_LINEAR
                };
                let mut dst = Mat::default();
                imgproc::resize(
                    &mat(&img, from, 3),
                    &mut dst,
                    Size::new(to[1] as i32, to[0] as i32),
                    0.0,
                    0.0,
                    flag,
                )
                .unwrap();
                let ours = resize(&img, from, to, 3, area);
                let d = max_diff(&ours, dst.data_bytes().unwrap());
                assert!(d <= 2, "{from:?} -> {to:?} area={area}: max diff {d}");
            }
        }

        #[test]
        fn warp_matches_opencv() {
            let (h, w) = (96, 80);
            let img = smooth([h, w]);
            let labels: Vec<u8> = (0..h * w)
                .map(|i| ((i % w) / 9 + 3 * ((i / w) / 11)) as u8)
                .collect();
            for (angle, zoom) in [(10.0f32, 1.0f32), (-7.5, 1.1), (3.0, 0.9)] {
                let (rgb, lab) =
                    warp_rotate(&img, &labels, [h, w], angle, zoom, [124, 116, 104], 255);
                let centre = Point2f::new((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
                let m = imgproc::get_rotation_matrix_2d(centre, f64::from(angle), f64::from(zoom))
                    .unwrap();
                let size = Size::new(w as i32, h as i32);
                let mut cv_rgb = Mat::default();
                imgproc::warp_affine(
                    &mat(&img, [h, w], 3),
                    &mut cv_rgb,
                    &m,
                    size,
                    imgproc::INTER_LINEAR,
                    opencv::core::BORDER_CONSTANT,
                    Scalar::new(124.0, 116.0, 104.0, 0.0),
                )
                .unwrap();
                let mut cv_lab = Mat::default();
                imgproc::warp_affine(
                    &mat(&labels, [h, w], 1),
                    &mut cv_lab,
                    &m,
                    size,
                    imgproc::INTER_NEAREST,
                    opencv::core::BORDER_CONSTANT,
                    Scalar::all(255.0),
                )
                .unwrap();
                let d = max_diff(&rgb, cv_rgb.data_bytes().unwrap());
                assert!(d <= 8, "angle {angle} zoom {zoom}: image max diff {d}");
                let differing = lab
                    .iter()
                    .zip(cv_lab.data_bytes().unwrap())
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    differing * 200 <= h * w,
                    "angle {angle} zoom {zoom}: {differing} of {} labels differ",
                    h * w
                );
            }
        }
    }
}
