//! The one projection type: every `x W + b` of every model goes through [`Linear`], so a fine-tuning method
//! (LoRA) can wrap projections by name without touching a model file.

use std::sync::Arc;

use candle_core::{DType, Module, Tensor};
use mosaic_kernels::LinearLayout;

pub use super::hooks::WeightLayout;
use super::hooks::{AdapterSlot, LinearAdapter, LinearEntry};
use crate::error::Result;
use crate::grad_mode::param;
use crate::params::{Init, ParamLoader};

/// The projections HF checkpoints hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearKind {
    /// `nn.Linear` with a bias.
    Linear,
    /// `nn.Linear(bias=False)` (CLIP's `text_projection`, an untied LM head).
    NoBias,
    /// GPT-2's `Conv1D`: `(in, out)` weight and a bias.
    Conv1D,
}

/// `y = x W + b` over the last dimension, for either [`WeightLayout`], with an optional adapter on top.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    layout: WeightLayout,
    adapter: AdapterSlot,
}

impl Linear {
    /// A PyTorch-layout projection with a bias: `weight (out, in)` drawn from N(0, std²) when new, `bias` zeros.
    pub fn load(loader: &ParamLoader, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Self::load_as(loader, in_dim, out_dim, std, LinearKind::Linear)
    }

    /// A projection of the given kind, registered (for adapters) under the loader's name.
    pub fn load_as(
        loader: &ParamLoader,
        in_dim: usize,
        out_dim: usize,
        std: f64,
        kind: LinearKind,
    ) -> Result<Self> {
        let (layout, with_bias) = match kind {
            LinearKind::Linear => (WeightLayout::OutIn, true),
            LinearKind::NoBias => (WeightLayout::OutIn, false),
            LinearKind::Conv1D => (WeightLayout::InOut, true),
        };
        let shape = match layout {
            WeightLayout::OutIn => [out_dim, in_dim],
            WeightLayout::InOut => [in_dim, out_dim],
        };
        let weight = loader.get("weight", &shape, Init::Normal(std))?;
        let bias = if with_bias {
            Some(loader.get("bias", &[out_dim], Init::Zeros)?)
        } else {
            None
        };
        let linear = Self::from_weights(weight, bias, layout);
        loader.store().register_linear(
            loader.name(),
            LinearEntry {
                slot: linear.adapter.clone(),
                layout,
                in_dim,
                out_dim,
            },
        );
        Ok(linear)
    }

    /// A projection over tensors that already exist, e.g. an LM head tied to the token embeddings.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>, layout: WeightLayout) -> Self {
        Linear {
            weight,
            bias,
            layout,
            adapter: AdapterSlot::default(),
        }
    }

    /// The weight in its stored layout (see [`layout`](Self::layout)).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// The width of the output.
    pub fn out_dim(&self) -> usize {
        let dims = self.weight.dims();
        match self.layout {
            WeightLayout::OutIn => dims[0],
            WeightLayout::InOut => dims.get(1).copied().unwrap_or(0),
        }
    }

    /// Attaches (or with `None` removes) the adapter added to this projection's output; clones share it.
    pub fn set_adapter(&self, adapter: Option<Arc<dyn LinearAdapter>>) {
        self.adapter.set(adapter)
    }

    /// `x: [..., in] -> [..., out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let weight = param(&self.weight);
        let bias = self.bias.as_ref().map(param);
        let base = if x.device().is_cpu() && x.dtype() == DType::F32 {
            // The fused op: bias in the GEMM's output, strided operands, and no weight gradient for a frozen
            // (detached) weight.
            let layout = match self.layout {
                WeightLayout::OutIn => LinearLayout::OutIn,
                WeightLayout::InOut => LinearLayout::InOut,
            };
            mosaic_kernels::linear(x, &weight, bias.as_ref(), layout)?
        } else {
            match self.layout {
                WeightLayout::OutIn => candle_nn::Linear::new(weight, bias).forward(x)?,
                WeightLayout::InOut => forward_in_out(x, &weight, bias.as_ref())?,
            }
        };
        match self.adapter.get() {
            Some(adapter) => adapter.forward(x, base),
            None => Ok(base),
        }
    }

    /// As [`forward`](Self::forward), over `x: [..., in]` flattened to `[rows, in]` first: one 2-D product for
    /// any rank (the vocabulary heads compute their logits this way).
    pub fn forward_rows(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let in_dim = dims.last().copied().unwrap_or(1).max(1);
        let y = self.forward(&x.reshape((x.elem_count() / in_dim, in_dim))?)?;
        if let Some(last) = dims.last_mut() {
            *last = y.dim(1)?;
        }
        y.reshape(dims)
    }
}

/// `x @ W + b` with `W (in, out)`, over rows flattened to 2-D (composed ops, for devices and dtypes the fused op
/// does not take).
fn forward_in_out(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let (in_dim, out_dim) = weight.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let mut y = x.reshape((rows, in_dim))?.matmul(weight)?;
    if let Some(bias) = bias {
        y = y.broadcast_add(bias)?;
    }
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = out_dim;
    }
    y.reshape(out_dims)
}
