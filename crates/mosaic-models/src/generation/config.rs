//! What to generate and how to pick each token: greedy or seeded sampling (temperature, top-k, top-p), repetition
//! penalty, and when to stop (EOS ids, stop strings, a token budget).

use crate::error::{ModelError, Result};

/// How the next token is chosen from the (processed) scores.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoding {
    /// The highest score (transformers' `do_sample=False`).
    Greedy,
    /// A draw from the softmax of the scores after temperature, top-k and top-p, from a seeded random stream.
    Sample {
        /// Scores are divided by it (> 0); 1 leaves them unchanged.
        temperature: f32,
        /// Keep only the `k` highest scores (ties with the k-th are kept); `None`: no limit.
        top_k: Option<usize>,
        /// Keep the smallest set of top tokens whose probability reaches `p` (in (0, 1]); `None` or 1: all.
        top_p: Option<f32>,
        /// Row `i` of a batch draws from a stream seeded by `seed` and `i`, so a prompt generates the same text
        /// alone as in the first row of a batch.
        seed: u64,
    },
}

/// The settings of one [`generate`](super::generate) call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// New tokens per prompt at most (≥ 1).
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// transformers' `repetition_penalty` (> 0; 1 = off): the score of every token already in the row (prompt or
    /// generated) is divided by it when positive and multiplied by it when negative. Padding does not count
    /// (transformers counts the pad id of left-padded rows too, which makes a row depend on its batch).
    pub repetition_penalty: f32,
    /// A row ends when it generates one of these (the EOS token is part of the output).
    pub eos_token_ids: Vec<u32>,
    /// A row ends once its generated text contains one of these (needs a decoder; see `generate`).
    pub stop_strings: Vec<String>,
    /// Fills left padding and the rows that have ended; `None`: the first EOS id, else 0. Padding never reaches
    /// the model's attention, so the choice does not change the output.
    pub pad_token_id: Option<u32>,
    /// Starts an empty prompt; `None`: an empty prompt is an error.
    pub bos_token_id: Option<u32>,
}

impl GenerationConfig {
    /// Greedy decoding of at most `max_new_tokens` tokens, no EOS, no penalty.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerationConfig {
            max_new_tokens,
            decoding: Decoding::Greedy,
            repetition_penalty: 1.0,
            eos_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            pad_token_id: None,
            bos_token_id: None,
        }
    }

    /// Seeded sampling at `temperature`, no top-k/top-p limit.
    pub fn sample(max_new_tokens: usize, temperature: f32, seed: u64) -> Self {
        GenerationConfig {
            decoding: Decoding::Sample {
                temperature,
                top_k: None,
                top_p: None,
                seed,
            },
            ..Self::greedy(max_new_tokens)
        }
    }

    pub fn with_eos(mut self, eos_token_ids: Vec<u32>) -> Self {
        self.eos_token_ids = eos_token_ids;
        self
    }

    /// The pad id in effect.
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id
            .or_else(|| self.eos_token_ids.first().copied())
            .unwrap_or(0)
    }

    /// Checks every parameter's range; the error names the parameter and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(ModelError::InvalidInput(message));
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be a positive number (1 = off), got {}",
                self.repetition_penalty
            ));
        }
        if let Some(s) = self.stop_strings.iter().find(|s| s.is_empty()) {
            return bad(format!("stop strings must not be empty, got {s:?}"));
        }
        if let Decoding::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = &self.decoding
        {
            if !(temperature.is_finite() && *temperature > 0.0) {
                return bad(format!(
                    "temperature must be a positive number (use greedy decoding for 0), got {temperature}"
                ));
            }
            if *top_k == Some(0) {
                return bad("top_k must be at least 1, got 0".into());
            }
            if let Some(p) = top_p
                && !(*p > 0.0 && *p <= 1.0)
            {
                return bad(format!("top_p must be in (0, 1], got {p}"));
            }
        }
        Ok(())
    }
}
