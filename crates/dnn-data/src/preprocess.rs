//! Preprocessing of segmentation samples: resizing (image bilinear or area through OpenCV, mask
//! always nearest), keep-aspect pad / crop, seeded joint augmentation of image and mask, colour
//! jitter on the image only, and mean/std normalisation to CHW `f32`.
//!
//! The pipeline of [`prepare`], in order (random draws in this order too):
//!
//! 1. window: the whole image, or with [`Augment::random_resized_crop`] a random rectangle of a
//!    random share of the area and an aspect ratio within ×[3/4, 4/3] of the target's;
//! 2. [`ResizeMode`]: stretch the window to the target, or keep its aspect and pad (image with
//!    the mean colour, mask with [`Preprocess::pad_label`]) or centre-crop;
//! 3. rotation by up to ±[`Augment::max_rotation_deg`] and scaling by up to ±[`Augment::max_scale`]
//!    about the centre, one affine warp for both (image bilinear, mask nearest; uncovered pixels
//!    get the mean colour and `pad_label`);
//! 4. horizontal flip of both with probability ½ ([`Augment::hflip`]);
//! 5. colour jitter (brightness, contrast, saturation) on the image only;
//! 6. `(pixel / 255 − mean[c]) / std[c]`, channels first.
//!
//! Masks are never interpolated: every output label is a label of the input or `pad_label`.
//!
//! Resampling goes through OpenCV with the `opencv` feature, and through the crate's own
//! resampler (`resample.rs`: same geometry, values within a few levels) without it.

use magma_tensor::SeededRng;
#[cfg(feature = "opencv")]
use opencv::boxed_ref::BoxedRef;
#[cfg(feature = "opencv")]
use opencv::core::{Mat, Point2f, Scalar, Size};
#[cfg(feature = "opencv")]
use opencv::imgproc;
#[cfg(feature = "opencv")]
use opencv::prelude::*;

use crate::error::{DataError, Result};
use crate::segmentation::{Mask, RgbImage, SegmentationSample};

/// How the image is resampled (the mask always uses nearest neighbour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Bilinear (OpenCV `INTER_LINEAR`, half-pixel centres).
    Bilinear,
    /// Pixel-area averaging (OpenCV `INTER_AREA`) where the image shrinks on both axes and by
    /// more than 2× on one, which avoids aliasing; bilinear otherwise (up to 2× bilinear already
    /// weighs every source pixel, and OpenCV's area resampling is several times slower at
    /// non-integer factors).
    Area,
}

/// How the image's aspect ratio is reconciled with the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Scale each axis independently to the target (distorts the aspect ratio).
    Stretch,
    /// Scale to fit inside the target, centred; the rest is padding (image: the mean colour,
    /// which normalises to 0; mask: [`Preprocess::pad_label`]).
    KeepAspectPad,
    /// Scale to cover the target and cut the centre.
    KeepAspectCrop,
}

/// The deterministic part of preprocessing: target size, resizing and normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Target `[height, width]`.
    pub size: [usize; 2],
    pub resize: ResizeMode,
    pub interpolation: Interpolation,
    /// Per-channel (R, G, B) mean of pixel values scaled to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation; every entry must be positive.
    pub std: [f32; 3],
    /// Mask value of padded or uncovered pixels (255 by default: the loss ignores it).
    pub pad_label: u8,
}

/// ImageNet channel means (RGB), the default normalisation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocess {
    /// Stretch to `size` (`[height, width]`) with [`Interpolation::Area`] — area averaging when
    /// shrinking more than 2× (the usual case for photographs), bilinear otherwise — ImageNet
    /// mean and std, and `pad_label` 255.
    pub fn new(size: [usize; 2]) -> Self {
        Self {
            size,
            resize: ResizeMode::Stretch,
            interpolation: Interpolation::Area,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            pad_label: 255,
        }
    }

    /// The padding colour: the mean as bytes, so padded pixels normalise to about 0.
    fn pad_color(&self) -> [u8; 3] {
        self.mean
            .map(|m| (m * 255.0).round().clamp(0.0, 255.0) as u8)
    }

    fn check(&self, name: &str) -> Result<()> {
        if self.size[0] == 0 || self.size[1] == 0 {
            return Err(prep_err(
                name,
                format!("target size {:?} has a zero side", self.size),
            ));
        }
        if self.std.iter().any(|&s| !(s > 0.0 && s.is_finite()))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(prep_err(
                name,
                format!(
                    "normalisation needs finite means and positive stds, got mean {:?} std {:?}",
                    self.mean, self.std
                ),
            ));
        }
        Ok(())
    }
}

