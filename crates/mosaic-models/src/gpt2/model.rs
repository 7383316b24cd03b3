//! The GPT-2 transformer as Hugging Face's `GPT2Model` defines it: token + position embeddings, pre-LN blocks with
//! causal self-attention, a final layer norm.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use mosaic_kernels::AttentionOptions;

use super::config::Gpt2Config;
use crate::dropout::{Dropout, Mode};
use crate::error::Result;
use crate::generation::KvCache;
use crate::layers::{Activation, Embedding, LayerNorm};
use crate::params::{Init, ParamLoader};

/// HF's `Conv1D`: `y = x W + b` with `W` stored `(in, out)` — transposed relative to a PyTorch `Linear`. The
/// parameter keeps HF's layout, so loading and saving need no transposition and the names and shapes match.
#[derive(Debug, Clone)]
pub struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    pub fn load(loader: &ParamLoader, in_dim: usize, out_dim: usize, std: f64) -> Result<Self> {
        Ok(Conv1D {
            weight: loader.get("weight", &[in_dim, out_dim], Init::Normal(std))?,
            bias: loader.get("bias", &[out_dim], Init::Zeros)?,
        })
    }

    /// `(in, out)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let (in_dim, out_dim) = self.weight.dims2()?;
        let rows = x.elem_count() / in_dim.max(1);
        let y = x
            .reshape((rows, in_dim))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?;
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = out_dim;
        }
        y.reshape(out_dims)
    }
}

#[derive(Debug, Clone)]
struct Gpt2Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
    heads: usize,
    scale: f64,
    attn_pdrop: f32,
    resid_dropout: Dropout,
    mode: Arc<Mode>,
}

impl Gpt2Attention {
    fn load(l: &ParamLoader, c: &Gpt2Config, layer: usize, mode: &Arc<Mode>) -> Result<Self> {
        let (h, std) = (c.n_embd, c.initializer_range);
        // HF scales the output projections' init by 1/sqrt(2 n_layer) (GPT-2 paper, "c_proj" special case).
        let proj_std = std / (2.0 * c.n_layer.max(1) as f64).sqrt();
        let mut scale = if c.scale_attn_weights {
            1.0 / (c.head_dim() as f64).sqrt()
        } else {
            1.0
        };
        if c.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        Ok(Gpt2Attention {
            c_attn: Conv1D::load(&l.pp("c_attn"), h, 3 * h, std)?,
            c_proj: Conv1D::load(&l.pp("c_proj"), h, h, proj_std)?,
            heads: c.n_head,
            scale,
            attn_pdrop: c.attn_pdrop as f32,
            resid_dropout: Dropout::new(c.resid_pdrop as f32, mode.clone()),
            mode: mode.clone(),
        })
    }

    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        x.reshape((b, t, self.heads, h / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `mask`: (B, past + T) over the cached and the new keys; `segments`: (B, T), no cache.
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        segments: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let qkv = self.c_attn.forward(x)?;
        let q = self.split_heads(&qkv.narrow(2, 0, h)?)?;
        let mut k = self.split_heads(&qkv.narrow(2, h, h)?)?;
        let mut v = self.split_heads(&qkv.narrow(2, 2 * h, h)?)?;
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, &k, &v)?;
        }
        let training = self.mode.is_training();
        let opts = AttentionOptions {
            scale: Some(self.scale),
            // Bottom-right aligned: new queries see every cached key and the new keys up to themselves.
            causal: true,
            key_padding_mask: mask.cloned(),
            dropout: if training { self.attn_pdrop } else { 0.0 },
            seed: if training { self.mode.next_seed() } else { 0 },
            segment_ids: segments.cloned(),
        };
        let ctx = mosaic_kernels::attention(&q, &k, &v, &opts)?
            .transpose(1, 2)?
            .reshape((b, t, h))?;
        self.resid_dropout.forward(&self.c_proj.forward(&ctx)?)
    }
}

#[derive(Debug, Clone)]
struct Gpt2Mlp {
    c_fc: Conv1D,
    c_proj: Conv1D,
    activation: Activation,
    dropout: Dropout,
}

