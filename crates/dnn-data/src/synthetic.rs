//! A deterministic synthetic stand-in for Oxford-IIIT Pet, written in its exact release layout
//! (`images/*.jpg`, `annotations/trimaps/*.png`, `annotations/list.txt`, `trainval.txt`,
//! `test.txt`), so every Pet code path runs on a fresh machine without downloading anything.
//!
//! Each image shows one animal-like figure — an elliptic body, a head with eyes, ears (pointed for
//! cats, hanging for dogs), legs and a tail — with fur-like texture (stripes, spots, patches or
//! solid, plus per-pixel noise), on a cluttered background: a gradient, low-frequency shading,
//! noise and a dozen small flat shapes and thin lines, about half of them in pet colours, so colour
//! alone does not separate pet from background; size, shape and texture do. Trimaps hold 1 (pet),
//! 2 (background) and 3 (border): a 3-pixel band along the outline (1 pixel inside, 2 outside).
//!
//! Four breeds: `Synthcat` (striped) and `Spotcat` (spotted) are cats, `synthdog` (solid) and
//! `patchdog` (patched) dogs — capital initial for cats, as in the release. Everything derives
//! from the seed: equal configurations write byte-identical files.

#[cfg(feature = "opencv")]
use std::path::Path;
use std::path::PathBuf;

use magma_tensor::SeededRng;

#[cfg(feature = "opencv")]
use crate::error::{Result, io_err};
#[cfg(feature = "opencv")]
use crate::image_io::{PixelsRef, encode_jpeg_bytes, encode_png_bytes, write_atomic};
use crate::segmentation::{Mask, RgbImage};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Number of images (spread evenly over the four breeds).
    pub images: usize,
    /// Largest `[height, width]`; each side is drawn from `[side · (1 − size_jitter), side]`.
    pub size: [usize; 2],
    /// Relative size variation in `[0, 1)` (0: every image is exactly `size`).
    pub size_jitter: f32,
    /// Share of images listed in `test.txt` (the rest in `trainval.txt`).
    pub test_fraction: f32,
    pub seed: u64,
    /// JPEG quality of the images (1–100).
    pub jpeg_quality: u8,
}

impl SyntheticConfig {
    /// `images` images of 128×128, 30 % test, seed 0, JPEG quality 92.
    pub fn new(images: usize) -> Self {
        Self {
            images,
            size: [128, 128],
            size_jitter: 0.0,
            test_fraction: 0.3,
            seed: 0,
            jpeg_quality: 92,
        }
    }
}

impl Default for SyntheticConfig {
    /// [`SyntheticConfig::new`] with 400 images.
    fn default() -> Self {
        Self::new(400)
    }
}

/// What [`generate_synthetic_pets`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticSummary {
    pub root: PathBuf,
    pub images: usize,
    pub trainval: usize,
    pub test: usize,
    /// The sample names, in `list.txt` order.
    pub names: Vec<String>,
}

/// A breed of the synthetic set: name, CLASS-ID, SPECIES (1 cat, 2 dog), BREED-ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticBreed {
    pub name: &'static str,
    pub class_id: u32,
    pub species: u32,
    pub breed_id: u32,
}

/// The four synthetic breeds, by class id.
pub const SYNTHETIC_BREEDS: [SyntheticBreed; 4] = [
    SyntheticBreed {
        name: "Synthcat",
        class_id: 1,
        species: 1,
        breed_id: 1,
    },
    SyntheticBreed {
        name: "Spotcat",
        class_id: 2,
        species: 1,
        breed_id: 2,
    },
    SyntheticBreed {
        name: "synthdog",
        class_id: 3,
        species: 2,
        breed_id: 1,
    },
    SyntheticBreed {
        name: "patchdog",
        class_id: 4,
        species: 2,
        breed_id: 2,
    },
];

/// The header comment of the release's `list.txt`, reproduced.
#[cfg(feature = "opencv")]
const LIST_HEADER: &str = "#Image CLASS-ID SPECIES BREED ID\n\
#ID: 1:4 Class ids\n\
#SPECIES: 1:Cat 2:Dog\n\
#BREED ID: 1-2:Cat 1:2:Dog\n\
#All images with 1st letter as captial are cat images\n\
#images with small first letter are dog images\n";