/// Seeded augmentation, applied jointly to image and mask (colour jitter to the image only).
#[derive(Debug, Clone, PartialEq)]
pub struct Augment {
    /// Flip both horizontally with probability ½.
    pub hflip: bool,
    /// Random resized crop: the window covers a share of the image area drawn uniformly from
    /// this `[low, high]` range (`0 < low <= high <= 1`).
    pub random_resized_crop: Option<[f32; 2]>,
    /// Rotation drawn uniformly from ±this many degrees (0 = none).
    pub max_rotation_deg: f32,
    /// Zoom drawn uniformly from `1 ± max_scale` (0 = none; e.g. 0.1 = ±10 %).
    pub max_scale: f32,
    /// Strength of brightness, contrast and saturation jitter: each factor is drawn from
    /// `1 ± color_jitter` (0 = none). Image only.
    pub color_jitter: f32,
}

impl Augment {
    /// No augmentation (what [`prepare`] does with `None`, but still drawing nothing).
    pub fn none() -> Self {
        Self {
            hflip: false,
            random_resized_crop: None,
            max_rotation_deg: 0.0,
            max_scale: 0.0,
            color_jitter: 0.0,
        }
    }

    /// Horizontal flip, random resized crop of 60–100 % of the area, ±10° rotation, ±10 % scale
    /// and colour jitter 0.2.
    pub fn standard() -> Self {
        Self {
            hflip: true,
            random_resized_crop: Some([0.6, 1.0]),
            max_rotation_deg: 10.0,
            max_scale: 0.1,
            color_jitter: 0.2,
        }
    }

    /// Horizontal flip only.
    pub fn hflip_only() -> Self {
        Self {
            hflip: true,
            ..Self::none()
        }
    }

    fn check(&self, name: &str) -> Result<()> {
        if let Some([lo, hi]) = self.random_resized_crop
            && !(lo > 0.0 && lo <= hi && hi <= 1.0)
        {
            return Err(prep_err(
                name,
                format!("random_resized_crop range [{lo}, {hi}] is not within (0, 1]"),
            ));
        }
        let ok = |v: f32| v.is_finite() && v >= 0.0;
        if !(ok(self.max_rotation_deg)
            && ok(self.color_jitter)
            && ok(self.max_scale)
            && self.max_scale < 1.0)
        {
            return Err(prep_err(
                name,
                format!(
                    "augmentation strengths must be finite and non-negative (max_scale below 1): rotation {}, scale {}, jitter {}",
                    self.max_rotation_deg, self.max_scale, self.color_jitter
                ),
            ));
        }
        Ok(())
    }
}

/// A sample ready for a batch: normalised CHW image and HW mask at [`Preprocess::size`].
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedSample {
    pub name: String,
    /// `3 × H × W`, normalised.
    pub image: Vec<f32>,
    /// `H × W` class indices (and `pad_label`).
    pub mask: Vec<u8>,
    /// `[H, W]`.
    pub size: [usize; 2],
}

/// Resizes, augments (when `augment` is given, drawing only from its generator) and normalises a
/// sample. Errors name the sample when image and mask disagree in size or the configuration is
/// invalid.
pub fn prepare(
    sample: &SegmentationSample,
    pre: &Preprocess,
    augment: Option<(&Augment, &mut SeededRng)>,
) -> Result<PreparedSample> {
    let (aug, mut rng) = match augment {
        Some((a, r)) => (Some(a), Some(r)),
        None => (None, None),
    };
    let (image, mask) = geometric(sample, pre, aug, rng.as_deref_mut())?;
    let mut unit: Vec<f32> = image.data.iter().map(|&b| f32::from(b) / 255.0).collect();
    if let (Some(aug), Some(rng)) = (aug, rng)
        && aug.color_jitter > 0.0
    {
        color_jitter(&mut unit, aug.color_jitter, rng);
    }
    let [h, w] = pre.size;
    let plane = h * w;
    let mut chw = vec![0f32; 3 * plane];
    for c in 0..3 {
        let (mean, std) = (pre.mean[c], pre.std[c]);
        let out = &mut chw[c * plane..(c + 1) * plane];
        for (o, px) in out.iter_mut().zip(unit.chunks_exact(3)) {
            *o = (px[c] - mean) / std;
        }
    }
    Ok(PreparedSample {
        name: sample.name.clone(),
        image: chw,
        mask: mask.data,
        size: pre.size,
    })
}

