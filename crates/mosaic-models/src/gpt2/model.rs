//! The GPT-2 transformer as Hugging Face's `GPT2Model` defines it: token + position embeddings, pre-LN blocks with
//! causal self-attention, a final layer norm.

use std::sync::Arc;

use candle_core::Tensor;

use super::config::Gpt2Config;
use crate::dropout::{Dropout, Mode};
use crate::error::Result;
use crate::layers::{
    AttentionMask, AttentionSettings, Embedding, KvCache, LayerNorm, Linear, LinearKind, Mlp,
    MultiHeadAttention, NormPlacement, QkvProjection, TransformerLayer,
};
use crate::params::ParamLoader;

/// One pre-LN block under HF's names (`ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`),
/// its parameters created in `GPT2Block`'s order. The projections are HF's `Conv1D` (weights `(in, out)`).
fn load_block(
    l: &ParamLoader,
    c: &Gpt2Config,
    layer: usize,
    mode: &Arc<Mode>,
) -> Result<TransformerLayer> {
    let (h, std, eps) = (c.n_embd, c.initializer_range, c.layer_norm_epsilon);
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
    let ln_1 = LayerNorm::load(&l.pp("ln_1"), h, eps)?;
    let attn = l.pp("attn");
    let c_attn = Linear::load_as(&attn.pp("c_attn"), h, 3 * h, std, LinearKind::Conv1D)?;
    let c_proj = Linear::load_as(&attn.pp("c_proj"), h, h, proj_std, LinearKind::Conv1D)?;
    let settings = AttentionSettings {
        heads: c.n_head,
        scale: Some(scale),
        attention_dropout: c.attn_pdrop as f32,
        output_dropout: c.resid_pdrop as f32,
    };
    let attention =
        MultiHeadAttention::new(&attn, QkvProjection::Fused(c_attn), c_proj, settings, mode);
    let ln_2 = LayerNorm::load(&l.pp("ln_2"), h, eps)?;
    let mlp = Mlp::new(
        Linear::load_as(
            &l.pp("mlp").pp("c_fc"),
            h,
            c.n_inner,
            std,
            LinearKind::Conv1D,
        )?,
        Linear::load_as(
            &l.pp("mlp").pp("c_proj"),
            c.n_inner,
            h,
            proj_std,
            LinearKind::Conv1D,
        )?,
        c.activation(),
        Dropout::new(c.resid_pdrop as f32, mode.clone()),
    );
    Ok(TransformerLayer::new(
        attention,
        ln_1,
        mlp,
        ln_2,
        NormPlacement::Before,
    ))
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
    blocks: Vec<TransformerLayer>,
    ln_f: LayerNorm,
}

impl Gpt2Model {
    /// Builds the model from `l` (whose prefix is where `wte.*` lives).
    pub fn load(l: &ParamLoader, c: &Gpt2Config, mode: &Arc<Mode>) -> Result<Self> {
        let std = c.initializer_range;
        let wte = Embedding::load(&l.pp("wte"), c.vocab_size, c.n_embd, std)?;
        let wpe = Embedding::load_positions(&l.pp("wpe"), c.n_positions, c.n_embd, std)?;
        let blocks = (0..c.n_layer)
            .map(|i| load_block(&l.pp("h").pp(&i.to_string()), c, i, mode))
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
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        if layout.segment_ids.is_some() && past > 0 {
            candle_core::bail!(
                "gpt2: segment_ids describe whole packed sequences and cannot be combined with {past} cached tokens"
            )
        }
        let x = self
            .wpe
            .add_positions(inputs_embeds, layout.position_ids, past)?;
        let mut x = self.drop.forward(&x)?;
        let mask = AttentionMask {
            causal: true,
            key_padding_mask: layout.attention_mask,
            segment_ids: layout.segment_ids,
        };
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = block.forward(&x, &mask, layer_cache)?;
        }
        self.ln_f.forward(&x)
    }
}