/// Writes `config.images` synthetic samples under `root` in the Oxford-IIIT Pet layout
/// (creating the folders; existing files of the same names are replaced). Every file is written
/// to a temporary name and renamed. Renders on all cores; the output does not depend on it.
/// Needs the `opencv` feature (the images are JPEGs encoded by OpenCV).
#[cfg(feature = "opencv")]
pub fn generate_synthetic_pets(root: &Path, config: &SyntheticConfig) -> Result<SyntheticSummary> {
    let images_dir = root.join("images");
    let trimaps_dir = root.join("annotations").join("trimaps");
    for dir in [&images_dir, &trimaps_dir] {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let n = config.images;
    let names: Vec<String> = (0..n).map(sample_name).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1));
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (names, images_dir, trimaps_dir) = (&names, &images_dir, &trimaps_dir);
                scope.spawn(move || -> Result<()> {
                    for i in (t..n).step_by(threads) {
                        let (image, trimap) = render_synthetic_pet(config, i);
                        let image_path = images_dir.join(format!("{}.jpg", names[i]));
                        let jpeg = encode_jpeg_bytes(&image, config.jpeg_quality, &image_path)?;
                        write_atomic(&image_path, &jpeg)?;
                        let trimap_path = trimaps_dir.join(format!("{}.png", names[i]));
                        let png = encode_png_bytes(PixelsRef::from(&trimap), &trimap_path)?;
                        write_atomic(&trimap_path, &png)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(crate::error::format_err(
                        root,
                        "a rendering thread panicked",
                    ))
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;

    // Split: a seeded shuffle; the first share is test.
    let mut order: Vec<usize> = (0..n).collect();
    SeededRng::new(config.seed ^ 0x5EED_5B1D).shuffle(&mut order);
    let mut n_test = (n as f64 * f64::from(config.test_fraction.clamp(0.0, 1.0))).round() as usize;
    if n >= 2 && config.test_fraction > 0.0 && config.test_fraction < 1.0 {
        n_test = n_test.clamp(1, n - 1);
    }
    let mut is_test = vec![false; n];
    for &i in &order[..n_test] {
        is_test[i] = true;
    }
    // List order: by breed, then number, as the release sorts by name.
    let mut listed: Vec<usize> = (0..n).collect();
    listed.sort_by_key(|&i| (i % SYNTHETIC_BREEDS.len(), i / SYNTHETIC_BREEDS.len()));
    let line = |i: usize| {
        let b = SYNTHETIC_BREEDS[i % SYNTHETIC_BREEDS.len()];
        format!("{} {} {} {}\n", names[i], b.class_id, b.species, b.breed_id)
    };
    let mut all = String::from(LIST_HEADER);
    let (mut trainval, mut test) = (String::new(), String::new());
    for &i in &listed {
        all.push_str(&line(i));
        if is_test[i] {
            test.push_str(&line(i));
        } else {
            trainval.push_str(&line(i));
        }
    }
    let annotations = root.join("annotations");
    write_atomic(&annotations.join("list.txt"), all.as_bytes())?;
    write_atomic(&annotations.join("trainval.txt"), trainval.as_bytes())?;
    write_atomic(&annotations.join("test.txt"), test.as_bytes())?;
    write_atomic(
        &annotations.join("README"),
        b"Synthetic Oxford-IIIT-Pet-like data written by magma-dnn (dnn_data::generate_synthetic_pets).\n\
          Trimaps: 1 pet, 2 background, 3 border. Lists: NAME CLASS-ID SPECIES BREED-ID.\n",
    )?;
    Ok(SyntheticSummary {
        root: root.to_path_buf(),
        images: n,
        trainval: n - n_test,
        test: n_test,
        names: listed.iter().map(|&i| names[i].clone()).collect(),
    })
}

/// The name of sample `index`: breed `index % 4`, numbered from 1 within the breed.
#[cfg(feature = "opencv")]
fn sample_name(index: usize) -> String {
    let breed = SYNTHETIC_BREEDS[index % SYNTHETIC_BREEDS.len()];
    format!("{}_{}", breed.name, index / SYNTHETIC_BREEDS.len() + 1)
}

/// Renders sample `index` of `config` without writing it: the RGB image and its trimap (values
/// 1 pet, 2 background, 3 border). Depends only on `config.seed`, `config.size`,
/// `config.size_jitter` and `index`.
pub fn render_synthetic_pet(config: &SyntheticConfig, index: usize) -> (RgbImage, Mask) {
    let mut rng =
        SeededRng::new(config.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let jitter = config.size_jitter.clamp(0.0, 0.9);
    let mut side = |s: usize| {
        let s = s.max(16) as f32;
        (s * rng.uniform(1.0 - jitter, 1.0 + f32::EPSILON))
            .round()
            .max(16.0) as usize
    };
    let (h, w) = (side(config.size[0]), side(config.size[1]));
    let breed = index % SYNTHETIC_BREEDS.len();
    let mut canvas = Canvas::new(w, h);
    paint_background(&mut canvas, &mut rng);
    let pet = Pet::random(w, h, breed, &mut rng);
    paint_pet(&mut canvas, &pet, &mut rng);
    let trimap = trimap_of(&canvas.pet, w, h);
    let data = canvas
        .rgb
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    (
        RgbImage {
            width: w,
            height: h,
            data,
        },
        Mask {
            width: w,
            height: h,
            data: trimap,
        },
    )
}

/// Fur colours.
const PET_COLORS: [[f32; 3]; 8] = [
    [200.0, 120.0, 50.0],
    [120.0, 80.0, 45.0],
    [225.0, 205.0, 160.0],
    [130.0, 130.0, 135.0],
    [45.0, 40.0, 38.0],
    [235.0, 232.0, 225.0],
    [210.0, 170.0, 90.0],
    [90.0, 55.0, 35.0],
];

/// Scene colours.
const SCENE_COLORS: [[f32; 3]; 8] = [
    [80.0, 140.0, 60.0],
    [120.0, 170.0, 220.0],
    [190.0, 190.0, 180.0],
    [150.0, 110.0, 70.0],
    [150.0, 60.0, 60.0],
    [170.0, 150.0, 120.0],
    [60.0, 130.0, 130.0],
    [55.0, 60.0, 70.0],
];

fn pick(rng: &mut SeededRng, palette: &[[f32; 3]]) -> [f32; 3] {
    let c = palette[rng.below(palette.len())];
    let d = rng.uniform(-18.0, 18.0);
    c.map(|v| v + d + rng.uniform(-8.0, 8.0))
}

/// A float RGB canvas and the pet coverage.
struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<f32>,
    pet: Vec<bool>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            rgb: vec![0.0; w * h * 3],
            pet: vec![false; w * h],
        }
    }

    fn set(&mut self, x: usize, y: usize, c: [f32; 3]) {
        let i = (y * self.w + x) * 3;
        self.rgb[i..i + 3].copy_from_slice(&c);
    }
}

