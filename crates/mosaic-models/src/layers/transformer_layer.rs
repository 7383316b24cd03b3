//! One transformer layer — attention and MLP, each with a residual connection and a layer norm — in either
//! placement of the norms.

use candle_core::Tensor;

use super::attention::{AttentionMask, MultiHeadAttention, PositionInputs};
use super::kv_cache::KvCache;
use super::mlp::Mlp;
use super::norm::LayerNorm;

/// Where the layer norms sit relative to the residual connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `h = x + attn(ln₁(x))`, `out = h + mlp(ln₂(h))` (GPT-2, ViT, CLIP).
    Before,
    /// `h = ln₁(x + attn(x))`, `out = ln₂(h + mlp(h))` (BERT).
    After,
}

/// Attention + MLP with residuals and norms.
#[derive(Debug, Clone)]
pub struct TransformerLayer {
    pub attention: MultiHeadAttention,
    attention_norm: LayerNorm,
    mlp: Mlp,
    mlp_norm: LayerNorm,
    placement: NormPlacement,
}

impl TransformerLayer {
    /// The parts come loaded in the order the model's HF class creates its parameters (seeded initialisation
    /// draws in that order).
    pub fn new(
        attention: MultiHeadAttention,
        attention_norm: LayerNorm,
        mlp: Mlp,
        mlp_norm: LayerNorm,
        placement: NormPlacement,
    ) -> Self {
        TransformerLayer {
            attention,
            attention_norm,
            mlp,
            mlp_norm,
            placement,
        }
    }

    /// Self-attention layer: `x: [B, T, H] -> [B, T, H]`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: &AttentionMask<'_>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        self.forward_with_positions(x, None, mask, cache)
    }

    /// As [`forward`](Self::forward), with `positions: [B, T, H]` added to the inputs of the query and key
    /// projections but not the values' (DETR's encoder layer): `x: [B, T, H] -> [B, T, H]`.
    pub fn forward_with_positions(
        &self,
        x: &Tensor,
        positions: Option<&Tensor>,
        mask: &AttentionMask<'_>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        let positions = PositionInputs {
            query: positions,
            key: positions,
        };
        match self.placement {
            NormPlacement::Before => {
                let attended = self.attention.forward_with_positions(
                    &self.attention_norm.forward(x)?,
                    None,
                    &positions,
                    mask,
                    cache,
                )?;
                let x = x.add(&attended)?;
                x.add(&self.mlp.forward(&self.mlp_norm.forward(&x)?)?)
            }
            NormPlacement::After => {
                let attended = self
                    .attention
                    .forward_with_positions(x, None, &positions, mask, cache)?;
                let x = self.attention_norm.forward(&attended.add(x)?)?;
                let out = self.mlp.forward(&x)?;
                self.mlp_norm.forward(&out.add(&x)?)
            }
        }
    }
}
