//! CLIP's transformer encoder, shared by both towers: pre-LN layers (`layer_norm1` → self-attention →
//! residual, `layer_norm2` → MLP → residual) under HF's names (`encoder.layers.{i}.self_attn.q_proj`, ...).

use std::sync::Arc;

use candle_core::Tensor;
use mosaic_kernels::AttentionOptions;

use super::config::{ClipActivation, ClipEncoderConfig};
use crate::dropout::Mode;
use crate::error::Result;
use crate::layers::{LayerNorm, Linear};
use crate::params::ParamLoader;

#[derive(Debug, Clone)]
struct ClipEncoderLayer {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_norm2: LayerNorm,
    activation: ClipActivation,
    heads: usize,
    attention_dropout: f32,
    mode: Arc<Mode>,
}

impl ClipEncoderLayer {
    fn load(l: &ParamLoader, c: &ClipEncoderConfig, mode: &Arc<Mode>) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let std = c.initializer_range;
        let att = l.pp("self_attn");
        Ok(ClipEncoderLayer {
            q_proj: Linear::load(&att.pp("q_proj"), h, h, std)?,
            k_proj: Linear::load(&att.pp("k_proj"), h, h, std)?,
            v_proj: Linear::load(&att.pp("v_proj"), h, h, std)?,
            out_proj: Linear::load(&att.pp("out_proj"), h, h, std)?,
            layer_norm1: LayerNorm::load(&l.pp("layer_norm1"), h, c.layer_norm_eps)?,
            fc1: Linear::load(&l.pp("mlp").pp("fc1"), h, i, std)?,
            fc2: Linear::load(&l.pp("mlp").pp("fc2"), i, h, std)?,
            layer_norm2: LayerNorm::load(&l.pp("layer_norm2"), h, c.layer_norm_eps)?,
            activation: c.hidden_act,
            heads: c.num_attention_heads,
            attention_dropout: c.attention_dropout,
            mode: mode.clone(),
        })
    }

    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        x.reshape((b, t, self.heads, h / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(
        &self,
        x: &Tensor,
        causal: bool,
        key_padding_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let normed = self.layer_norm1.forward(x)?;
        let q = self.split_heads(&self.q_proj.forward(&normed)?)?;
        let k = self.split_heads(&self.k_proj.forward(&normed)?)?;
        let v = self.split_heads(&self.v_proj.forward(&normed)?)?;
        let training = self.mode.is_training();
        let opts = AttentionOptions {
            scale: None,
            causal,
            key_padding_mask: key_padding_mask.cloned(),
            dropout: if training {
                self.attention_dropout
            } else {
                0.0
            },
            seed: if training { self.mode.next_seed() } else { 0 },
            segment_ids: None,
        };
        let ctx = mosaic_kernels::attention(&q, &k, &v, &opts)?
            .transpose(1, 2)?
            .reshape((b, t, h))?;
        let x = self.out_proj.forward(&ctx)?.add(x)?;
        let inner = self
            .activation
            .forward(&self.fc1.forward(&self.layer_norm2.forward(&x)?)?)?;
        self.fc2.forward(&inner)?.add(&x)
    }
}

/// The stack of encoder layers of one tower.
#[derive(Debug, Clone)]
pub struct ClipEncoder {
    layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    /// Loads `layers.{i}.*` under `l` (the tower's `encoder`).
    pub fn load(l: &ParamLoader, c: &ClipEncoderConfig, mode: &Arc<Mode>) -> Result<Self> {
        let layers = (0..c.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(&l.pp("layers").pp(&i.to_string()), c, mode))
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
        let mut states = vec![x.clone()];
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, causal, key_padding_mask)?;
            states.push(x.clone());
        }
        Ok(states)
    }
}