/// A region of the plane.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Centre, semi-axes, rotation (cos, sin).
    Ellipse {
        cx: f32,
        cy: f32,
        a: f32,
        b: f32,
        cos: f32,
        sin: f32,
    },
    Triangle {
        p: [[f32; 2]; 3],
    },
    /// A thick segment.
    Capsule {
        p0: [f32; 2],
        p1: [f32; 2],
        r: f32,
    },
}

impl Shape {
    fn contains(&self, x: f32, y: f32) -> bool {
        match *self {
            Shape::Ellipse {
                cx,
                cy,
                a,
                b,
                cos,
                sin,
            } => {
                let (dx, dy) = (x - cx, y - cy);
                let u = dx * cos + dy * sin;
                let v = -dx * sin + dy * cos;
                (u / a).powi(2) + (v / b).powi(2) <= 1.0
            }
            Shape::Triangle { p } => {
                let side = |a: [f32; 2], b: [f32; 2]| {
                    (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])
                };
                let (d0, d1, d2) = (side(p[0], p[1]), side(p[1], p[2]), side(p[2], p[0]));
                (d0 >= 0.0 && d1 >= 0.0 && d2 >= 0.0) || (d0 <= 0.0 && d1 <= 0.0 && d2 <= 0.0)
            }
            Shape::Capsule { p0, p1, r } => {
                let (vx, vy) = (p1[0] - p0[0], p1[1] - p0[1]);
                let len2 = (vx * vx + vy * vy).max(1e-6);
                let t = (((x - p0[0]) * vx + (y - p0[1]) * vy) / len2).clamp(0.0, 1.0);
                let (px, py) = (p0[0] + t * vx - x, p0[1] + t * vy - y);
                px * px + py * py <= r * r
            }
        }
    }

    /// Pixel bounds `(x0, y0, x1, y1)`, exclusive end, clipped to `w × h`.
    fn bounds(&self, w: usize, h: usize) -> (usize, usize, usize, usize) {
        let (lo, hi) = match *self {
            Shape::Ellipse { cx, cy, a, b, .. } => {
                let r = a.max(b);
                ([cx - r, cy - r], [cx + r, cy + r])
            }
            Shape::Triangle { p } => (
                [
                    p[0][0].min(p[1][0]).min(p[2][0]),
                    p[0][1].min(p[1][1]).min(p[2][1]),
                ],
                [
                    p[0][0].max(p[1][0]).max(p[2][0]),
                    p[0][1].max(p[1][1]).max(p[2][1]),
                ],
            ),
            Shape::Capsule { p0, p1, r } => (
                [p0[0].min(p1[0]) - r, p0[1].min(p1[1]) - r],
                [p0[0].max(p1[0]) + r, p0[1].max(p1[1]) + r],
            ),
        };
        let clip = |v: f32, n: usize| (v.max(0.0) as usize).min(n);
        (
            clip(lo[0].floor(), w),
            clip(lo[1].floor(), h),
            clip(hi[0].ceil() + 1.0, w),
            clip(hi[1].ceil() + 1.0, h),
        )
    }
}

