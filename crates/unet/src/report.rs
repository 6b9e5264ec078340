//! What a training run leaves behind for a person: `metrics.json`, `curves.png` (loss and mIoU
//! by epoch) and `predictions.png` (image, truth and prediction overlays).

use std::path::Path;
use std::sync::OnceLock;

use dnn_data::SegmentationLoader;
use dnn_data::image_io::{PixelsRef, encode_png, write_atomic};
use dnn_layers::{Mode, Module};
use dnn_ops::{Backend, Graph};
use plotters::prelude::*;

use crate::error::{Result, UnetError};
use crate::metrics::IGNORE_LABEL;
use crate::model::UNet;
use crate::train::EpochMetrics;

fn file_err(path: &Path, reason: impl std::fmt::Display) -> UnetError {
    UnetError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Writes the per-epoch metrics as JSON (atomically).
pub fn write_metrics(path: &Path, history: &[EpochMetrics], class_names: &[String]) -> Result<()> {
    let doc = serde_json::json!({ "class_names": class_names, "epochs": history });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| file_err(path, e))?;
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// DejaVu Sans, embedded at build time when the build machine had it (see `build.rs`).
#[cfg(magma_embedded_font)]
const EMBEDDED_FONT: Option<&[u8]> =
    Some(include_bytes!(concat!(env!("OUT_DIR"), "/DejaVuSans.ttf")));
#[cfg(not(magma_embedded_font))]
const EMBEDDED_FONT: Option<&[u8]> = None;

/// Fonts plotters can draw with: the embedded DejaVu Sans, else Debian's fonts-dejavu-core
/// found at run time; registered once.
fn register_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            const CANDIDATES: [&str; 3] = [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
            ];
            let bytes: &'static [u8] = match EMBEDDED_FONT {
                Some(bytes) => bytes,
                None => {
                    let found = CANDIDATES
                        .iter()
                        .find_map(|p| std::fs::read(p).ok())
                        .ok_or_else(|| format!("no DejaVuSans.ttf found (install fonts-dejavu-core); looked in {CANDIDATES:?}"))?;
                    Box::leak(found.into_boxed_slice())
                }
            };
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "DejaVuSans.ttf is not a usable font".to_string())
        })
        .clone()
}

/// Draws training loss, validation loss and validation mIoU by epoch into a PNG (atomically).
pub fn write_curves(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    register_font().map_err(|e| file_err(path, e))?;
    let (width, height) = (1000usize, 420usize);
    let mut pixels = vec![255u8; width * height * 3];
    let mut draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(&mut pixels, (width as u32, height as u32))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let last = history.last().map_or(1, |m| m.epoch).max(1);
        let first = history.first().map_or(1, |m| m.epoch);
        let max_loss = history
            .iter()
            .flat_map(|m| [m.train_loss, m.val_loss])
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(first as f64..last as f64 + 0.01, 0.0..max_loss)?;
        chart.configure_mesh().x_desc("epoch").draw()?;
        chart
            .draw_series(LineSeries::new(
                history.iter().map(|m| (m.epoch as f64, m.train_loss)),
                &BLUE,
            ))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                history.iter().map(|m| (m.epoch as f64, m.val_loss)),
                &RED,
            ))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
        let mut chart = ChartBuilder::on(&right)
            .caption("validation mIoU / fg IoU", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(first as f64..last as f64 + 0.01, 0.0..1.0)?;
        chart.configure_mesh().x_desc("epoch").draw()?;
        chart
            .draw_series(LineSeries::new(
                history.iter().map(|m| (m.epoch as f64, m.miou)),
                &GREEN,
            ))?
            .label("mIoU")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        chart
            .draw_series(LineSeries::new(
                history.iter().map(|m| (m.epoch as f64, m.fg_iou)),
                &MAGENTA,
            ))?
            .label("fg IoU")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| file_err(path, format!("drawing the curves: {e}")))?;
    encode_png(
        path,
        PixelsRef {
            width,
            height,
            channels: 3,
            data: &pixels,
        },
    )?;
    Ok(())
}

