//! DETR's encoder and decoder, composed from the block library: post-norm layers whose attention adds position
//! embeddings to the queries and keys only (transformers' `DetrEncoderLayer`, `DetrDecoderLayer`, `DetrDecoder`
//! in `transformers/models/detr/modeling_detr.py`).

use std::sync::Arc;

use candle_core::Tensor;

use super::config::DetrConfig;
use crate::dropout::{Dropout, Mode};
use crate::error::Result;
use crate::layers::{
    AttentionMask, AttentionSettings, LayerNorm, Linear, Mlp, MultiHeadAttention, NormPlacement,
    PositionInputs, QkvProjection, TransformerLayer,
};
use crate::params::ParamLoader;

/// `nn.LayerNorm`'s default epsilon, which every DETR layer norm keeps.
pub(crate) const LAYER_NORM_EPS: f64 = 1e-5;

/// One attention block under transformers' on-disk names (`q_proj`, `k_proj`, `v_proj`, `out_proj`; 5.x calls
/// the last `o_proj` in memory and writes `out_proj`): `DetrSelfAttention` / `DetrCrossAttention`.
fn attention(
    loader: &ParamLoader,
    cfg: &DetrConfig,
    heads: usize,
    mode: &Arc<Mode>,
) -> Result<MultiHeadAttention> {
    let d = cfg.d_model;
    let std = cfg.init_std;
    let qkv = QkvProjection::Separate {
        query: Linear::load(&loader.pp("q_proj"), d, d, std)?,
        key: Linear::load(&loader.pp("k_proj"), d, d, std)?,
        value: Linear::load(&loader.pp("v_proj"), d, d, std)?,
    };
    let output = Linear::load(&loader.pp("out_proj"), d, d, std)?;
    let settings = AttentionSettings {
        heads,
        scale: None,
        attention_dropout: cfg.attention_dropout,
        // The layer's `dropout` after the attention, before the residual.
        output_dropout: cfg.dropout,
    };
    Ok(MultiHeadAttention::new(loader, qkv, output, settings, mode))
}

/// `DetrMLP`: `fc1` → activation → activation dropout → `fc2` → dropout (saved directly under the layer).
fn mlp(loader: &ParamLoader, cfg: &DetrConfig, ffn: usize, mode: &Arc<Mode>) -> Result<Mlp> {
    let d = cfg.d_model;
    Ok(Mlp::new(
        Linear::load(&loader.pp("fc1"), d, ffn, cfg.init_std)?,
        Linear::load(&loader.pp("fc2"), ffn, d, cfg.init_std)?,
        cfg.activation,
        Dropout::new(cfg.dropout, mode.clone()),
    )
    .with_activation_dropout(Dropout::new(cfg.activation_dropout, mode.clone())))
}

/// The encoder: input dropout, then post-norm self-attention layers with the spatial position embeddings on
/// queries and keys (`DetrEncoder`).
#[derive(Debug, Clone)]
pub struct DetrEncoder {
    pub layers: Vec<TransformerLayer>,
    dropout: Dropout,
}

impl DetrEncoder {
    /// `loader`: `model.encoder`.
    pub(crate) fn load(loader: &ParamLoader, cfg: &DetrConfig, mode: &Arc<Mode>) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.encoder_layers);
        for i in 0..cfg.encoder_layers {
            let l = loader.pp(&format!("layers.{i}"));
            layers.push(TransformerLayer::new(
                attention(&l.pp("self_attn"), cfg, cfg.encoder_attention_heads, mode)?,
                LayerNorm::load(&l.pp("self_attn_layer_norm"), cfg.d_model, LAYER_NORM_EPS)?,
                mlp(&l, cfg, cfg.encoder_ffn_dim, mode)?,
                LayerNorm::load(&l.pp("final_layer_norm"), cfg.d_model, LAYER_NORM_EPS)?,
                NormPlacement::After,
            ));
        }
        Ok(DetrEncoder {
            layers,
            dropout: Dropout::new(cfg.dropout, mode.clone()),
        })
    }

    /// `features: [B, S, d]` flattened projected feature map, `positions: [B, S, d]` sine embeddings,
    /// `mask: [B, S]` (1 = real) → `[B, S, d]`.
    pub fn forward(&self, features: &Tensor, positions: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let attention_mask = AttentionMask {
            key_padding_mask: Some(mask),
            ..Default::default()
        };
        let mut h = self.dropout.forward(features)?;
        for layer in &self.layers {
            h = layer.forward_with_positions(&h, Some(positions), &attention_mask, None)?;
        }
        Ok(h)
    }
}

/// One decoder layer (`DetrDecoderLayer`): self-attention among the queries, cross-attention to the encoder
/// memory, MLP, each followed by residual + layer norm.
#[derive(Debug, Clone)]
pub struct DetrDecoderLayer {
    pub self_attn: MultiHeadAttention,
    self_attn_layer_norm: LayerNorm,
    pub encoder_attn: MultiHeadAttention,
    encoder_attn_layer_norm: LayerNorm,
    mlp: Mlp,
    final_layer_norm: LayerNorm,
}

