//! CLIP's transformer encoder, shared by both towers: pre-LN layers (`layer_norm1` → self-attention →
//! residual, `layer_norm2` → MLP → residual) under HF's names (`encoder.layers.{i}.self_attn.q_proj`, ...).

use std::sync::Arc;

use candle_core::Tensor;

use super::config::ClipEncoderConfig;
use crate::dropout::{Dropout, Mode};
use crate::error::Result;
use crate::layers::{
    AttentionMask, AttentionSettings, LayerNorm, Linear, Mlp, MultiHeadAttention, NormPlacement,
    QkvProjection, TransformerLayer,
};
use crate::params::ParamLoader;

/// One layer, its parameters created in `CLIPEncoderLayer`'s order. CLIP has attention dropout only.
fn load_layer(
    l: &ParamLoader,
    c: &ClipEncoderConfig,
    mode: &Arc<Mode>,
) -> Result<TransformerLayer> {
    let (h, i, std) = (c.hidden_size, c.intermediate_size, c.initializer_range);
    let att = l.pp("self_attn");
    let qkv = QkvProjection::Separate {
        query: Linear::load(&att.pp("q_proj"), h, h, std)?,
        key: Linear::load(&att.pp("k_proj"), h, h, std)?,
        value: Linear::load(&att.pp("v_proj"), h, h, std)?,
    };
    let out_proj = Linear::load(&att.pp("out_proj"), h, h, std)?;
    let settings = AttentionSettings {
        heads: c.num_attention_heads,
        scale: None,
        attention_dropout: c.attention_dropout,
        output_dropout: 0.0,
    };
    let attention = MultiHeadAttention::new(&att, qkv, out_proj, settings, mode);
    let layer_norm1 = LayerNorm::load(&l.pp("layer_norm1"), h, c.layer_norm_eps)?;
    let mlp = Mlp::new(
        Linear::load(&l.pp("mlp").pp("fc1"), h, i, std)?,
        Linear::load(&l.pp("mlp").pp("fc2"), i, h, std)?,
        c.hidden_act,
        Dropout::new(0.0, mode.clone()),
    );
    let layer_norm2 = LayerNorm::load(&l.pp("layer_norm2"), h, c.layer_norm_eps)?;
    Ok(TransformerLayer::new(
        attention,
        layer_norm1,
        mlp,
        layer_norm2,
        NormPlacement::Before,
    ))
}

/// The stack of encoder layers of one tower.
#[derive(Debug, Clone)]
pub struct ClipEncoder {
    layers: Vec<TransformerLayer>,
}

impl ClipEncoder {
    /// Loads `layers.{i}.*` under `l` (the tower's `encoder`).
    pub fn load(l: &ParamLoader, c: &ClipEncoderConfig, mode: &Arc<Mode>) -> Result<Self> {
        let layers = (0..c.num_hidden_layers)
            .map(|i| load_layer(&l.pp("layers").pp(&i.to_string()), c, mode))
            .collect::<Result<Vec<_>>>()?;
        Ok(ClipEncoder { layers })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// HF's `hidden_states`: the input, then the output of each layer.
    pub fn forward(
        &self,
        x: &Tensor,
        causal: bool,
        key_padding_mask: Option<&Tensor>,
    ) -> candle_core::Result<Vec<Tensor>> {
        self.forward_layers(x, causal, key_padding_mask, self.layers.len())
    }

    /// As [`forward`](Self::forward) through the first `layers` layers only (a reader of an inner layer's
    /// states, like LLaVA's features, need not run the rest).
    pub fn forward_layers(
        &self,
        x: &Tensor,
        causal: bool,
        key_padding_mask: Option<&Tensor>,
        layers: usize,
    ) -> candle_core::Result<Vec<Tensor>> {
        let mask = AttentionMask {
            causal,
            key_padding_mask,
            segment_ids: None,
        };
        let mut states = vec![x.clone()];
        let mut x = x.clone();
        for layer in self.layers.iter().take(layers) {
            x = layer.forward(&x, &mask, None)?;
            states.push(x.clone());
        }
        Ok(states)
    }
}
