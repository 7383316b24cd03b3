//! CLIP's text tower (`text_model.*`): token + position embeddings, a causal encoder with key padding, the final
//! layer norm, pooled at the end-of-text token.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::config::ClipTextConfig;
use super::encoder::ClipEncoder;
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::layers::{Embedding, LayerNorm};
use crate::params::ParamLoader;

/// What the text tower returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// After the final layer norm, `(B, T, H)`.
    pub last_hidden_state: Tensor,
    /// The final state at each row's end-of-text token, `(B, H)`.
    pub pooled: Tensor,
}

/// HF's `CLIPTextTransformer`.
#[derive(Debug, Clone)]
pub struct ClipTextTransformer {
    pub token_embedding: Embedding,
    pub position_embedding: Embedding,
    encoder: ClipEncoder,
    final_layer_norm: LayerNorm,
    eos_token_id: u32,
    max_positions: usize,
}

impl ClipTextTransformer {
    /// Loads the tower from `l` (whose prefix is `text_model`).
    pub fn load(l: &ParamLoader, c: &ClipTextConfig, mode: &Arc<Mode>) -> Result<Self> {
        let e = &c.encoder;
        let emb = l.pp("embeddings");
        Ok(ClipTextTransformer {
            token_embedding: Embedding::load(
                &emb.pp("token_embedding"),
                c.vocab_size,
                e.hidden_size,
                0.02,
            )?,
            position_embedding: Embedding::load(
                &emb.pp("position_embedding"),
                c.max_position_embeddings,
                e.hidden_size,
                0.02,
            )?,
            encoder: ClipEncoder::load(&l.pp("encoder"), e, mode)?,
            final_layer_norm: LayerNorm::load(
                &l.pp("final_layer_norm"),
                e.hidden_size,
                e.layer_norm_eps,
            )?,
            eos_token_id: c.eos_token_id,
            max_positions: c.max_position_embeddings,
        })
    }

    /// `input_ids` `(B, T)`, `attention_mask` `(B, T)` (1 = token, 0 = padding).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        let embeds = self.token_embedding.forward(input_ids)?;
        let positions = self.eos_positions(input_ids)?;
        self.forward_embeds(&embeds, attention_mask, &positions)
    }

    /// From token embeddings already looked up `(B, T, H)` — the hook for learned prompt vectors (CoOp) —
    /// pooling at `pool_positions` (one per row).
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: Option<&Tensor>,
        pool_positions: &[usize],
    ) -> Result<ClipTextOutput> {
        let (b, t, h) = inputs_embeds.dims3()?;
        if t > self.max_positions {
            return Err(ModelError::InvalidInput(format!(
                "text of {t} tokens is longer than the model's {} positions",
                self.max_positions
            )));
        }
        if pool_positions.len() != b || pool_positions.iter().any(|&p| p >= t) {
            return Err(ModelError::InvalidInput(format!(
                "pool positions {pool_positions:?} do not fit a batch of {b} x {t} tokens"
            )));
        }
        let x = self
            .position_embedding
            .add_positions(inputs_embeds, None, 0)?;
        let states = self.encoder.forward(&x, true, attention_mask)?;
        let last = states.last().cloned().unwrap_or(x);
        let last_hidden_state = self.final_layer_norm.forward(&last)?;
        let rows: Vec<u32> = pool_positions
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * t + p) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, inputs_embeds.device())?;
        let pooled = last_hidden_state
            .reshape((b * t, h))?
            .index_select(&rows, 0)?;
        Ok(ClipTextOutput {
            last_hidden_state,
            pooled,
        })
    }

    /// Where each row is pooled, as transformers does: the first end-of-text token, or — for legacy configs whose
    /// `eos_token_id` is 2 — the largest token id (the end-of-text token is the last of OpenAI's vocabulary).
    pub fn eos_positions(&self, input_ids: &Tensor) -> Result<Vec<usize>> {
        let rows: Vec<Vec<u32>> = input_ids.to_dtype(DType::U32)?.to_vec2()?;
        Ok(rows
            .iter()
            .map(|row| {
                if self.eos_token_id == 2 {
                    // torch.argmax: the first maximum.
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&id| id == max).unwrap_or(0)
                } else {
                    row.iter()
                        .position(|&id| id == self.eos_token_id)
                        .unwrap_or(0)
                }
            })
            .collect())
    }

    pub fn num_layers(&self) -> usize {
        self.encoder.num_layers()
    }
}
