//! A whole GPT-2 language model — the transformer plus the LM head tied to the token embeddings — loaded from and
//! saved to a Hugging Face folder under HF's tensor names (`transformer.*`, read with or without the prefix).

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::config::Gpt2Config;
use super::model::{Gpt2Model, TokenLayout};
use crate::dropout::Mode;
use crate::error::Result;
use crate::folder::{open_model, save_model};
use crate::generation::{CausalLm, KvCache};
use crate::layers::{Linear, LinearKind, WeightLayout};
use crate::loss::cross_entropy_sum;
use crate::params::{Checkpoint, ParamLoader, ParamStore};

const LM_HEAD: &str = "lm_head";

/// HF's `GPT2LMHeadModel`, with its parameters and its train/eval mode.
pub struct Gpt2 {
    pub config: Gpt2Config,
    pub transformer: Gpt2Model,
    /// Weight `(vocab, n_embd)`, no bias: `transformer.wte.weight` itself when tied (the default), else
    /// `lm_head.weight`.
    lm_head: Linear,
    pub params: ParamStore,
    pub mode: Arc<Mode>,
}

impl Gpt2 {
    /// Loads a folder (`config.json` with `model_type: "gpt2"`, `model.safetensors`). `seed` drives dropout.
    pub fn from_folder(dir: &Path, seed: u64, device: &Device) -> Result<Self> {
        let (folder, checkpoint) = open_model(dir, device)?;
        let config = Gpt2Config::read(&folder.config())?;
        Self::build(config, checkpoint, seed, device)
    }

    /// A randomly initialised model (HF's `_init_weights`), for tests and pretraining from scratch.
    pub fn new(config: Gpt2Config, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, Checkpoint::default(), seed, device)
    }

    fn build(
        config: Gpt2Config,
        checkpoint: Checkpoint,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let store = ParamStore::new();
        // Our names are `GPT2LMHeadModel`'s (`transformer.h.0...`); the original OpenAI checkpoints and bare
        // `GPT2Model` folders store them without the prefix.
        let loader = ParamLoader::for_checkpoint(checkpoint, store.clone(), seed, device)
            .alias("transformer.", "");
        let head = loader.pp(LM_HEAD);
        Self::assemble(config, &loader.pp("transformer"), &head, Mode::seeded(seed))
    }

    /// Builds the model from the loader of the transformer (where `wte.*` lives) and that of an untied head; the
    /// parameters go into the loaders' store. A LLaVA holds its language model this way, under its own names.
    pub(crate) fn assemble(
        config: Gpt2Config,
        transformer: &ParamLoader,
        head: &ParamLoader,
        mode: Arc<Mode>,
    ) -> Result<Self> {
        let transformer_model = Gpt2Model::load(transformer, &config, &mode)?;
        let lm_head = if config.tie_word_embeddings {
            Linear::from_weights(
                transformer_model.wte.weight().clone(),
                None,
                WeightLayout::OutIn,
            )
        } else {
            Linear::load_as(
                head,
                config.n_embd,
                config.vocab_size,
                config.initializer_range,
                LinearKind::NoBias,
            )?
        };
        Ok(Gpt2 {
            config,
            transformer: transformer_model,
            lm_head,
            params: transformer.store().clone(),
            mode,
        })
    }

    /// Training mode turns dropout on.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training)
    }

    /// Final hidden states (B, T, H); see [`Gpt2Model::forward`] for the arguments.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        position_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.transformer
            .forward(input_ids, position_ids, attention_mask, None)
    }

    /// Final hidden states (B, T, H) with positions, padding and packed segments given by `layout`.
    pub fn hidden_states_with_layout(
        &self,
        input_ids: &Tensor,
        layout: &TokenLayout<'_>,
    ) -> candle_core::Result<Tensor> {
        self.transformer
            .forward_with_layout(input_ids, layout, None)
    }

    /// Logits (B, T, V) of every position with positions, padding and packed segments given by `layout`.
    pub fn logits_with_layout(
        &self,
        input_ids: &Tensor,
        layout: &TokenLayout<'_>,
    ) -> candle_core::Result<Tensor> {
        self.lm_logits(&self.hidden_states_with_layout(input_ids, layout)?)
    }

    /// Vocabulary logits (…, V) for hidden states (…, H).
    pub fn lm_logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.lm_head.forward_rows(hidden)
    }

    /// Logits (B, T, V) of every position, with default positions (no padding, or right padding).
    pub fn logits(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.lm_logits(&self.hidden_states(input_ids, None, attention_mask)?)
    }

    /// The causal-LM loss of a right-padded batch: `(sum of token losses, counted tokens)`. `labels`: (B, T)
    /// with −100 where the loss does not count; `None`: the input ids, padding (mask 0) excluded. Perplexity over
    /// a data set is `exp(Σ sums / Σ counts)`.
    pub fn lm_loss_sum(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        labels: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, usize)> {
        let layout = TokenLayout {
            attention_mask,
            ..TokenLayout::default()
        };
        self.lm_loss_sum_with_layout(input_ids, &layout, labels)
    }

    /// As [`lm_loss_sum`](Self::lm_loss_sum) for any [`TokenLayout`], packed rows included. In a packed row the
    /// label of each sample's first token must be −100, so that the previous sample's last token predicts nothing
    /// (with `labels: None` that is not done for you: pass the labels of packed rows).
    pub fn lm_loss_sum_with_layout(
        &self,
        input_ids: &Tensor,
        layout: &TokenLayout<'_>,
        labels: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, usize)> {
        let logits = self.logits_with_layout(input_ids, layout)?;
        let labels = match (labels, layout.attention_mask) {
            (Some(labels), _) => labels.clone(),
            (None, None) => input_ids.to_dtype(candle_core::DType::I64)?,
            (None, Some(mask)) => {
                let ids = input_ids.to_dtype(candle_core::DType::I64)?;
                let ignore = Tensor::full(crate::loss::IGNORE_INDEX, ids.shape(), ids.device())?;
                mask.ne(0u32)?.where_cond(&ids, &ignore)?
            }
        };
        causal_lm_loss_sum(&logits, &labels)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed) under HF names. A tied LM head
    /// is not written (transformers re-ties it from `transformer.wte.weight`, and does not save it either).
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model(dir, &self.params, &self.config.to_json())
    }
}

