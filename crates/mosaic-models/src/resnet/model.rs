//! The ResNet backbone as HF's `ResNetModel` lays it out: a stem (`embedder`), stages of residual blocks
//! (`encoder.stages.{i}.layers.{j}`) and global average pooling.

use candle_core::Tensor;

use super::config::{LayerType, ResNetConfig};
use super::layers::{ConvLayer, Scope, max_pool2d};
use crate::error::{ModelError, Result};
use crate::layers::Activation;

/// The stem: 7×7 stride-2 convolution, batch norm, activation, then a 3×3 stride-2 max pool (`embedder.embedder`).
#[derive(Debug, Clone)]
pub struct ResNetEmbeddings {
    pub embedder: ConvLayer,
    num_channels: usize,
}

impl ResNetEmbeddings {
    pub(crate) fn load(scope: &Scope, config: &ResNetConfig) -> Result<Self> {
        Ok(ResNetEmbeddings {
            embedder: ConvLayer::load(
                &scope.pp("embedder"),
                config.num_channels,
                config.embedding_size,
                7,
                2,
                Some(config.activation()),
            )?,
            num_channels: config.num_channels,
        })
    }
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dims = pixel_values.dims();
        if dims.len() != 4 || dims[1] != self.num_channels {
            return Err(ModelError::InvalidInput(format!(
                "ResNet: pixel values must be (batch, {}, height, width), got {dims:?}",
                self.num_channels
            )));
        }
        max_pool2d(&self.embedder.forward(pixel_values)?, 3, 2, 1)
    }
}

/// The projection of a block's input when its shape changes: 1×1 convolution (with the block's stride) and batch
/// norm, no activation (HF's `ResNetShortCut`).
#[derive(Debug, Clone)]
pub struct ResNetShortCut {
    pub projection: ConvLayer,
}

/// One residual block, basic or bottleneck: `act(layer(x) + shortcut(x))`.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    /// `layer.{k}`: two 3×3 conv layers (basic) or 1×1, 3×3, 1×1 (bottleneck); the last has no activation.
    pub layer: Vec<ConvLayer>,
    /// `None`: identity (same channels, stride 1).
    pub shortcut: Option<ResNetShortCut>,
    activation: Activation,
}

/// Bottleneck blocks narrow to `out / 4` channels inside.
const BOTTLENECK_REDUCTION: usize = 4;

impl ResidualBlock {
    pub(crate) fn load(
        scope: &Scope,
        config: &ResNetConfig,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        downsample_in_bottleneck: bool,
    ) -> Result<Self> {
        let act = config.activation();
        let shortcut = if in_channels != out_channels || stride != 1 {
            // ResNetShortCut's tensors sit directly under `shortcut.` (no ConvLayer nesting, no activation).
            Some(ResNetShortCut {
                projection: ConvLayer::load(
                    &scope.pp("shortcut"),
                    in_channels,
                    out_channels,
                    1,
                    stride,
                    None,
                )?,
            })
        } else {
            None
        };
        let s = scope.pp("layer");
        let layer = match config.layer_type {
            LayerType::Basic => vec![
                ConvLayer::load(&s.pp(0), in_channels, out_channels, 3, stride, Some(act))?,
                ConvLayer::load(&s.pp(1), out_channels, out_channels, 3, 1, None)?,
            ],
            LayerType::Bottleneck => {
                let mid = out_channels / BOTTLENECK_REDUCTION;
                let (first_stride, middle_stride) = if downsample_in_bottleneck {
                    (stride, 1)
                } else {
                    (1, stride)
                };
                vec![
                    ConvLayer::load(&s.pp(0), in_channels, mid, 1, first_stride, Some(act))?,
                    ConvLayer::load(&s.pp(1), mid, mid, 3, middle_stride, Some(act))?,
                    ConvLayer::load(&s.pp(2), mid, out_channels, 1, 1, None)?,
                ]
            }
        };
        Ok(ResidualBlock {
            layer,
            shortcut,
            activation: act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layer {
            h = l.forward(&h)?;
        }
        let residual = match &self.shortcut {
            Some(s) => s.projection.forward(x)?,
            None => x.clone(),
        };
        Ok(self.activation.forward(&(h + residual)?)?)
    }
}

/// The ResNet backbone (`embedder.*`, `encoder.stages.*`).
#[derive(Debug, Clone)]
pub struct ResNetModel {
    pub embedder: ResNetEmbeddings,
    /// `encoder.stages.{i}.layers.{j}`.
    pub stages: Vec<Vec<ResidualBlock>>,
}

impl ResNetModel {
    pub(crate) fn load(scope: &Scope, config: &ResNetConfig) -> Result<Self> {
        let embedder = ResNetEmbeddings::load(&scope.pp("embedder"), config)?;
        let mut stages = Vec::with_capacity(config.depths.len());
        let mut in_channels = config.embedding_size;
        for (i, (&out_channels, &depth)) in
            config.hidden_sizes.iter().zip(&config.depths).enumerate()
        {
            // Only the first stage may keep the resolution; the stem already divided it by 4.
            let stride = if i > 0 || config.downsample_in_first_stage {
                2
            } else {
                1
            };
            let layers = scope.pp(format!("encoder.stages.{i}.layers"));
            let mut blocks = Vec::with_capacity(depth);
            for j in 0..depth {
                let (cin, s) = if j == 0 {
                    (in_channels, stride)
                } else {
                    (out_channels, 1)
                };
                // HF passes `downsample_in_bottleneck` to a stage's first block only (the others have stride 1).
                let dib = j == 0 && config.downsample_in_bottleneck;
                blocks.push(ResidualBlock::load(
                    &layers.pp(j),
                    config,
                    cin,
                    out_channels,
                    s,
                    dib,
                )?);
            }
            stages.push(blocks);
            in_channels = out_channels;
        }
        Ok(ResNetModel { embedder, stages })
    }

    /// The last feature map `(B, hidden_sizes.last(), H/32, W/32)` (or `/16` without first-stage downsampling).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.forward_stages(pixel_values, self.stages.len())
    }

    /// The feature map after the first `stages` stages (0: the stem's output), as HF's `ResNetBackbone`
    /// returns it for `out_features = ["stage{stages}"]` (`"stem"` for 0): `(B, 3, H, W) -> (B, C, H', W')`.
    pub fn forward_stages(&self, pixel_values: &Tensor, stages: usize) -> Result<Tensor> {
        if stages > self.stages.len() {
            return Err(ModelError::InvalidInput(format!(
                "ResNet: asked for the output of stage {stages}, but it has {} stages",
                self.stages.len()
            )));
        }
        let mut h = self.embedder.forward(pixel_values)?;
        for block in self.stages[..stages].iter().flatten() {
            h = block.forward(&h)?;
        }
        Ok(h)
    }
}