/// Overlay colour of a class (pet red, border yellow, background none; others from a palette).
fn class_colour(name: &str, k: usize) -> Option<[u8; 3]> {
    match name {
        "background" => None,
        "pet" => Some([230, 40, 40]),
        "border" => Some([250, 220, 30]),
        _ => Some(
            [
                [40, 120, 230],
                [40, 200, 90],
                [200, 60, 220],
                [240, 140, 30],
            ][k % 4],
        ),
    }
}

/// Writes a grid of up to `count` validation samples: image | truth overlay | prediction overlay.
pub fn write_predictions(
    path: &Path,
    model: &mut UNet,
    backend: &dyn Backend,
    loader: &SegmentationLoader,
    count: usize,
) -> Result<()> {
    let Some(batch) = loader.epoch(0).next() else {
        return Err(file_err(path, "no validation batch to draw"));
    };
    let batch = batch?;
    let (n, _, h, w) = batch.images.dims4("predictions")?;
    let n = n.min(count);
    let g = Graph::inference(backend);
    let x = g.input(batch.images.clone());
    let out = g.value(model.forward(&g, x, Mode::Eval)?);
    let classes = out.shape()[1];
    let logits = out.to_vec()?;
    let img = batch.images.to_vec()?;
    let masks = batch.masks.to_vec()?;
    let pre = &loader.config().preprocess;
    let names = loader.source().class_names().to_vec();
    let gap = 4;
    let (gw, gh) = (3 * w + 4 * gap, n * h + (n + 1) * gap);
    let mut grid = vec![255u8; gw * gh * 3];
    for s in 0..n {
        let top = gap + s * (h + gap);
        for y in 0..h {
            for xx in 0..w {
                let p = y * w + xx;
                let mut rgb = [0u8; 3];
                for (c, v) in rgb.iter_mut().enumerate() {
                    let val = img[(s * 3 + c) * h * w + p] * pre.std[c] + pre.mean[c];
                    *v = (val * 255.0).round().clamp(0.0, 255.0) as u8;
                }
                let truth = masks[s * h * w + p];
                let pred = (0..classes)
                    .max_by(|&a, &b| {
                        logits[(s * classes + a) * h * w + p]
                            .total_cmp(&logits[(s * classes + b) * h * w + p])
                    })
                    .unwrap_or(0);
                let overlay = |label: Option<usize>| -> [u8; 3] {
                    let colour = match label {
                        None => Some([128, 128, 128]),
                        Some(k) => names.get(k).and_then(|nm| class_colour(nm, k)),
                    };
                    match colour {
                        None => rgb,
                        Some(c) => [0, 1, 2].map(|i| ((rgb[i] as u16 + c[i] as u16) / 2) as u8),
                    }
                };
                let truth_label = (truth as i64 != IGNORE_LABEL).then_some(truth as usize);
                for (col, px) in [rgb, overlay(truth_label), overlay(Some(pred))]
                    .into_iter()
                    .enumerate()
                {
                    let left = gap + col * (w + gap);
                    let at = ((top + y) * gw + left + xx) * 3;
                    grid[at..at + 3].copy_from_slice(&px);
                }
            }
        }
    }
    // Small training sizes are enlarged (nearest neighbour) so that a person can see the masks.
    let scale = (192 / h.max(1)).max(1);
    let (sw, sh) = (gw * scale, gh * scale);
    let mut big = vec![0u8; sw * sh * 3];
    for y in 0..sh {
        for x in 0..sw {
            let src = ((y / scale) * gw + x / scale) * 3;
            big[(y * sw + x) * 3..(y * sw + x) * 3 + 3].copy_from_slice(&grid[src..src + 3]);
        }
    }
    encode_png(
        path,
        PixelsRef {
            width: sw,
            height: sh,
            channels: 3,
            data: &big,
        },
    )?;
    Ok(())
}