impl CausalLm for Gpt2 {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_positions(&self) -> usize {
        // Virtual tokens of prefix / prompt tuning take the first positions.
        self.config
            .n_positions
            .saturating_sub(self.transformer.wpe.position_offset())
    }

    fn device(&self) -> Device {
        self.transformer.wte.weight().device().clone()
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.transformer.num_layers())
    }

    fn next_token_logits(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> candle_core::Result<Tensor> {
        let hidden = self.transformer.forward(
            input_ids,
            Some(position_ids),
            Some(attention_mask),
            Some(cache),
        )?;
        let t = hidden.dim(1)?;
        if t == 0 {
            candle_core::bail!("next_token_logits: no input tokens");
        }
        // Only the last position predicts the next token: skip the head elsewhere.
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(self.lm_logits(&last)?.detach())
    }
}

/// The causal-LM loss of HF's `*ForCausalLM`: position `t` predicts `labels[t + 1]`. `logits`: (B, T, V);
/// `labels`: (B, T) token ids with −100 where the loss does not count (prompt, padding). Returns
/// `(sum of token losses, number of counted tokens)`, so callers can normalise across accumulated batches.
pub fn causal_lm_loss_sum(
    logits: &Tensor,
    labels: &Tensor,
) -> candle_core::Result<(Tensor, usize)> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        return Ok((Tensor::zeros((), logits.dtype(), logits.device())?, 0));
    }
    let shifted_logits = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
    let shifted_labels = labels.narrow(1, 1, t - 1)?.flatten_all()?;
    cross_entropy_sum(&shifted_logits, &shifted_labels)
}