/// The geometric part of [`prepare`] without augmentation: image and mask at `pre.size` as
/// bytes (for writing resized datasets, e.g. HDF5), with the same resizing and padding rules.
pub fn resize_sample(sample: &SegmentationSample, pre: &Preprocess) -> Result<SegmentationSample> {
    let (image, mask) = geometric(sample, pre, None, None)?;
    Ok(SegmentationSample {
        name: sample.name.clone(),
        image,
        mask,
    })
}

/// Resizes an RGB image to `[height, width]` (OpenCV, or the built-in resampler without the
/// `opencv` feature; see [`Interpolation`] for when `Area`
/// averages).
pub fn resize_rgb(
    image: &RgbImage,
    size: [usize; 2],
    interpolation: Interpolation,
) -> Result<RgbImage> {
    let [out_h, out_w] = size;
    check_rgb(image, "resize_rgb")?;
    if out_h == 0 || out_w == 0 {
        return Err(prep_err(
            "resize_rgb",
            format!("target size {size:?} has a zero side"),
        ));
    }
    let data = resize_rgb_bytes(
        &image.data,
        [image.height, image.width],
        size,
        interpolation,
        "resize_rgb",
    )?;
    Ok(RgbImage {
        width: out_w,
        height: out_h,
        data,
    })
}

/// Resizes a mask to `[height, width]` by nearest neighbour at pixel centres: output pixel
/// `(y, x)` takes input pixel `(⌊(y + ½)·h / H⌋, ⌊(x + ½)·w / W⌋)`. Never mixes labels.
pub fn resize_mask_nearest(mask: &Mask, size: [usize; 2]) -> Mask {
    let [out_h, out_w] = size;
    let (h, w) = (mask.height, mask.width);
    if (out_h, out_w) == (h, w) {
        return mask.clone();
    }
    let xs: Vec<usize> = (0..out_w).map(|x| nearest_index(x, w, out_w)).collect();
    let mut data = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        let row = &mask.data[nearest_index(y, h, out_h) * w..][..w];
        data.extend(xs.iter().map(|&x| row[x]));
    }
    Mask {
        width: out_w,
        height: out_h,
        data,
    }
}

/// The source index of output index `i` when `n` samples map onto `out`.
fn nearest_index(i: usize, n: usize, out: usize) -> usize {
    (((2 * i + 1) * n) / (2 * out)).min(n.saturating_sub(1))
}

/// A rectangle of source pixels: `[x0, y0, width, height]`.
type Window = [usize; 4];

fn check_rgb(image: &RgbImage, name: &str) -> Result<()> {
    if image.width == 0 || image.height == 0 || image.data.len() != image.width * image.height * 3 {
        return Err(prep_err(
            name,
            format!(
                "image of {}x{} holds {} bytes, expected {}",
                image.width,
                image.height,
                image.data.len(),
                image.width * image.height * 3
            ),
        ));
    }
    Ok(())
}

