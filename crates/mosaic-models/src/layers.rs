//! The building blocks shared by the models: linear, embedding and layer-norm layers whose weights come from a
//! [`ParamLoader`], all differentiable (layer norm goes through mosaic-kernels, never candle's no-backward op).

use candle_core::{Module, Tensor};

use crate::error::Result;
use crate::params::{Init, ParamLoader};

/// `y = x Wᵀ + b`, weights stored as PyTorch does: `(out, in)`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub fn load(loader: &ParamLoader, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        let weight = loader.get("weight", &[out_dim, in_dim], Init::Normal(std))?;
        let bias = loader.get("bias", &[out_dim], Init::Zeros)?;
        Ok(Linear {
            inner: candle_nn::Linear::new(weight, Some(bias)),
        })
    }
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(x)
    }
}

/// A lookup table `(vocab, hidden)`.
#[derive(Debug, Clone)]
pub struct Embedding {
    inner: candle_nn::Embedding,
}

impl Embedding {
    pub fn load(loader: &ParamLoader, vocab: usize, hidden: usize, std: f64) -> Result<Self> {
        let weight = loader.get("weight", &[vocab, hidden], Init::Normal(std))?;
        Ok(Embedding {
            inner: candle_nn::Embedding::new(weight, hidden),
        })
    }
    pub fn weight(&self) -> &Tensor {
        self.inner.embeddings()
    }
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(ids)
    }
}

/// Layer norm over the last dimension, with a backward pass (mosaic-kernels).
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
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        mosaic_kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// The activations HF configs name in `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`"gelu"`).
    Gelu,
    /// Tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
    Tanh,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "tanh" => Some(Activation::Tanh),
            _ => None,
        }
    }
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => mosaic_kernels::gelu_erf(x),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
        }
    }
}
