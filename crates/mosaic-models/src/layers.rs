//! The building blocks every model is composed of, each defined once: [`Linear`] (every projection),
//! [`Embedding`], [`LayerNorm`], [`Activation`], [`Mlp`], [`MultiHeadAttention`] (self/cross, causal, padding,
//! segments, [`KvCache`], [`KvPrefix`]) and [`TransformerLayer`]. All are differentiable: nothing here uses one of
//! candle's no-backward ops.

mod activation;
mod attention;
mod embedding;
mod hooks;
mod kv_cache;
mod linear;
mod mlp;
mod norm;
mod transformer_layer;

#[cfg(test)]
mod tests;

pub use activation::Activation;
pub use attention::{
    AttentionMask, AttentionSettings, MultiHeadAttention, PositionInputs, QkvProjection,
};
pub use embedding::Embedding;
pub use hooks::{
    AdapterFiles, AdapterSlot, AttentionEntry, KvPrefix, LinearAdapter, LinearEntry, PrefixSlot,
    Slot,
};
pub use kv_cache::KvCache;
pub use linear::{Linear, LinearKind, WeightLayout};
pub use mlp::Mlp;
pub use norm::LayerNorm;
pub use transformer_layer::{NormPlacement, TransformerLayer};