/// Steps 1–4 of the pipeline: window, resize mode, rotation/scale, flip.
fn geometric(
    sample: &SegmentationSample,
    pre: &Preprocess,
    aug: Option<&Augment>,
    mut rng: Option<&mut SeededRng>,
) -> Result<(RgbImage, Mask)> {
    let name = sample.name.as_str();
    let (image, mask) = (&sample.image, &sample.mask);
    pre.check(name)?;
    check_rgb(image, name)?;
    if mask.width != image.width
        || mask.height != image.height
        || mask.data.len() != mask.width * mask.height
    {
        return Err(prep_err(
            name,
            format!(
                "image is {}x{} but mask is {}x{} ({} bytes)",
                image.width,
                image.height,
                mask.width,
                mask.height,
                mask.data.len()
            ),
        ));
    }
    if let Some(aug) = aug {
        aug.check(name)?;
    }
    let [out_h, out_w] = pre.size;
    let (w, h) = (image.width, image.height);

    // 1. The source window.
    let mut window: Window = [0, 0, w, h];
    if let (Some(aug), Some(rng)) = (aug, rng.as_deref_mut())
        && let Some(range) = aug.random_resized_crop
    {
        window = random_window([w, h], range, out_w as f64 / out_h as f64, rng);
    }
    // 2. Resize mode.
    if pre.resize == ResizeMode::KeepAspectCrop {
        window = centre_crop(window, out_w as f64 / out_h as f64);
    }
    let [_, _, ww, wh] = window;
    let (fit_h, fit_w) = match pre.resize {
        ResizeMode::KeepAspectPad => {
            let s = (out_h as f64 / wh as f64).min(out_w as f64 / ww as f64);
            (
                ((wh as f64 * s).round() as usize).clamp(1, out_h),
                ((ww as f64 * s).round() as usize).clamp(1, out_w),
            )
        }
        _ => (out_h, out_w),
    };
    let crop_rgb = crop(&image.data, w, 3, window);
    let crop_mask = crop(&mask.data, w, 1, window);
    let fitted_rgb = if (fit_h, fit_w) == (wh, ww) {
        crop_rgb
    } else {
        resize_rgb_bytes(&crop_rgb, [wh, ww], [fit_h, fit_w], pre.interpolation, name)?
    };
    let fitted_mask = resize_mask_nearest(
        &Mask {
            width: ww,
            height: wh,
            data: crop_mask,
        },
        [fit_h, fit_w],
    )
    .data;
    let pad = pre.pad_color();
    let (mut rgb, mut labels) = if (fit_h, fit_w) == (out_h, out_w) {
        (fitted_rgb, fitted_mask)
    } else {
        let (top, left) = ((out_h - fit_h) / 2, (out_w - fit_w) / 2);
        let mut rgb: Vec<u8> = pad
            .iter()
            .copied()
            .cycle()
            .take(out_h * out_w * 3)
            .collect();
        let mut labels = vec![pre.pad_label; out_h * out_w];
        for y in 0..fit_h {
            let dst = (top + y) * out_w + left;
            rgb[dst * 3..(dst + fit_w) * 3]
                .copy_from_slice(&fitted_rgb[y * fit_w * 3..(y + 1) * fit_w * 3]);
            labels[dst..dst + fit_w].copy_from_slice(&fitted_mask[y * fit_w..(y + 1) * fit_w]);
        }
        (rgb, labels)
    };

    if let (Some(aug), Some(rng)) = (aug, rng) {
        // 3. Rotation and scale about the centre.
        let angle = if aug.max_rotation_deg > 0.0 {
            rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg)
        } else {
            0.0
        };
        let zoom = if aug.max_scale > 0.0 {
            rng.uniform(1.0 - aug.max_scale, 1.0 + aug.max_scale)
        } else {
            1.0
        };
        if angle != 0.0 || zoom != 1.0 {
            (rgb, labels) = warp(&rgb, &labels, pre, angle, zoom, name)?;
        }
        // 4. Horizontal flip.
        if aug.hflip && rng.next_f64() < 0.5 {
            flip_rows(&mut rgb, out_w, 3);
            flip_rows(&mut labels, out_w, 1);
        }
    }
    Ok((
        RgbImage {
            width: out_w,
            height: out_h,
            data: rgb,
        },
        Mask {
            width: out_w,
            height: out_h,
            data: labels,
        },
    ))
}

/// A random window of `area_range` of the image's area and aspect ratio (w/h) within
/// `aspect · [3/4, 4/3]` (log-uniform); ten tries, then the whole image.
fn random_window(
    [w, h]: [usize; 2],
    [lo, hi]: [f32; 2],
    aspect: f64,
    rng: &mut SeededRng,
) -> Window {
    let area = (w * h) as f64;
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln() as f32, (4.0f64 / 3.0).ln() as f32);
    for _ in 0..10 {
        let share = if lo < hi {
            f64::from(rng.uniform(lo, hi))
        } else {
            f64::from(lo)
        };
        let ratio = aspect * f64::from(rng.uniform(log_lo, log_hi)).exp();
        let cw = (share * area * ratio).sqrt().round() as usize;
        let ch = (share * area / ratio).sqrt().round() as usize;
        if (1..=w).contains(&cw) && (1..=h).contains(&ch) {
            let x0 = rng.below(w - cw + 1);
            let y0 = rng.below(h - ch + 1);
            return [x0, y0, cw, ch];
        }
    }
    [0, 0, w, h]
}

