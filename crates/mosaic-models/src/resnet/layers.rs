//! The convolutional building blocks of the ResNet: convolution, batch norm with running statistics, the
//! conv–norm–activation unit HF calls `ResNetConvLayer`, and a differentiable max pool. Every op records a
//! backward pass.

use std::sync::Arc;

use candle_core::Tensor;

use super::buffers::{BufferLoader, FixedTensor, RunningStats};
use super::config::{BATCH_NORM_EPS, BATCH_NORM_MOMENTUM};
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::grad_mode::param;
use crate::layers::Activation;
use crate::params::{Init, ParamLoader};

/// A name scope for both trainable parameters and buffers (the [`ParamLoader`] does not expose its prefix).
#[derive(Clone)]
pub(crate) struct Scope<'a> {
    pub(crate) params: ParamLoader,
    name: String,
    buffers: &'a BufferLoader,
    mode: &'a Arc<Mode>,
    /// Build every batch norm as a [`FrozenBatchNorm2d`] (DETR's backbone).
    frozen_norms: bool,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(
        params: ParamLoader,
        prefix: &str,
        buffers: &'a BufferLoader,
        mode: &'a Arc<Mode>,
    ) -> Self {
        let params = if prefix.is_empty() {
            params
        } else {
            params.pp(prefix)
        };
        Scope {
            params,
            name: prefix.to_string(),
            buffers,
            mode,
            frozen_norms: false,
        }
    }
    /// The same scope with every batch norm below it frozen, as DETR's `replace_batch_norm` makes them.
    pub(crate) fn with_frozen_norms(mut self) -> Self {
        self.frozen_norms = true;
        self
    }
    /// The full name of `leaf` in this scope.
    fn full(&self, leaf: &str) -> String {
        if self.name.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.name)
        }
    }
    pub(crate) fn pp(&self, segment: impl std::fmt::Display) -> Self {
        let segment = segment.to_string();
        Scope {
            params: self.params.pp(&segment),
            name: if self.name.is_empty() {
                segment
            } else {
                format!("{}.{segment}", self.name)
            },
            buffers: self.buffers,
            mode: self.mode,
            frozen_norms: self.frozen_norms,
        }
    }
}

/// A 2-D convolution without bias (every ResNet convolution is followed by a batch norm). Weights `(out, in, k, k)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `weight`; a fresh one is drawn as HF does: Kaiming normal, fan-out mode, for ReLU (`std = √(2 / (out·k·k))`).
    pub(crate) fn load(
        scope: &Scope,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let std = (2.0 / (out_channels * kernel * kernel) as f64).sqrt();
        let weight = scope.params.get(
            "weight",
            &[out_channels, in_channels, kernel, kernel],
            Init::Normal(std),
        )?;
        Ok(Conv2d {
            weight,
            stride,
            padding,
        })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// `(B, in, H, W)` → `(B, out, H', W')` through candle's `conv2d`, whose backward gives both the input and
    /// the kernel gradients (checked against an im2col + matmul composition in the tests).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &param(&self.weight), self.stride, self.padding)
    }
}

/// Differentiable 2-D convolution `(B, C, H, W)` ⊛ `(O, C, k, k)` with zero padding and stride, on candle's
/// `conv2d`, whose backward gives the input and kernel gradients (checked against im2col + matmul in the tests).
///
/// candle 0.11's input gradient derives the transposed convolution's output padding from the height alone and
/// applies it to the width too, which gives the wrong shape when `(H + 2p − k) mod s ≠ (W + 2p − k) mod s`
/// (e.g. a 10×11 input at stride 2). Then the input is padded explicitly and cropped to exactly the rows and
/// columns the windows cover, so both output paddings are 0; pad and crop have exact backwards of their own.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (_, _, kh, kw) = weight.dims4()?;
    if kh != kw || stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        return Err(ModelError::InvalidInput(format!(
            "conv2d: a {kh}×{kw} kernel, stride {stride}, padding {padding} do not fit an input of {h}×{w}"
        )));
    }
    let k = kh;
    let (rem_h, rem_w) = (
        (h + 2 * padding - k) % stride,
        (w + 2 * padding - k) % stride,
    );
    if rem_h == rem_w {
        return Ok(x.conv2d(weight, padding, stride, 1, 1)?);
    }
    let padded = x
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?;
    let cropped =
        padded
            .narrow(2, 0, h + 2 * padding - rem_h)?
            .narrow(3, 0, w + 2 * padding - rem_w)?;
    Ok(cropped.conv2d(weight, 0, stride, 1, 1)?)
}

