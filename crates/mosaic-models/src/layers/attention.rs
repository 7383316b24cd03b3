//! Multi-head attention, once for every model: self or cross attention, causal and key-padding masks, packed
//! segments, a key/value cache and an optional learned key/value prefix, over the fused kernel of
//! mosaic-kernels (online softmax, seeded dropout, with a backward pass).

use std::sync::Arc;

use candle_core::{Tensor, bail};
use mosaic_kernels::AttentionOptions;

use super::hooks::{AttentionEntry, KvPrefix, PrefixSlot};
use super::kv_cache::KvCache;
use super::linear::Linear;
use crate::dropout::{Dropout, Mode};
use crate::params::ParamLoader;

/// How queries, keys and values are projected.
#[derive(Debug, Clone)]
pub enum QkvProjection {
    /// Three projections (BERT, ViT, CLIP); the keys and values may come from another sequence.
    Separate {
        query: Linear,
        key: Linear,
        value: Linear,
    },
    /// One projection to `[q | k | v]` (GPT-2's `c_attn`), self-attention only.
    Fused(Linear),
}

/// The settings of one attention block besides its projections.
#[derive(Debug, Clone)]
pub struct AttentionSettings {
    pub heads: usize,
    /// Multiplier of `q kᵀ`; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// Dropout on the attention probabilities (training mode only).
    pub attention_dropout: f32,
    /// Dropout on the output projection (HF's residual / hidden dropout).
    pub output_dropout: f32,
}

/// What the queries attend to, besides themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionMask<'a> {
    /// Query `i` sees key `j` only when `j <= i + (keys - queries)` (bottom-right aligned, so new tokens see
    /// every cached key).
    pub causal: bool,
    /// `(B, past + keys)`, non-zero = attend, zero = padding, over the cached and the new keys (not the prefix).
    pub key_padding_mask: Option<&'a Tensor>,
    /// `(B, T)` segment ids of packed rows: a token attends only to keys of its own segment. Self-attention over
    /// whole sequences only (no cache, no prefix).
    pub segment_ids: Option<&'a Tensor>,
}

/// Tensors added to the inputs of the query and key projections but not to that of the value projection, as
/// DETR adds its position embeddings (transformers' `DetrSelfAttention` / `DetrCrossAttention`): the queries are
/// projected from `x + query`, the keys from `source + key`, the values from `source` alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct PositionInputs<'a> {
    /// `[B, T, H]`, like the queries' input `x`.
    pub query: Option<&'a Tensor>,
    /// `[B, S, H_kv]`, like the sequence keys and values come from (`x` itself in self-attention).
    pub key: Option<&'a Tensor>,
}

/// `x + position`, or `x` itself without a position.
fn with_position(x: &Tensor, position: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match position {
        Some(p) => x.add(p),
        None => Ok(x.clone()),
    }
}

/// Multi-head attention with its input and output projections.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    qkv: QkvProjection,
    output: Linear,
    settings: AttentionSettings,
    output_dropout: Dropout,
    prefix: PrefixSlot,
    mode: Arc<Mode>,
}

impl MultiHeadAttention {
    /// `loader` is the block's own module (e.g. `encoder.layer.0.attention`): its prefix slot is registered
    /// under that name.
    pub fn new(
        loader: &ParamLoader,
        qkv: QkvProjection,
        output: Linear,
        settings: AttentionSettings,
        mode: &Arc<Mode>,
    ) -> Self {
        let prefix = PrefixSlot::default();
        let value_width = match &qkv {
            QkvProjection::Separate { value, .. } => value.out_dim(),
            QkvProjection::Fused(qkv) => qkv.out_dim() / 3,
        };
        loader.store().register_attention(
            loader.name(),
            AttentionEntry {
                prefix: prefix.clone(),
                heads: settings.heads,
                head_dim: value_width / settings.heads.max(1),
            },
        );
        MultiHeadAttention {
            qkv,
            output,
            output_dropout: Dropout::new(settings.output_dropout, mode.clone()),
            settings,
            prefix,
            mode: mode.clone(),
        }
    }

    /// Puts (or with `None` removes) a learned key/value prefix in front of this block's keys and values; every
    /// clone of the block sees it. With a cache it is put in front at each step (one copy of the keys a step).
    pub fn set_prefix(&self, prefix: Option<KvPrefix>) {
        self.prefix.set(prefix)
    }