impl DetrDecoderLayer {
    fn load(loader: &ParamLoader, cfg: &DetrConfig, mode: &Arc<Mode>) -> Result<Self> {
        let d = cfg.d_model;
        let heads = cfg.decoder_attention_heads;
        Ok(DetrDecoderLayer {
            self_attn: attention(&loader.pp("self_attn"), cfg, heads, mode)?,
            self_attn_layer_norm: LayerNorm::load(
                &loader.pp("self_attn_layer_norm"),
                d,
                LAYER_NORM_EPS,
            )?,
            encoder_attn: attention(&loader.pp("encoder_attn"), cfg, heads, mode)?,
            encoder_attn_layer_norm: LayerNorm::load(
                &loader.pp("encoder_attn_layer_norm"),
                d,
                LAYER_NORM_EPS,
            )?,
            mlp: mlp(loader, cfg, cfg.decoder_ffn_dim, mode)?,
            final_layer_norm: LayerNorm::load(&loader.pp("final_layer_norm"), d, LAYER_NORM_EPS)?,
        })
    }

    /// `h: [B, Q, d]` the queries' states, `query_pos: [B, Q, d]` the learned query positions (added to the
    /// self-attention's queries and keys and to the cross-attention's queries), `memory: [B, S, d]` with
    /// `memory_pos: [B, S, d]` (added to the cross-attention's keys) and `memory_mask: [B, S]` → `[B, Q, d]`.
    fn forward(
        &self,
        h: &Tensor,
        query_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        memory_mask: &Tensor,
    ) -> Result<Tensor> {
        let self_positions = PositionInputs {
            query: Some(query_pos),
            key: Some(query_pos),
        };
        let attended = self.self_attn.forward_with_positions(
            h,
            None,
            &self_positions,
            &AttentionMask::default(),
            None,
        )?;
        let h = self.self_attn_layer_norm.forward(&h.add(&attended)?)?;
        let cross_positions = PositionInputs {
            query: Some(query_pos),
            key: Some(memory_pos),
        };
        let cross_mask = AttentionMask {
            key_padding_mask: Some(memory_mask),
            ..Default::default()
        };
        let attended = self.encoder_attn.forward_with_positions(
            &h,
            Some(memory),
            &cross_positions,
            &cross_mask,
            None,
        )?;
        let h = self.encoder_attn_layer_norm.forward(&h.add(&attended)?)?;
        Ok(self
            .final_layer_norm
            .forward(&h.add(&self.mlp.forward(&h)?)?)?)
    }
}

/// The decoder (`DetrDecoder`): layers over zero-initialised queries, then the shared final `layernorm`.
#[derive(Debug, Clone)]
pub struct DetrDecoder {
    pub layers: Vec<DetrDecoderLayer>,
    layernorm: LayerNorm,
    auxiliary_loss: bool,
}

/// What the decoder returns.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `[B, Q, d]`.
    pub last_hidden_state: Tensor,
    /// `[B, Q, d]` per layer, layer-normed, with `auxiliary_loss` only (else empty).
    pub intermediate: Vec<Tensor>,
}

impl DetrDecoder {
    /// `loader`: `model.decoder`.
    pub(crate) fn load(loader: &ParamLoader, cfg: &DetrConfig, mode: &Arc<Mode>) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.decoder_layers);
        for i in 0..cfg.decoder_layers {
            layers.push(DetrDecoderLayer::load(
                &loader.pp(&format!("layers.{i}")),
                cfg,
                mode,
            )?);
        }
        Ok(DetrDecoder {
            layers,
            layernorm: LayerNorm::load(&loader.pp("layernorm"), cfg.d_model, LAYER_NORM_EPS)?,
            auxiliary_loss: cfg.auxiliary_loss,
        })
    }

    /// `query_pos: [B, Q, d]`, the encoder's `memory` / `memory_pos: [B, S, d]`, `memory_mask: [B, S]`.
    ///
    /// As transformers 5.x has it: with `auxiliary_loss` each layer's output is layer-normed *and that normed
    /// state feeds the next layer*, and the final layer norm is applied once more on top; without it only the
    /// final layer norm is applied.
    pub fn forward(
        &self,
        query_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        memory_mask: &Tensor,
    ) -> Result<DecoderOutput> {
        let mut h = query_pos.zeros_like()?;
        let mut intermediate = Vec::new();
        for layer in &self.layers {
            h = layer.forward(&h, query_pos, memory, memory_pos, memory_mask)?;
            if self.auxiliary_loss {
                h = self.layernorm.forward(&h)?;
                intermediate.push(h.clone());
            }
        }
        Ok(DecoderOutput {
            last_hidden_state: self.layernorm.forward(&h)?,
            intermediate,
        })
    }
}