fn ellipse(cx: f32, cy: f32, a: f32, b: f32, angle: f32) -> Shape {
    Shape::Ellipse {
        cx,
        cy,
        a,
        b,
        cos: angle.cos(),
        sin: angle.sin(),
    }
}

/// Gradient, low-frequency shading, clutter shapes and noise.
fn paint_background(canvas: &mut Canvas, rng: &mut SeededRng) {
    let (w, h) = (canvas.w, canvas.h);
    let color = |rng: &mut SeededRng, pet_share: f64| {
        if rng.next_f64() < pet_share {
            pick(rng, &PET_COLORS)
        } else {
            pick(rng, &SCENE_COLORS)
        }
    };
    let (c0, c1) = (color(rng, 0.3), color(rng, 0.3));
    let angle = rng.uniform(0.0, std::f32::consts::TAU);
    let (gx, gy) = (angle.cos(), angle.sin());
    let waves: Vec<[f32; 4]> = (0..3)
        .map(|_| {
            [
                rng.uniform(0.5, 3.0) * std::f32::consts::TAU / w as f32,
                rng.uniform(0.5, 3.0) * std::f32::consts::TAU / h as f32,
                rng.uniform(0.0, std::f32::consts::TAU),
                rng.uniform(4.0, 12.0),
            ]
        })
        .collect();
    let diag = (w * w + h * h) as f32;
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 - w as f32 / 2.0, y as f32 - h as f32 / 2.0);
            let t = ((fx * gx + fy * gy) / diag.sqrt() + 0.5).clamp(0.0, 1.0);
            let shade: f32 = waves
                .iter()
                .map(|v| v[3] * (v[0] * x as f32 + v[1] * y as f32 + v[2]).sin())
                .sum();
            let c = [0, 1, 2].map(|k| c0[k] + (c1[k] - c0[k]) * t + shade + rng.normal(0.0, 4.0));
            canvas.set(x, y, c);
        }
    }
    // Clutter: small flat shapes and thin lines, about half in pet colours.
    let min_side = w.min(h) as f32;
    let count = 8 + rng.below(8);
    for _ in 0..count {
        let c = color(rng, 0.55);
        let (cx, cy) = (rng.uniform(0.0, w as f32), rng.uniform(0.0, h as f32));
        let size = min_side * rng.uniform(0.03, 0.09);
        let shapes = match rng.below(4) {
            0 => vec![ellipse(cx, cy, size, size * rng.uniform(0.8, 1.0), 0.0)],
            1 => {
                // A rotated square of side 2·size, as two triangles.
                let a = rng.uniform(0.0, std::f32::consts::PI);
                let (ca, sa) = (a.cos() * size, a.sin() * size);
                let corners = [
                    [cx - ca + sa, cy - sa - ca],
                    [cx + ca + sa, cy + sa - ca],
                    [cx + ca - sa, cy + sa + ca],
                    [cx - ca - sa, cy - sa + ca],
                ];
                vec![
                    Shape::Triangle {
                        p: [corners[0], corners[1], corners[2]],
                    },
                    Shape::Triangle {
                        p: [corners[0], corners[2], corners[3]],
                    },
                ]
            }
            2 => {
                let a = rng.uniform(0.0, std::f32::consts::TAU);
                let p = [0.0f32, 2.1, 4.2].map(|o| {
                    [
                        cx + size * 1.3 * (a + o).cos(),
                        cy + size * 1.3 * (a + o).sin(),
                    ]
                });
                vec![Shape::Triangle { p }]
            }
            _ => {
                let a = rng.uniform(0.0, std::f32::consts::PI);
                let len = min_side * rng.uniform(0.15, 0.4);
                let (dx, dy) = (a.cos() * len / 2.0, a.sin() * len / 2.0);
                vec![Shape::Capsule {
                    p0: [cx - dx, cy - dy],
                    p1: [cx + dx, cy + dy],
                    r: rng.uniform(0.8, 1.8),
                }]
            }
        };
        for shape in &shapes {
            fill(canvas, shape, c, 5.0, rng);
        }
    }
}

