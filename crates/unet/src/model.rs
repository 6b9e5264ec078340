//! The U-Net and ResU-Net modules.

use dnn_layers::layers::{
    ActivationLayer, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, ConvTranspose2d,
    ConvTranspose2dConfig, ResidualBlock, Upsample,
};
use dnn_layers::{LayerError, Mode, Module};
use dnn_ops::{Graph, Parameter, Tensor, Var};
use magma_tensor::SeededRng;

use crate::config::{BlockKind, UNetConfig, UpsampleKind};

/// Two 3×3 same-padded conv(-BN)-ReLU.
#[derive(Debug, Clone)]
struct DoubleConv {
    convs: [Conv2d; 2],
    norms: Option<[BatchNorm; 2]>,
}

impl DoubleConv {
    fn new(
        name: &str,
        i: usize,
        o: usize,
        batch_norm: bool,
        rng: &mut SeededRng,
    ) -> dnn_layers::Result<Self> {
        let conv = |i, o| {
            Conv2dConfig::new(i, o, [3, 3])
                .with_same_padding()
                .with_bias(!batch_norm)
        };
        Ok(Self {
            convs: [
                conv(i, o).init(&format!("{name}/conv1"), rng)?,
                conv(o, o).init(&format!("{name}/conv2"), rng)?,
            ],
            norms: if batch_norm {
                Some([
                    BatchNormConfig::new(o).init(&format!("{name}/bn1"))?,
                    BatchNormConfig::new(o).init(&format!("{name}/bn2"))?,
                ])
            } else {
                None
            },
        })
    }
}

impl Module for DoubleConv {
    fn forward(&mut self, g: &Graph, mut x: Var, mode: Mode) -> dnn_layers::Result<Var> {
        let mut relu = ActivationLayer::relu();
        for k in 0..2 {
            x = self.convs[k].forward(g, x, mode)?;
            x = match &mut self.norms {
                Some(norms) => norms[k].forward_relu(g, x, mode)?,
                None => relu.forward(g, x, mode)?,
            };
        }
        Ok(x)
    }
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter)) {
        for k in 0..2 {
            self.convs[k].visit_parameters(f);
            if let Some(n) = &self.norms {
                n[k].visit_parameters(f);
            }
        }
    }
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        for k in 0..2 {
            self.convs[k].visit_parameters_mut(f);
            if let Some(n) = &mut self.norms {
                n[k].visit_parameters_mut(f);
            }
        }
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        if let Some(n) = &self.norms {
            n.iter().for_each(|b| b.visit_buffers(f));
        }
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        if let Some(n) = &mut self.norms {
            n.iter_mut().for_each(|b| b.visit_buffers_mut(f));
        }
    }
    fn describe(&self) -> String {
        "DoubleConv".to_string()
    }
}

fn block(
    kind: BlockKind,
    name: &str,
    i: usize,
    o: usize,
    bn: bool,
    rng: &mut SeededRng,
) -> dnn_layers::Result<Box<dyn Module>> {
    Ok(match kind {
        BlockKind::Plain => Box::new(DoubleConv::new(name, i, o, bn, rng)?),
        BlockKind::Residual => Box::new(ResidualBlock::new(name, i, o, rng)?),
    })
}

/// The decoder's upsampling step: `channels(i+1) → channels(i)` at twice the resolution.
enum Up {
    Transposed(ConvTranspose2d),
    Bilinear(Upsample, Conv2d),
}

impl Up {
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> dnn_layers::Result<Var> {
        match self {
            Up::Transposed(t) => t.forward(g, x, mode),
            Up::Bilinear(u, c) => {
                let y = u.forward(g, x, mode)?;
                c.forward(g, y, mode)
            }
        }
    }
    fn module(&self) -> &dyn Module {
        match self {
            Up::Transposed(t) => t,
            Up::Bilinear(_, c) => c,
        }
    }
    fn module_mut(&mut self) -> &mut dyn Module {
        match self {
            Up::Transposed(t) => t,
            Up::Bilinear(_, c) => c,
        }
    }
}

/// A U-Net (or ResU-Net) for per-pixel classification: `[N, in, H, W] → [N, classes, H, W]`
/// logits, for any `H` and `W` (padded to a multiple of `2^depth` and cropped back).
pub struct UNet {
    config: UNetConfig,
    downs: Vec<Box<dyn Module>>,
    bottleneck: Box<dyn Module>,
    ups: Vec<Up>,
    up_blocks: Vec<Box<dyn Module>>,
    head: Conv2d,
    /// Seed of the bottleneck dropout masks, set per step by the trainer.
    dropout_seed: u64,
}

impl std::fmt::Debug for UNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UNet")
            .field("config", &self.config)
            .field("parameters", &self.parameter_count())
            .finish()
    }
}