impl Gpt2Mlp {
    fn load(l: &ParamLoader, c: &Gpt2Config, mode: &Arc<Mode>) -> Result<Self> {
        let std = c.initializer_range;
        let proj_std = std / (2.0 * c.n_layer.max(1) as f64).sqrt();
        Ok(Gpt2Mlp {
            c_fc: Conv1D::load(&l.pp("c_fc"), c.n_embd, c.n_inner, std)?,
            c_proj: Conv1D::load(&l.pp("c_proj"), c.n_inner, c.n_embd, proj_std)?,
            activation: c.activation(),
            dropout: Dropout::new(c.resid_pdrop as f32, mode.clone()),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let inner = self.activation.forward(&self.c_fc.forward(x)?)?;
        self.dropout.forward(&self.c_proj.forward(&inner)?)
    }
}

/// One pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
struct Gpt2Block {
    ln_1: LayerNorm,
    attn: Gpt2Attention,
    ln_2: LayerNorm,
    mlp: Gpt2Mlp,
}

impl Gpt2Block {
    fn load(l: &ParamLoader, c: &Gpt2Config, layer: usize, mode: &Arc<Mode>) -> Result<Self> {
        let eps = c.layer_norm_epsilon;
        Ok(Gpt2Block {
            ln_1: LayerNorm::load(&l.pp("ln_1"), c.n_embd, eps)?,
            attn: Gpt2Attention::load(&l.pp("attn"), c, layer, mode)?,
            ln_2: LayerNorm::load(&l.pp("ln_2"), c.n_embd, eps)?,
            mlp: Gpt2Mlp::load(&l.pp("mlp"), c, mode)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        segments: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        let attended = self
            .attn
            .forward(&self.ln_1.forward(x)?, mask, segments, cache)?;
        let x = x.add(&attended)?;
        x.add(&self.mlp.forward(&self.ln_2.forward(&x)?)?)
    }
}

/// Per-token inputs of a forward pass besides the tokens: positions, padding and the samples packed into each row.
/// `TokenLayout::default()` is HF's behaviour (positions `past..past+T`, no padding, one sample per row).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenLayout<'a> {
    /// (B, T) or (1, T); `None` means `past..past+T`. Packed rows restart at 0 with every sample, and left-padded
    /// rows skip the padding (see [`crate::generation::positions_from_mask`]).
    pub position_ids: Option<&'a Tensor>,
    /// (B, past + T), 1 = token, 0 = padding (over the cached and the new tokens).
    pub attention_mask: Option<&'a Tensor>,
    /// (B, T) segment ids of packed rows (any integer dtype): a token attends only to earlier tokens carrying the
    /// same id, so several samples share a row without seeing each other. Whole sequences only (no key/value
    /// cache); pair it with `position_ids` that restart per sample.
    pub segment_ids: Option<&'a Tensor>,
}

/// The transformer without the LM head: HF's `GPT2Model` (`transformer.*` in a `GPT2LMHeadModel`).
#[derive(Debug, Clone)]
pub struct Gpt2Model {
    pub wte: Embedding,
    pub wpe: Embedding,
    drop: Dropout,
    blocks: Vec<Gpt2Block>,
    ln_f: LayerNorm,
}

impl Gpt2Model {
    /// Builds the model from `l` (whose prefix is where `wte.*` lives).
    pub fn load(l: &ParamLoader, c: &Gpt2Config, mode: &Arc<Mode>) -> Result<Self> {
        let std = c.initializer_range;
        let wte = Embedding::load(&l.pp("wte"), c.vocab_size, c.n_embd, std)?;
        let wpe = Embedding::load(&l.pp("wpe"), c.n_positions, c.n_embd, std)?;
        let blocks = (0..c.n_layer)
            .map(|i| Gpt2Block::load(&l.pp("h").pp(&i.to_string()), c, i, mode))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpt2Model {
            wte,
            wpe,
            drop: Dropout::new(c.embd_pdrop as f32, mode.clone()),
            blocks,
            ln_f: LayerNorm::load(&l.pp("ln_f"), c.n_embd, c.layer_norm_epsilon)?,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Final hidden states (B, T, H), after `ln_f`.
    ///
    /// - `position_ids`: (B, T) or (1, T); `None` means `past..past+T` (HF's default), which is right for
    ///   unpadded or right-padded input. Left-padded input needs positions that skip the padding (see
    ///   [`crate::generation::positions_from_mask`]).
    /// - `attention_mask`: (B, past + T), 1 = token, 0 = padding (over the cached and the new tokens).
    /// - `cache`: keys/values of earlier tokens; the new ones are appended.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let layout = TokenLayout {
            position_ids,
            attention_mask,
            segment_ids: None,
        };
        self.forward_with_layout(input_ids, &layout, cache)
    }

    /// As [`forward`](Self::forward), with the per-token inputs (packed segments included) in one [`TokenLayout`].
    pub fn forward_with_layout(
        &self,
        input_ids: &Tensor,
        layout: &TokenLayout<'_>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let embeds = self.wte.forward(input_ids)?;
        self.forward_embeds_with_layout(&embeds, layout, cache)
    }

    /// As [`forward`](Self::forward), from token embeddings already looked up (B, T, H) — the hook for soft
    /// prompts, FGM and multimodal inputs.
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        position_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let layout = TokenLayout {
            position_ids,
            attention_mask,
            segment_ids: None,
        };
        self.forward_embeds_with_layout(inputs_embeds, &layout, cache)
    }

    /// As [`forward_embeds`](Self::forward_embeds), with the per-token inputs in one [`TokenLayout`].
    pub fn forward_embeds_with_layout(
        &self,
        inputs_embeds: &Tensor,
        layout: &TokenLayout<'_>,
        mut cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let (_, t, _) = inputs_embeds.dims3()?;
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        if layout.segment_ids.is_some() && past > 0 {
            candle_core::bail!(
                "gpt2: segment_ids describe whole packed sequences and cannot be combined with {past} cached tokens"
            )
        }
        let attention_mask = layout.attention_mask;
        let positions = match layout.position_ids {
            Some(p) => p.clone(),
            None => Tensor::arange(past as u32, (past + t) as u32, inputs_embeds.device())?
                .unsqueeze(0)?,
        };
        let positions = if positions.dtype() == DType::U32 {
            positions
        } else {
            positions.to_dtype(DType::U32)?
        };
        let pos = self.wpe.forward(&positions)?;
        let mut x = self.drop.forward(&inputs_embeds.broadcast_add(&pos)?)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = block.forward(&x, attention_mask, layout.segment_ids, layer_cache)?;
        }
        self.ln_f.forward(&x)
    }
}
