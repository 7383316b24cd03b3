//! The activations HF configs name in `hidden_act` / `activation_function`, all with a backward pass.

use candle_core::Tensor;

/// An activation function of an MLP or a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`"gelu"`).
    Gelu,
    /// Tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    /// `x * sigmoid(1.702 x)` (`"quick_gelu"`, OpenAI's CLIP).
    QuickGelu,
    Relu,
    Tanh,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "quick_gelu" => Some(Activation::QuickGelu),
            "relu" => Some(Activation::Relu),
            "tanh" => Some(Activation::Tanh),
            _ => None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => mosaic_kernels::gelu_erf(x),
            Activation::GeluTanh => x.gelu(),
            // x · σ(1.702x) = silu(1.702x) / 1.702, from ops that all have a backward pass.
            Activation::QuickGelu => x.affine(1.702, 0.0)?.silu()?.affine(1.0 / 1.702, 0.0),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
        }
    }
}