/// Batch norm over `(B, C, H, W)` per channel: batch statistics and a running-average update in training mode,
/// the running statistics in eval mode (PyTorch's `BatchNorm2d`, eps 1e-5, momentum 0.1).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running: Arc<RunningStats>,
    mode: Arc<Mode>,
}

impl BatchNorm2d {
    pub(crate) fn load(scope: &Scope, channels: usize) -> Result<Self> {
        Ok(BatchNorm2d {
            weight: scope.params.get("weight", &[channels], Init::Ones)?,
            bias: scope.params.get("bias", &[channels], Init::Zeros)?,
            running: scope.buffers.running(&scope.name, channels)?,
            mode: scope.mode.clone(),
        })
    }
    pub fn running_stats(&self) -> &RunningStats {
        &self.running
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.mode.is_training() {
            let out = mosaic_kernels::batch_norm_train(
                x,
                &param(&self.weight),
                &param(&self.bias),
                BATCH_NORM_EPS,
            )?;
            self.running
                .update(&out.mean, &out.var, out.count, BATCH_NORM_MOMENTUM)?;
            Ok(out.output)
        } else {
            let (mean, var) = self.running.get();
            Ok(mosaic_kernels::batch_norm_eval(
                x,
                &mean,
                &var,
                &param(&self.weight),
                &param(&self.bias),
                BATCH_NORM_EPS,
            )?)
        }
    }
}

/// Batch norm with everything fixed — affine weights and statistics, all buffers, never trained nor updated —
/// as transformers' `DetrFrozenBatchNorm2d` (`modeling_detr.py`), which DETR puts in place of every batch norm of
/// its backbone: `x · scale + (bias − running_mean · scale)` with `scale = weight / √(running_var + 1e-5)`.
/// `(B, C, H, W) -> (B, C, H, W)`; the gradient reaches `x` only.
#[derive(Debug, Clone)]
pub struct FrozenBatchNorm2d {
    /// `weight`, `bias`, `running_mean`, `running_var`, `(C,)` each, shared with the [`BufferStore`](super::BufferStore).
    tensors: [Arc<FixedTensor>; 4],
}

impl FrozenBatchNorm2d {
    pub(crate) fn load(scope: &Scope, channels: usize) -> Result<Self> {
        let b = scope.buffers;
        Ok(FrozenBatchNorm2d {
            tensors: [
                b.fixed(&scope.full("weight"), channels, 1.0)?,
                b.fixed(&scope.full("bias"), channels, 0.0)?,
                b.fixed(&scope.full("running_mean"), channels, 0.0)?,
                b.fixed(&scope.full("running_var"), channels, 1.0)?,
            ],
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [weight, bias, mean, var] = self.tensors.each_ref().map(|t| t.get());
        let shape = (1, weight.dim(0)?, 1, 1);
        // As transformers computes it: `weight * (running_var + eps).rsqrt()`, then `bias - running_mean * scale`
        // (over C values: negligible next to the convolution, and always the current buffers).
        let scale = weight.mul(&var.affine(1.0, BATCH_NORM_EPS)?.sqrt()?.recip()?)?;
        let shift = bias.sub(&mean.mul(&scale)?)?;
        Ok(x.broadcast_mul(&scale.reshape(shape)?)?
            .broadcast_add(&shift.reshape(shape)?)?)
    }
}

/// The normalisation of a [`ConvLayer`]: a trainable batch norm, or a frozen one (DETR's backbone).
#[derive(Debug, Clone)]
pub enum Normalization {
    Batch(BatchNorm2d),
    Frozen(FrozenBatchNorm2d),
}

impl Normalization {
    pub(crate) fn load(scope: &Scope, channels: usize) -> Result<Self> {
        Ok(if scope.frozen_norms {
            Normalization::Frozen(FrozenBatchNorm2d::load(scope, channels)?)
        } else {
            Normalization::Batch(BatchNorm2d::load(scope, channels)?)
        })
    }
    /// The running statistics of a trainable batch norm (`None` when frozen).
    pub fn running_stats(&self) -> Option<&RunningStats> {
        match self {
            Normalization::Batch(bn) => Some(bn.running_stats()),
            Normalization::Frozen(_) => None,
        }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Normalization::Batch(bn) => bn.forward(x),
            Normalization::Frozen(bn) => bn.forward(x),
        }
    }
}

/// Convolution, batch norm, then (optionally) the activation: HF's `ResNetConvLayer`
/// (`convolution.weight`, `normalization.*`), padding `kernel / 2`.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    pub convolution: Conv2d,
    pub normalization: Normalization,
    activation: Option<Activation>,
}