/// The largest centred sub-window of `window` with aspect ratio (w/h) `aspect`.
fn centre_crop([x0, y0, ww, wh]: Window, aspect: f64) -> Window {
    if (ww as f64) > wh as f64 * aspect {
        let cw = ((wh as f64 * aspect).round() as usize).clamp(1, ww);
        [x0 + (ww - cw) / 2, y0, cw, wh]
    } else {
        let ch = ((ww as f64 / aspect).round() as usize).clamp(1, wh);
        [x0, y0 + (wh - ch) / 2, ww, ch]
    }
}

/// Copies a window out of an interleaved buffer of row width `w` pixels.
fn crop(data: &[u8], w: usize, channels: usize, [x0, y0, ww, wh]: Window) -> Vec<u8> {
    if x0 == 0 && y0 == 0 && ww == w && data.len() == w * wh * channels {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(ww * wh * channels);
    for y in y0..y0 + wh {
        let start = (y * w + x0) * channels;
        out.extend_from_slice(&data[start..start + ww * channels]);
    }
    out
}

/// Mirrors every row of an interleaved buffer in place.
fn flip_rows(data: &mut [u8], w: usize, channels: usize) {
    for row in data.chunks_exact_mut(w * channels) {
        for x in 0..w / 2 {
            let (a, b) = (x * channels, (w - 1 - x) * channels);
            for c in 0..channels {
                row.swap(a + c, b + c);
            }
        }
    }
}

#[cfg(feature = "opencv")]
fn cv_error(name: &str) -> impl FnOnce(opencv::Error) -> DataError + '_ {
    move |e| prep_err(name, format!("OpenCV: {e}"))
}

/// Runs `f` on an OpenCV view of an interleaved 8-bit buffer of `channels` channels (no copy).
#[cfg(feature = "opencv")]
fn with_mat<T>(
    data: &[u8],
    [h, w]: [usize; 2],
    channels: usize,
    name: &str,
    f: impl FnOnce(&BoxedRef<'_, Mat>) -> opencv::Result<T>,
) -> Result<T> {
    let flat = Mat::new_rows_cols_with_data(h as i32, (w * channels) as i32, data)
        .map_err(cv_error(name))?;
    let shaped = flat
        .reshape(channels as i32, h as i32)
        .map_err(cv_error(name))?;
    f(&shaped).map_err(cv_error(name))
}

/// The OpenCV interpolation code for resizing `[h, w]` to `[out_h, out_w]`: `Area` is
/// `INTER_AREA` when both sides shrink and one by more than 2× (at most 2× bilinear already
/// weighs every source pixel, and OpenCV's area resampling is several times slower at
/// non-integer factors), else `INTER_LINEAR`.
#[cfg(feature = "opencv")]
pub(crate) fn interpolation_flag(
    interpolation: Interpolation,
    [h, w]: [usize; 2],
    [out_h, out_w]: [usize; 2],
) -> i32 {
    if uses_area(interpolation, [h, w], [out_h, out_w]) {
        imgproc::INTER_AREA
    } else {
        imgproc::INTER_LINEAR
    }
}

/// Whether resizing `[h, w]` to `[out_h, out_w]` with `interpolation` averages areas: `Area`
/// when both sides shrink and one by more than 2×.
pub(crate) fn uses_area(
    interpolation: Interpolation,
    [h, w]: [usize; 2],
    [out_h, out_w]: [usize; 2],
) -> bool {
    let shrinks = out_h <= h && out_w <= w;
    let strongly = h > 2 * out_h || w > 2 * out_w;
    interpolation == Interpolation::Area && shrinks && strongly
}

/// Resizes RGB bytes `[h, w]` to `[out_h, out_w]`: OpenCV with the `opencv` feature, the
/// built-in resampler without it.
fn resize_rgb_bytes(
    data: &[u8],
    hw: [usize; 2],
    out: [usize; 2],
    interpolation: Interpolation,
    name: &str,
) -> Result<Vec<u8>> {
    #[cfg(feature = "opencv")]
    {
        cv_resize_rgb(data, hw, out, interpolation, name)
    }
    #[cfg(not(feature = "opencv"))]
    {
        let _ = name;
        let area = uses_area(interpolation, hw, out);
        Ok(crate::resample::resize(data, hw, out, 3, area))
    }
}

/// Rotates by `angle` degrees (counter-clockwise) and scales by `zoom` about the centre: image
/// bilinear with the mean colour outside, mask nearest with `pad_label` outside (the built-in
/// resampler; OpenCV's `warpAffine` with the `opencv` feature).
#[cfg(not(feature = "opencv"))]
fn warp(
    rgb: &[u8],
    labels: &[u8],
    pre: &Preprocess,
    angle: f32,
    zoom: f32,
    _name: &str,
) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok(crate::resample::warp_rotate(
        rgb,
        labels,
        pre.size,
        angle,
        zoom,
        pre.pad_color(),
        pre.pad_label,
    ))
}

