//! Prediction on single images of any size: resize to the training size, run the network,
//! resize the class map back (nearest), and draw overlays.

use dnn_data::{Interpolation, Mask, Preprocess, RgbImage, resize_mask_nearest, resize_rgb};
use dnn_layers::{Mode, Module};
use dnn_ops::{Backend, Graph, Tensor};

use crate::error::Result;
use crate::model::UNet;

/// The class map of `image` at its own size (the network sees it at `size × size`).
pub fn predict_mask(
    model: &mut UNet,
    backend: &dyn Backend,
    image: &RgbImage,
    size: usize,
) -> Result<Mask> {
    let pre = Preprocess::new([size, size]);
    let small = resize_rgb(
        image,
        [size, size],
        if image.width > 2 * size {
            Interpolation::Area
        } else {
            Interpolation::Bilinear
        },
    )?;
    let plane = size * size;
    let mut chw = vec![0.0f32; 3 * plane];
    for p in 0..plane {
        for c in 0..3 {
            chw[c * plane + p] = (small.data[p * 3 + c] as f32 / 255.0 - pre.mean[c]) / pre.std[c];
        }
    }
    let g = Graph::inference(backend);
    let x = g.input(Tensor::from_vec(chw, &[1, 3, size, size])?);
    let out = g.value(model.forward(&g, x, Mode::Eval)?);
    let classes = out.shape()[1];
    let logits = out.to_vec()?;
    let data: Vec<u8> = (0..plane)
        .map(|p| {
            (0..classes)
                .max_by(|&a, &b| logits[a * plane + p].total_cmp(&logits[b * plane + p]))
                .unwrap_or(0) as u8
        })
        .collect();
    let mask = Mask {
        width: size,
        height: size,
        data,
    };
    Ok(resize_mask_nearest(&mask, [image.height, image.width]))
}

/// `image` with each non-background class blended in its colour (pet red, border yellow).
pub fn overlay(image: &RgbImage, mask: &Mask, class_names: &[String]) -> RgbImage {
    let mut out = image.clone();
    for (p, &k) in mask.data.iter().enumerate() {
        let colour = match class_names.get(k as usize).map(String::as_str) {
            Some("background") => None,
            Some("pet") => Some([230u8, 40, 40]),
            Some("border") => Some([250, 220, 30]),
            _ => Some([[40u8, 120, 230], [40, 200, 90], [200, 60, 220]][k as usize % 3]),
        };
        if let Some(c) = colour {
            for (v, ci) in out.data[p * 3..p * 3 + 3].iter_mut().zip(c) {
                *v = ((*v as u16 + ci as u16) / 2) as u8;
            }
        }
    }
    out
}
