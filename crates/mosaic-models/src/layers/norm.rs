//! Layer norm with a backward pass: it goes through mosaic-kernels, never candle's no-backward op.

use candle_core::Tensor;

use crate::error::Result;
use crate::grad_mode::param;
use crate::params::{Init, ParamLoader};

/// Layer norm over the last dimension: `weight (dim)` starts at ones, `bias (dim)` at zeros.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(loader: &ParamLoader, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: loader.get("weight", &[dim], Init::Ones)?,
            bias: loader.get("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }

    /// `x: [..., dim] -> [..., dim]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        mosaic_kernels::layer_norm(x, &param(&self.weight), &param(&self.bias), self.eps)
    }
}
