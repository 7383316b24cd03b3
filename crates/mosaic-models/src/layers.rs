//! The building blocks every model is composed of, each defined once: [`Linear`] (every projection),
//! [`Embedding`], [`LayerNorm`], [`Activation`], [`Mlp`], [`MultiHeadAttention`] (self/cross, causal, padding,
//! segments, [`KvCache`], [`KvPrefix`]) and [`TransformerLayer`]. All are differentiable: nothing here uses one of
//! candle's no-backward ops.

mod activation;
mod adapter;
mod attention;
mod embedding;
mod kv_cache;
mod linear;
mod mlp;
mod norm;
mod transformer_layer;

#[cfg(test)]
mod tests;

pub use activation::Activation;
pub use adapter::{AdapterSlot, LinearAdapter};
pub use attention::{
    AttentionMask, AttentionSettings, KvPrefix, MultiHeadAttention, QkvProjection,
};
pub use embedding::Embedding;
pub use kv_cache::KvCache;
pub use linear::{Linear, LinearKind, WeightLayout};
pub use mlp::Mlp;
pub use norm::LayerNorm;
pub use transformer_layer::{NormPlacement, TransformerLayer};