impl ConvLayer {
    pub(crate) fn load(
        scope: &Scope,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        activation: Option<Activation>,
    ) -> Result<Self> {
        Ok(ConvLayer {
            convolution: Conv2d::load(
                &scope.pp("convolution"),
                in_channels,
                out_channels,
                kernel,
                stride,
                kernel / 2,
            )?,
            normalization: Normalization::load(&scope.pp("normalization"), out_channels)?,
            activation,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.normalization.forward(&self.convolution.forward(x)?)?;
        match self.activation {
            Some(act) => Ok(act.forward(&y)?),
            None => Ok(y),
        }
    }
}

/// Max pool over `(B, C, H, W)` with implicit `-inf` padding (PyTorch's `MaxPool2d`, floor mode), composed from
/// differentiable candle ops: candle's own `max_pool2d` has no padding and no backward when kernel ≠ stride.
///
/// The window maximum is an element-wise maximum over the `kernel²` strided views of the padded input; where
/// several window entries tie for the maximum the gradient is shared between them (PyTorch sends it all to the
/// first one) — the same total, and ties between distinct positive activations practically never happen.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if kernel == 0
        || stride == 0
        || 2 * padding > kernel
        || h + 2 * padding < kernel
        || w + 2 * padding < kernel
    {
        return Err(ModelError::InvalidInput(format!(
            "max_pool2d: kernel {kernel}, stride {stride}, padding {padding} do not fit an input of {h}×{w}"
        )));
    }
    let padded = if padding > 0 {
        let side = |rows: usize, cols: usize| {
            Tensor::full(f32::NEG_INFINITY, (b, c, rows, cols), x.device())?.to_dtype(x.dtype())
        };
        let wide = Tensor::cat(&[side(h, padding)?, x.clone(), side(h, padding)?], 3)?;
        let full_w = w + 2 * padding;
        Tensor::cat(&[side(padding, full_w)?, wide, side(padding, full_w)?], 2)?
    } else {
        x.clone()
    };
    let out_h = (h + 2 * padding - kernel) / stride + 1;
    let out_w = (w + 2 * padding - kernel) / stride + 1;
    let offsets = |offset: usize, n: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..n).map(|o| (offset + o * stride) as u32).collect();
        Ok(Tensor::from_vec(idx, n, x.device())?)
    };
    let mut best: Option<Tensor> = None;
    for di in 0..kernel {
        let rows = padded.index_select(&offsets(di, out_h)?, 2)?;
        for dj in 0..kernel {
            let view = rows.index_select(&offsets(dj, out_w)?, 3)?;
            best = Some(match best {
                Some(m) => m.maximum(&view)?,
                None => view,
            });
        }
    }
    best.ok_or_else(|| ModelError::InvalidInput("max_pool2d: empty kernel".into()))
}
