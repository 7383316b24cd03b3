//! The decoding loop: prefill the (left-padded) prompts once, then one cached step per new token, every row
//! picking its own token until it ends (EOS, a stop string) or the budget is spent.

use candle_core::Tensor;

use super::CausalLm;
use super::config::GenerationConfig;
use super::logits::TokenPicker;
use super::prompts::{LeftPadded, truncate_left};
use crate::error::{ModelError, Result};

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It generated an EOS token (the last of `token_ids`).
    Eos,
    /// Its generated text contains a stop string.
    StopString,
    /// `max_new_tokens` were generated.
    Length,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::StopString => "stop_string",
            FinishReason::Length => "length",
        }
    }
}

/// The new tokens of one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// New tokens only (an ending EOS included; nothing after it).
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    /// Tokens cut from the start of the prompt to fit the context (0 when it fitted).
    pub prompt_tokens_dropped: usize,
}

/// Turns token ids into text; needed for stop strings.
pub type Decoder<'a> = &'a dyn Fn(&[u32]) -> String;

/// Continues each prompt (token ids) with up to `config.max_new_tokens` tokens.
///
/// Prompts of different lengths are batched with left padding and positions that skip the padding, so each row
/// generates what it would alone (greedy output equals transformers' `generate(do_sample=False)`). A prompt that
/// does not fit the context together with `max_new_tokens` loses tokens from its start, with a warning. `decode`
/// turns generated ids into text for `config.stop_strings`.
pub fn generate<M: CausalLm + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    decode: Option<Decoder<'_>>,
) -> Result<Vec<Generation>> {
    config.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if !config.stop_strings.is_empty() && decode.is_none() {
        return Err(ModelError::InvalidInput(
            "stop strings need a decoder (token ids to text)".into(),
        ));
    }
    let context = model.max_positions();
    let vocab = model.vocab_size();
    if config.max_new_tokens >= context {
        return Err(ModelError::InvalidInput(format!(
            "max_new_tokens ({}) must be smaller than the model's context of {context} tokens (room for the prompt)",
            config.max_new_tokens
        )));
    }
    let room = context - config.max_new_tokens;
    let mut rows = Vec::with_capacity(prompts.len());
    let mut dropped = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let mut row = prompt.clone();
        if row.is_empty() {
            match config.bos_token_id {
                Some(bos) => row.push(bos),
                None => {
                    return Err(ModelError::InvalidInput(format!(
                        "prompt {i} is empty and no BOS token is configured to start it"
                    )));
                }
            }
        }
        if let Some(&id) = row.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::InvalidInput(format!(
                "prompt {i}: token id {id} is outside the model's vocabulary of {vocab}"
            )));
        }
        let cut = truncate_left(&mut row, room);
        if cut > 0 {
            tracing::warn!(
                "prompt {i}: {} tokens plus {} new ones exceed the model's context of {context}; \
                 truncated from the left to its last {room} tokens",
                cut + room,
                config.max_new_tokens
            );
        }
        rows.push(row);
        dropped.push(cut);
    }

    let device = model.device();
    let pad = config.pad_id();
    let batch = LeftPadded::new(&rows, pad);
    let (input_ids, mut attention_mask, position_ids) = batch.tensors(&device)?;
    let b = rows.len();
    let mut cache = model.new_cache();
    // The prompt and every new token, so the cache's buffers are allocated once.
    cache.reserve(input_ids.dim(1)? + config.max_new_tokens);
    let mut logits =
        model.next_token_logits(&input_ids, &position_ids, &attention_mask, &mut cache)?;
    let mut pickers: Vec<TokenPicker> = (0..b).map(|row| TokenPicker::new(config, row)).collect();
    let mut histories = rows;
    let mut generated: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut finished: Vec<Option<FinishReason>> = vec![None; b];
    let mut next_positions: Vec<u32> = histories.iter().map(|r| r.len() as u32).collect();

    for step in 0..config.max_new_tokens {
        let mut scores = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let mut next = vec![pad; b];
        for row in 0..b {
            if finished[row].is_some() {
                continue;
            }
            let token = pickers[row].pick(&mut scores[row], &histories[row]);
            next[row] = token;
            histories[row].push(token);
            generated[row].push(token);
            if config.eos_token_ids.contains(&token) {
                finished[row] = Some(FinishReason::Eos);
            } else if let Some(decode) = decode
                && !config.stop_strings.is_empty()
            {
                let text = decode(&generated[row]);
                if config
                    .stop_strings
                    .iter()
                    .any(|s| text.contains(s.as_str()))
                {
                    finished[row] = Some(FinishReason::StopString);
                }
            }
        }
        if finished.iter().all(Option::is_some) || step + 1 == config.max_new_tokens {
            break;
        }
        // Ended rows keep stepping with padding (cheaper than reshaping the cache); their output is ignored.
        let input = Tensor::from_vec(next, (b, 1), &device)?;
        let positions = Tensor::from_vec(next_positions.clone(), (b, 1), &device)?;
        next_positions.iter_mut().for_each(|p| *p += 1);
        let ones = Tensor::ones((b, 1), attention_mask.dtype(), &device)?;
        attention_mask = Tensor::cat(&[&attention_mask, &ones], 1)?;
        logits = model.next_token_logits(&input, &positions, &attention_mask, &mut cache)?;
    }

    Ok(generated
        .into_iter()
        .zip(finished)
        .zip(dropped)
        .map(|((token_ids, finish), prompt_tokens_dropped)| Generation {
            token_ids,
            finish_reason: finish.unwrap_or(FinishReason::Length),
            prompt_tokens_dropped,
        })
        .collect())
}
