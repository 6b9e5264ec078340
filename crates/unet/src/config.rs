//! The architecture of a U-Net, serialisable into checkpoints.

use serde::{Deserialize, Serialize};

/// How the decoder doubles the resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpsampleKind {
    /// 2×2 stride-2 transposed convolution (learned; the classic U-Net).
    TransposedConv,
    /// Bilinear ×2 followed by a 1×1 convolution that halves the channels (no checkerboard
    /// artefacts, fewer parameters).
    Bilinear,
}

/// The building block of each level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// Two 3×3 same-padded conv(-BN)-ReLU (U-Net).
    Plain,
    /// A residual block: two 3×3 conv-BN with an identity or 1×1-projection shortcut (ResU-Net).
    Residual,
}

/// A U-Net: `depth` down levels of `base·2^i` channels, a bottleneck of `base·2^depth`, and the
/// mirrored decoder with skip concatenations, then a 1×1 head to `classes` logits per pixel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub classes: usize,
    pub base: usize,
    pub depth: usize,
    pub upsample: UpsampleKind,
    pub block: BlockKind,
    /// Batch normalisation after each convolution (residual blocks always have it).
    pub batch_norm: bool,
    /// Dropout probability at the bottleneck (0 = none).
    pub dropout: f32,
}

impl UNetConfig {
    /// RGB in, `classes` out, base 16, depth 4, transposed-conv upsampling, BN, no dropout.
    pub fn new(in_channels: usize, classes: usize) -> Self {
        Self {
            in_channels,
            classes,
            base: 16,
            depth: 4,
            upsample: UpsampleKind::TransposedConv,
            block: BlockKind::Plain,
            batch_norm: true,
            dropout: 0.0,
        }
    }
    pub fn with_base(mut self, base: usize) -> Self {
        self.base = base;
        self
    }
    pub fn with_depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }
    pub fn with_upsample(mut self, upsample: UpsampleKind) -> Self {
        self.upsample = upsample;
        self
    }
    pub fn with_block(mut self, block: BlockKind) -> Self {
        self.block = block;
        self
    }
    pub fn with_batch_norm(mut self, batch_norm: bool) -> Self {
        self.batch_norm = batch_norm;
        self
    }
    pub fn with_dropout(mut self, dropout: f32) -> Self {
        self.dropout = dropout;
        self
    }

    /// Channels of level `i` (0 = the first encoder level, `depth` = the bottleneck).
    pub fn channels(&self, level: usize) -> usize {
        self.base << level
    }

    /// Input sizes must be multiples of this (smaller ones are padded and cropped back).
    pub fn size_multiple(&self) -> usize {
        1 << self.depth
    }

    /// `unet` or `resunet`.
    pub fn model_name(&self) -> &'static str {
        match self.block {
            BlockKind::Plain => "unet",
            BlockKind::Residual => "resunet",
        }
    }
}