impl UNet {
    /// Builds the network with parameters initialised from `rng` (He for convolutions).
    pub fn new(config: &UNetConfig, rng: &mut SeededRng) -> dnn_layers::Result<Self> {
        let c = config;
        if c.in_channels == 0 || c.classes == 0 || c.base == 0 || c.depth == 0 || c.depth > 8 {
            return Err(LayerError::Config {
                layer: "UNet".to_string(),
                reason: format!(
                    "in_channels, classes and base must be positive and depth in 1..=8: {c:?}"
                ),
            });
        }
        if !(0.0..1.0).contains(&c.dropout) {
            return Err(LayerError::Config {
                layer: "UNet".to_string(),
                reason: format!("dropout {} must be in [0, 1)", c.dropout),
            });
        }
        let mut downs = Vec::new();
        for i in 0..c.depth {
            let input = if i == 0 {
                c.in_channels
            } else {
                c.channels(i - 1)
            };
            downs.push(block(
                c.block,
                &format!("down{}", i + 1),
                input,
                c.channels(i),
                c.batch_norm,
                rng,
            )?);
        }
        let bottleneck = block(
            c.block,
            "bottleneck",
            c.channels(c.depth - 1),
            c.channels(c.depth),
            c.batch_norm,
            rng,
        )?;
        let (mut ups, mut up_blocks) = (Vec::new(), Vec::new());
        for i in (0..c.depth).rev() {
            let name = format!("up{}", i + 1);
            ups.push(match c.upsample {
                UpsampleKind::TransposedConv => Up::Transposed(
                    ConvTranspose2dConfig::up2(c.channels(i + 1), c.channels(i))
                        .init(&format!("{name}/upconv"), rng)?,
                ),
                UpsampleKind::Bilinear => Up::Bilinear(
                    Upsample::bilinear(2)?,
                    Conv2dConfig::new(c.channels(i + 1), c.channels(i), [1, 1])
                        .init(&format!("{name}/reduce"), rng)?,
                ),
            });
            up_blocks.push(block(
                c.block,
                &name,
                2 * c.channels(i),
                c.channels(i),
                c.batch_norm,
                rng,
            )?);
        }
        let head = Conv2dConfig::new(c.channels(0), c.classes, [1, 1]).init("head", rng)?;
        Ok(Self {
            config: c.clone(),
            downs,
            bottleneck,
            ups,
            up_blocks,
            head,
            dropout_seed: 0,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Sets the seed of the next forward pass's dropout mask (deterministic training).
    pub fn set_dropout_seed(&mut self, seed: u64) {
        self.dropout_seed = seed;
    }

    /// `[top, bottom, left, right]` zero padding that makes `h × w` a multiple of `2^depth`.
    pub fn padding_for(&self, h: usize, w: usize) -> [usize; 4] {
        let m = self.config.size_multiple();
        [0, h.next_multiple_of(m) - h, 0, w.next_multiple_of(m) - w]
    }
}

impl Module for UNet {
    fn forward(&mut self, g: &Graph, x: Var, mode: Mode) -> dnn_layers::Result<Var> {
        let shape = g.shape(x);
        let [_, c, h, w] = shape[..] else {
            return Err(LayerError::Data(format!(
                "UNet takes [N, C, H, W] images, got {shape:?}"
            )));
        };
        if c != self.config.in_channels {
            return Err(LayerError::Data(format!(
                "UNet was built for {} input channels, got {c} ({shape:?})",
                self.config.in_channels
            )));
        }
        let pads = self.padding_for(h, w);
        let mut x = if pads == [0; 4] { x } else { g.pad2d(x, pads)? };
        let mut skips = Vec::with_capacity(self.config.depth);
        for down in &mut self.downs {
            let y = down.forward(g, x, mode)?;
            skips.push(y);
            x = g.max_pool2d(y, dnn_ops::Pool2dAttrs::square(2))?;
        }
        x = self.bottleneck.forward(g, x, mode)?;
        if mode.is_training() && self.config.dropout > 0.0 {
            x = g.dropout(x, self.config.dropout, self.dropout_seed)?;
        }
        for (up, blk) in self.ups.iter_mut().zip(&mut self.up_blocks) {
            let skip = skips
                .pop()
                .ok_or_else(|| LayerError::Data("unbalanced U-Net".to_string()))?;
            let y = up.forward(g, x, mode)?;
            let joined = g.concat(&[skip, y], 1)?;
            // The upsampled half lives on in the concatenation; nothing reads it again.
            g.forget(y);
            x = blk.forward(g, joined, mode)?;
        }
        let logits = self.head.forward(g, x, mode)?;
        Ok(if pads == [0; 4] {
            logits
        } else {
            g.crop2d(logits, pads)?
        })
    }
    fn visit_parameters(&self, f: &mut dyn FnMut(&Parameter)) {
        self.downs.iter().for_each(|m| m.visit_parameters(f));
        self.bottleneck.visit_parameters(f);
        for (up, blk) in self.ups.iter().zip(&self.up_blocks) {
            up.module().visit_parameters(f);
            blk.visit_parameters(f);
        }
        self.head.visit_parameters(f);
    }
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&mut Parameter)) {
        self.downs
            .iter_mut()
            .for_each(|m| m.visit_parameters_mut(f));
        self.bottleneck.visit_parameters_mut(f);
        for (up, blk) in self.ups.iter_mut().zip(&mut self.up_blocks) {
            up.module_mut().visit_parameters_mut(f);
            blk.visit_parameters_mut(f);
        }
        self.head.visit_parameters_mut(f);
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &Tensor)) {
        self.downs.iter().for_each(|m| m.visit_buffers(f));
        self.bottleneck.visit_buffers(f);
        self.up_blocks.iter().for_each(|m| m.visit_buffers(f));
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.downs.iter_mut().for_each(|m| m.visit_buffers_mut(f));
        self.bottleneck.visit_buffers_mut(f);
        self.up_blocks
            .iter_mut()
            .for_each(|m| m.visit_buffers_mut(f));
    }
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{}(in {}, classes {}, base {}, depth {}, {:?} upsampling, {} parameters)",
            if c.block == BlockKind::Plain {
                "UNet"
            } else {
                "ResUNet"
            },
            c.in_channels,
            c.classes,
            c.base,
            c.depth,
            c.upsample,
            self.parameter_count()
        )
    }
    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let [n, c, h, w] = *input else { return None };
        (c == self.config.in_channels).then(|| vec![n, self.config.classes, h, w])
    }
}