#[cfg(feature = "opencv")]
fn mat_bytes(mat: &Mat, name: &str) -> Result<Vec<u8>> {
    if mat.is_continuous() {
        return Ok(mat.data_bytes().map_err(cv_error(name))?.to_vec());
    }
    let copy = mat.try_clone().map_err(cv_error(name))?;
    Ok(copy.data_bytes().map_err(cv_error(name))?.to_vec())
}

/// OpenCV resize of RGB bytes `[h, w]` to `[out_h, out_w]`.
#[cfg(feature = "opencv")]
fn cv_resize_rgb(
    data: &[u8],
    [h, w]: [usize; 2],
    [out_h, out_w]: [usize; 2],
    interpolation: Interpolation,
    name: &str,
) -> Result<Vec<u8>> {
    let flag = interpolation_flag(interpolation, [h, w], [out_h, out_w]);
    let mut dst = Mat::default();
    with_mat(data, [h, w], 3, name, |src| {
        imgproc::resize(
            src,
            &mut dst,
            Size::new(out_w as i32, out_h as i32),
            0.0,
            0.0,
            flag,
        )
    })?;
    mat_bytes(&dst, name)
}

/// Rotates by `angle` degrees (counter-clockwise) and scales by `zoom` about the centre: image
/// bilinear with the mean colour outside, mask nearest with `pad_label` outside.
#[cfg(feature = "opencv")]
fn warp(
    rgb: &[u8],
    labels: &[u8],
    pre: &Preprocess,
    angle: f32,
    zoom: f32,
    name: &str,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let [h, w] = pre.size;
    let centre = Point2f::new((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let m = imgproc::get_rotation_matrix_2d(centre, f64::from(angle), f64::from(zoom))
        .map_err(cv_error(name))?;
    let size = Size::new(w as i32, h as i32);
    let pad = pre.pad_color();
    let fill = Scalar::new(f64::from(pad[0]), f64::from(pad[1]), f64::from(pad[2]), 0.0);
    let mut dst = Mat::default();
    with_mat(rgb, [h, w], 3, name, |src| {
        imgproc::warp_affine(
            src,
            &mut dst,
            &m,
            size,
            imgproc::INTER_LINEAR,
            opencv::core::BORDER_CONSTANT,
            fill,
        )
    })?;
    let rgb = mat_bytes(&dst, name)?;
    let mut dst = Mat::default();
    let fill = Scalar::all(f64::from(pre.pad_label));
    with_mat(labels, [h, w], 1, name, |src| {
        imgproc::warp_affine(
            src,
            &mut dst,
            &m,
            size,
            imgproc::INTER_NEAREST,
            opencv::core::BORDER_CONSTANT,
            fill,
        )
    })?;
    Ok((rgb, mat_bytes(&dst, name)?))
}

/// Brightness, contrast and saturation jitter on `[0, 1]` RGB values, each factor drawn from
/// `1 ± strength`, applied in that order; results are clamped to `[0, 1]`.
fn color_jitter(unit: &mut [f32], strength: f32, rng: &mut SeededRng) {
    let mut factor = || rng.uniform((1.0 - strength).max(0.0), 1.0 + strength);
    let (brightness, contrast, saturation) = (factor(), factor(), factor());
    let luma = |p: &[f32]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    for v in unit.iter_mut() {
        *v = (*v * brightness).clamp(0.0, 1.0);
    }
    let pixels = (unit.len() / 3).max(1) as f32;
    let mean = unit.chunks_exact(3).map(luma).sum::<f32>() / pixels;
    for px in unit.chunks_exact_mut(3) {
        for v in px.iter_mut() {
            *v = ((*v - mean) * contrast + mean).clamp(0.0, 1.0);
        }
        let grey = luma(px);
        for v in px.iter_mut() {
            *v = ((*v - grey) * saturation + grey).clamp(0.0, 1.0);
        }
    }
}

fn prep_err(name: &str, reason: impl Into<String>) -> DataError {
    DataError::Preprocess {
        name: name.to_string(),
        reason: reason.into(),
    }
}