/// Fills `shape` with colour `c` plus noise of standard deviation `noise`.
fn fill(canvas: &mut Canvas, shape: &Shape, c: [f32; 3], noise: f32, rng: &mut SeededRng) {
    let (x0, y0, x1, y1) = shape.bounds(canvas.w, canvas.h);
    for y in y0..y1 {
        for x in x0..x1 {
            if shape.contains(x as f32 + 0.5, y as f32 + 0.5) {
                let n = rng.normal(0.0, noise);
                canvas.set(x, y, c.map(|v| v + n));
            }
        }
    }
}

/// Fur pattern of a breed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Stripes,
    Spots,
    Solid,
    Patches,
}

/// An animal figure: the union of its parts, and where to draw texture and eyes.
struct Pet {
    parts: Vec<Shape>,
    eyes: Vec<Shape>,
    /// Body centre and axis (cos, sin), for texture coordinates.
    centre: [f32; 2],
    axis: [f32; 2],
    /// Body semi-minor axis, the texture's length scale.
    scale: f32,
    pattern: Pattern,
    /// Spot or patch ellipses (in image coordinates).
    marks: Vec<Shape>,
    colors: [[f32; 3]; 2],
}

impl Pet {
    fn random(w: usize, h: usize, breed: usize, rng: &mut SeededRng) -> Pet {
        let is_cat = SYNTHETIC_BREEDS[breed].species == 1;
        let pattern = [
            Pattern::Stripes,
            Pattern::Spots,
            Pattern::Solid,
            Pattern::Patches,
        ][breed];
        let min_side = w.min(h) as f32;
        let a = min_side * rng.uniform(0.2, 0.3);
        let b = a * rng.uniform(0.5, 0.65);
        let facing: f32 = if rng.next_f64() < 0.5 { 1.0 } else { -1.0 };
        let tilt = rng.uniform(-0.35, 0.35);
        let (ca, sa) = (tilt.cos(), tilt.sin());
        // Along the body axis (towards the head) and "up" perpendicular to it.
        let along = [ca * facing, sa * facing];
        let up = [sa, -ca];
        let margin = a * 1.1;
        let cx = rng.uniform(margin, (w as f32 - margin).max(margin + 1.0));
        let cy = rng.uniform(
            margin * 0.8,
            (h as f32 - margin * 0.9).max(margin * 0.8 + 1.0),
        );
        let at = |s: f32, t: f32| [cx + along[0] * s + up[0] * t, cy + along[1] * s + up[1] * t];
        let mut parts = vec![ellipse(cx, cy, a, b, tilt)];
        // Head.
        let rh = b * rng.uniform(0.7, 0.85);
        let head = at(a * 0.95, b * 0.65);
        parts.push(ellipse(head[0], head[1], rh, rh * 0.9, tilt));
        // Snout (dogs longer).
        let snout_len = if is_cat { 0.45 } else { 0.75 };
        let snout = [
            head[0] + along[0] * rh * 0.7,
            head[1] + along[1] * rh * 0.7 + rh * 0.15,
        ];
        parts.push(ellipse(snout[0], snout[1], rh * snout_len, rh * 0.42, tilt));
        // Ears.
        for side in [-1.0f32, 1.0] {
            let base = [
                head[0] + along[0] * side * rh * 0.45 + up[0] * rh * 0.6,
                head[1] + along[1] * side * rh * 0.45 + up[1] * rh * 0.6,
            ];
            if is_cat {
                let tip = [
                    base[0] + up[0] * rh * 0.8 + along[0] * side * rh * 0.15,
                    base[1] + up[1] * rh * 0.8 + along[1] * side * rh * 0.15,
                ];
                let half = [along[0] * rh * 0.3, along[1] * rh * 0.3];
                parts.push(Shape::Triangle {
                    p: [
                        [base[0] - half[0], base[1] - half[1]],
                        [base[0] + half[0], base[1] + half[1]],
                        tip,
                    ],
                });
            } else {
                let drop = [
                    base[0] - up[0] * rh * 0.55 + along[0] * side * rh * 0.35,
                    base[1] - up[1] * rh * 0.55 + along[1] * side * rh * 0.35,
                ];
                parts.push(Shape::Capsule {
                    p0: base,
                    p1: drop,
                    r: rh * 0.28,
                });
            }
        }
        // Legs.
        let leg_len = b * rng.uniform(0.9, 1.25);
        for s in [-0.65f32, -0.4, 0.4, 0.65] {
            let top = at(a * s, -b * 0.5);
            let foot = [top[0] - up[0] * leg_len, top[1] - up[1] * leg_len];
            parts.push(Shape::Capsule {
                p0: top,
                p1: foot,
                r: b * 0.2,
            });
        }
        // Tail: a chain of capsules curving up (cats long, dogs short).
        let segments = if is_cat { 4 } else { 2 };
        let mut p = at(-a * 0.92, b * 0.1);
        let bend = rng.uniform(0.25, 0.55);
        let mut dir = [-along[0], -along[1]];
        for _ in 0..segments {
            let (c, s) = ((bend * facing).cos(), (bend * facing).sin());
            dir = [dir[0] * c - dir[1] * s, dir[0] * s + dir[1] * c];
            let q = [p[0] + dir[0] * a * 0.28, p[1] + dir[1] * a * 0.28];
            parts.push(Shape::Capsule {
                p0: p,
                p1: q,
                r: b * 0.17,
            });
            p = q;
        }
        // Eyes.
        let eye = [
            head[0] + along[0] * rh * 0.35 + up[0] * rh * 0.2,
            head[1] + along[1] * rh * 0.35 + up[1] * rh * 0.2,
        ];
        let eyes = vec![ellipse(eye[0], eye[1], rh * 0.14, rh * 0.14, 0.0)];
        // Marks.
        let marks = match pattern {
            Pattern::Spots => (0..10)
                .map(|_| {
                    let q = at(rng.uniform(-a, a), rng.uniform(-b, b));
                    let r = b * rng.uniform(0.12, 0.22);
                    ellipse(q[0], q[1], r, r, 0.0)
                })
                .collect(),
            Pattern::Patches => (0..3)
                .map(|_| {
                    let q = at(rng.uniform(-a, a * 1.2), rng.uniform(-b, b));
                    ellipse(
                        q[0],
                        q[1],
                        b * rng.uniform(0.4, 0.7),
                        b * rng.uniform(0.3, 0.5),
                        rng.uniform(0.0, 3.0),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        let c0 = pick(rng, &PET_COLORS);
        let c1 = loop {
            let c = pick(rng, &PET_COLORS);
            let d: f32 = (0..3).map(|k| (c[k] - c0[k]).abs()).sum();
            if d > 90.0 {
                break c;
            }
        };
        Pet {
            parts,
            eyes,
            centre: [cx, cy],
            axis: [ca, sa],
            scale: b,
            pattern,
            marks,
            colors: [c0, c1],
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        self.parts.iter().any(|s| s.contains(x, y))
    }
}

/// Paints the pet with fur texture and records its coverage.
fn paint_pet(canvas: &mut Canvas, pet: &Pet, rng: &mut SeededRng) {
    let (w, h) = (canvas.w, canvas.h);
    let period = pet.scale * rng.uniform(0.45, 0.7);
    let phase = rng.uniform(0.0, std::f32::consts::TAU);
    let streak_freq = rng.uniform(1.2, 2.0);
    let [c0, c1] = pet.colors;
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            if !pet.contains(fx, fy) {
                continue;
            }
            canvas.pet[y * w + x] = true;
            let (dx, dy) = (fx - pet.centre[0], fy - pet.centre[1]);
            let u = dx * pet.axis[0] + dy * pet.axis[1];
            let v = -dx * pet.axis[1] + dy * pet.axis[0];
            let t = match pet.pattern {
                Pattern::Stripes => {
                    let s = (std::f32::consts::TAU * u / period + phase + 0.15 * v).sin();
                    if s > 0.3 { 0.85 } else { 0.0 }
                }
                Pattern::Spots | Pattern::Patches => {
                    if pet.marks.iter().any(|m| m.contains(fx, fy)) {
                        0.9
                    } else {
                        0.0
                    }
                }
                Pattern::Solid => 0.15 * (v / pet.scale).clamp(-1.0, 1.0).abs(),
            };
            // Fur: fine streaks along the body axis and per-pixel noise.
            let streak = 10.0 * (streak_freq * v + 0.3 * (0.7 * u).sin()).sin();
            let noise = rng.normal(0.0, 14.0);
            let mut c = [0, 1, 2].map(|k| c0[k] + (c1[k] - c0[k]) * t + streak + noise);
            if pet.eyes.iter().any(|e| e.contains(fx, fy)) {
                c = [20.0, 20.0, 15.0];
            }
            canvas.set(x, y, c);
        }
    }
}

/// Trimap of a coverage map: 1 pet, 2 background, 3 border — pet pixels with a background pixel
/// among their 8 neighbours, and background pixels within distance 2 of a pet pixel.
fn trimap_of(pet: &[bool], w: usize, h: usize) -> Vec<u8> {
    let at = |x: isize, y: isize| -> Option<bool> {
        (x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h)
            .then(|| pet[y as usize * w + x as usize])
    };
    let mut out = vec![2u8; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let inside = pet[y as usize * w + x as usize];
            // Squared search radius: 8-neighbours inside, distance 2 outside.
            let (reach, limit): (isize, isize) = if inside { (1, 2) } else { (2, 4) };
            let mut border = false;
            'search: for dy in -reach..=reach {
                for dx in -reach..=reach {
                    if dx * dx + dy * dy > limit {
                        continue;
                    }
                    if at(x + dx, y + dy).is_some_and(|p| p != inside) {
                        border = true;
                        break 'search;
                    }
                }
            }
            out[y as usize * w + x as usize] = if border {
                3
            } else if inside {
                1
            } else {
                2
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimap_band_is_one_inside_and_two_outside() {
        // A 3-pixel-wide vertical pet stripe in a 12-pixel-wide image.
        let (w, h) = (12, 3);
        let pet: Vec<bool> = (0..w * h).map(|i| (4..7).contains(&(i % w))).collect();
        let t = trimap_of(&pet, w, h);
        assert_eq!(&t[w..2 * w], &[2, 2, 3, 3, 3, 1, 3, 3, 3, 2, 2, 2]);
    }
}
