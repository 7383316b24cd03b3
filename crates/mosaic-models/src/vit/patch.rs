//! Patch embedding: a convolution whose stride equals its kernel size, i.e. a linear map applied to each
//! non-overlapping `p x p` patch. Written as reshape + permute + matmul, which is exactly that convolution and has
//! a plain matmul backward (candle's conv2d has one too, but this form is simpler and fast on the CPU).

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::grad_mode::param;
use crate::params::{Init, ParamLoader};

/// `Conv2d(channels, dim, kernel_size=p, stride=p)` with PyTorch's `(dim, channels, p, p)` weight.
#[derive(Debug, Clone)]
pub struct PatchEmbedding {
    weight: Tensor,
    bias: Option<Tensor>,
    channels: usize,
    patch: usize,
    dim: usize,
}

impl PatchEmbedding {
    /// Loads `weight` (and `bias` when `with_bias`) from `loader`.
    pub fn load(
        loader: &ParamLoader,
        channels: usize,
        dim: usize,
        patch: usize,
        with_bias: bool,
        std: f64,
    ) -> Result<Self> {
        let weight = loader.get("weight", &[dim, channels, patch, patch], Init::Normal(std))?;
        let bias = if with_bias {
            Some(loader.get("bias", &[dim], Init::Zeros)?)
        } else {
            None
        };
        Ok(PatchEmbedding {
            weight,
            bias,
            channels,
            patch,
            dim,
        })
    }

    /// `(B, C, H, W)` pixels → `(B, (H/p)·(W/p), dim)` patch embeddings, patches in row-major order (as
    /// `conv(x).flatten(2).transpose(1, 2)`). `H` and `W` must be multiples of `p`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let p = self.patch;
        if c != self.channels || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
            return Err(ModelError::Unsupported(format!(
                "pixel values of shape {:?}: expected (batch, {}, H, W) with H and W multiples of the patch size {p}",
                pixels.dims(),
                self.channels
            )));
        }
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?;
        let kernel = param(&self.weight).reshape((self.dim, c * p * p))?;
        let mut out = patches.matmul(&kernel.t()?)?;
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(&param(bias))?;
        }
        Ok(out.reshape((b, gh * gw, self.dim))?)
    }
}