    pub fn prefix(&self) -> Option<KvPrefix> {
        self.prefix.get()
    }

    pub fn heads(&self) -> usize {
        self.settings.heads
    }

    /// `[B, T, H] -> [B, heads, T, H / heads]`, contiguous.
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let heads = self.settings.heads;
        x.reshape((b, t, heads, h / heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Queries, keys and values, split into heads.
    fn project(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        positions: &PositionInputs<'_>,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        match (&self.qkv, context) {
            (QkvProjection::Separate { query, key, value }, context) => {
                let source = context.unwrap_or(x);
                let q = self.split_heads(&query.forward(&with_position(x, positions.query)?)?)?;
                let k = self.split_heads(&key.forward(&with_position(source, positions.key)?)?)?;
                let v = self.split_heads(&value.forward(source)?)?;
                Ok((q, k, v))
            }
            (QkvProjection::Fused(_), _)
                if positions.query.is_some() || positions.key.is_some() =>
            {
                bail!(
                    "attention: a fused q/k/v projection cannot add positions to queries and keys only"
                )
            }
            (QkvProjection::Fused(qkv), None) => {
                let h = x.dim(2)?;
                let qkv = qkv.forward(x)?;
                let q = self.split_heads(&qkv.narrow(2, 0, h)?)?;
                let k = self.split_heads(&qkv.narrow(2, h, h)?)?;
                let v = self.split_heads(&qkv.narrow(2, 2 * h, h)?)?;
                Ok((q, k, v))
            }
            (QkvProjection::Fused(_), Some(_)) => {
                bail!("attention: a fused q/k/v projection cannot attend to another sequence")
            }
        }
    }

    /// `x: [B, T, H]` queries; `context: [B, S, H_kv]` the sequence keys and values come from (`None`:
    /// self-attention); `cache`: this block's layer in a key/value cache, appended to (self-attention only).
    /// Returns `[B, T, H]`.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: &AttentionMask<'_>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        self.forward_with_positions(x, context, &PositionInputs::default(), mask, cache)
    }

    /// As [`forward`](Self::forward), with `positions` added to the inputs of the query and key projections
    /// only (DETR). `x: [B, T, H]`, `context: [B, S, H_kv]` → `[B, T, H]`.
    pub fn forward_with_positions(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        positions: &PositionInputs<'_>,
        mask: &AttentionMask<'_>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (q, mut k, mut v) = self.project(x, context, positions)?;
        if let Some((cache, layer)) = cache {
            if context.is_some() {
                bail!("attention: a key/value cache is for self-attention only")
            }
            (k, v) = cache.append(layer, &k, &v)?;
        }
        let mut key_padding_mask = mask.key_padding_mask.cloned();
        if let Some(prefix) = self.prefix.get() {
            if mask.segment_ids.is_some() {
                bail!("attention: packed segments cannot be combined with a key/value prefix")
            }
            let p = prefix.keys.dim(2)?;
            let (_, heads, _, dk) = k.dims4()?;
            let dv = v.dim(3)?;
            let pk = prefix.keys.broadcast_as((b, heads, p, dk))?;
            let pv = prefix.values.broadcast_as((b, heads, p, dv))?;
            k = Tensor::cat(&[&pk, &k], 2)?;
            v = Tensor::cat(&[&pv, &v], 2)?;
            // The prefix is never padding.
            key_padding_mask = match key_padding_mask {
                Some(m) => Some(Tensor::cat(
                    &[&Tensor::ones((b, p), m.dtype(), m.device())?, &m],
                    1,
                )?),
                None => None,
            };
        }
        let training = self.mode.is_training();
        let opts = AttentionOptions {
            scale: self.settings.scale,
            causal: mask.causal,
            key_padding_mask,
            dropout: if training {
                self.settings.attention_dropout
            } else {
                0.0
            },
            seed: if training { self.mode.next_seed() } else { 0 },
            segment_ids: mask.segment_ids.cloned(),
        };
        let heads_out = mosaic_kernels::attention(&q, &k, &v, &opts)?;
        let (_, _, _, dv) = heads_out.dims4()?;
        let ctx = heads_out
            .transpose(1, 2)?
            .reshape((b, t, self.settings.heads * dv))?;
        self.output_dropout.forward(&self.output.forward(&ctx)?)
    }
}
