//! Text generation for decoder-only language models: a key/value cache, greedy decoding and seeded sampling
//! (temperature, top-k, top-p), repetition penalty, EOS ids and stop strings, and batches of prompts with left
//! padding. Greedy output equals transformers' `generate(do_sample=False)` token for token.
//!
//! The loop works on token ids through the [`CausalLm`] trait; tokenizing and detokenizing are the caller's
//! (a decoder closure is only needed for stop strings).

mod config;
mod generate;
mod logits;
mod prompts;

use candle_core::{Device, Tensor};

pub use crate::layers::KvCache;
pub use config::{Decoding, GenerationConfig};
pub use generate::{Decoder, FinishReason, Generation, generate};
pub use logits::{
    TokenPicker, apply_repetition_penalty, apply_temperature, apply_top_k, apply_top_p, argmax,
};
pub use prompts::{LeftPadded, positions_from_mask, truncate_left};

/// A language model that predicts the next token, with a key/value cache.
pub trait CausalLm {
    fn vocab_size(&self) -> usize;
    /// The context: positions the model has (prompt + new tokens must fit).
    fn max_positions(&self) -> usize;
    fn device(&self) -> Device;
    /// An empty cache for this model.
    fn new_cache(&self) -> KvCache;
    /// Logits (B, V) of the next token after `input_ids` (B, T) at `position_ids` (B, T); `attention_mask`
    /// (B, past + T) covers the cached and the new tokens. Appends the new keys/values to `cache`.
    fn next_token_logits(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> candle_core::Result<Tensor>;
}
