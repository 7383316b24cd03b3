//! The two-branch CNN of the "ResNet fusion" example: two small convolution stacks, one per image or view,
//! whose feature maps are summed before global average pooling (early-to-mid fusion of two visual inputs).

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::grad_mode::param;
use crate::params::{Init, ParamLoader};
use crate::resnet::conv2d;

/// One `conv 3×3 (stride 1, padding 1) → ReLU` unit; no batch norm, so the convolution has a bias.
#[derive(Debug, Clone)]
struct ConvRelu {
    weight: Tensor,
    bias: Tensor,
}

impl ConvRelu {
    fn load(loader: &ParamLoader, in_channels: usize, out_channels: usize) -> Result<Self> {
        // Kaiming normal, fan-out, for ReLU, as the ResNet's convolutions start.
        let std = (2.0 / (out_channels * 9) as f64).sqrt();
        Ok(ConvRelu {
            weight: loader.get(
                "weight",
                &[out_channels, in_channels, 3, 3],
                Init::Normal(std),
            )?,
            bias: loader.get("bias", &[out_channels], Init::Zeros)?,
        })
    }

    /// `(B, in, H, W) -> (B, out, H, W)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv2d(x, &param(&self.weight), 1, 1)?;
        let bias = param(&self.bias).reshape((1, (), 1, 1))?;
        Ok(y.broadcast_add(&bias)?.relu()?)
    }
}

/// Two convolution branches `a`, `b` of `layers` conv–ReLU units each, summed, then averaged over space.
///
/// Parameters: `branches.{0,1}.layers.{j}.weight (channels, in, 3, 3)` and `….bias (channels)`, where `in` is
/// the branch's input channels for `j = 0` and `channels` after.
#[derive(Debug, Clone)]
pub struct TwoBranchCnn {
    in_channels: [usize; 2],
    channels: usize,
    branches: [Vec<ConvRelu>; 2],
}

impl TwoBranchCnn {
    /// Branches over `in_channels[0]` and `in_channels[1]` input channels, each `layers ≥ 1` units wide
    /// `channels`.
    pub fn load(
        loader: &ParamLoader,
        in_channels: [usize; 2],
        channels: usize,
        layers: usize,
    ) -> Result<Self> {
        if layers == 0 || channels == 0 || in_channels.contains(&0) {
            return Err(ModelError::InvalidInput(format!(
                "two-branch CNN: needs at least one layer and non-zero channels, got {layers} layers, \
                 inputs {in_channels:?} → {channels}"
            )));
        }
        let branch = |i: usize| -> Result<Vec<ConvRelu>> {
            let l = loader.pp("branches").pp(&i.to_string()).pp("layers");
            (0..layers)
                .map(|j| {
                    let c_in = if j == 0 { in_channels[i] } else { channels };
                    ConvRelu::load(&l.pp(&j.to_string()), c_in, channels)
                })
                .collect()
        };
        Ok(TwoBranchCnn {
            in_channels,
            channels,
            branches: [branch(0)?, branch(1)?],
        })
    }

    /// The width of the pooled output.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `a: (B, C_a, H, W)`, `b: (B, C_b, H, W) -> (B, channels)`: the two branches' maps summed, then the
    /// mean over `H × W`. The inputs must have their branch's channels and the same batch size and spatial size.
    pub fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let shape_a = dims4("a", a)?;
        let shape_b = dims4("b", b)?;
        for (name, i, shape) in [("a", 0, shape_a), ("b", 1, shape_b)] {
            if shape.1 != self.in_channels[i] {
                return Err(ModelError::InvalidInput(format!(
                    "two-branch CNN: input {name} has {} channels, its branch expects {}",
                    shape.1, self.in_channels[i]
                )));
            }
        }
        let (ba, _, ha, wa) = shape_a;
        let (bb, _, hb, wb) = shape_b;
        if (ba, ha, wa) != (bb, hb, wb) {
            return Err(ModelError::InvalidInput(format!(
                "two-branch CNN: input a is {ba}×{ha}×{wa} (batch×height×width) and input b is {bb}×{hb}×{wb}; \
                 the summed feature maps need them equal"
            )));
        }
        let run = |branch: &[ConvRelu], x: &Tensor| -> Result<Tensor> {
            branch
                .iter()
                .try_fold(x.clone(), |h, unit| unit.forward(&h))
        };
        let summed = (run(&self.branches[0], a)? + run(&self.branches[1], b)?)?;
        Ok(summed.mean(3)?.mean(2)?)
    }
}

fn dims4(name: &str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    x.dims4().map_err(|_| {
        ModelError::InvalidInput(format!(
            "two-branch CNN: input {name} must be (batch, channels, height, width), got shape {:?}",
            x.dims()
        ))
    })
}
