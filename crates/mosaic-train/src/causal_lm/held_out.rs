//! Exact match of generated answers on held-out instructions: each row's conversation up to its last assistant
//! turn is rendered with the generation prompt, the model continues it greedily (batched, left-padded, with a
//! KV cache) until the EOS or the format's end of turn, and the text before that is compared with the reference
//! answer (whitespace-trimmed, see [`crate::metrics::exact_match`]).

use std::path::Path;

use mosaic_models::Gpt2;
use mosaic_models::generation::{GenerationConfig, generate};
use mosaic_prompt::{ChatTemplate, conversation_from_row};

use super::data::{LmEncoder, RowFormat};
use crate::error::{Result, TrainError};
use crate::metrics::exact_match::ExactMatch;

/// Prompts generated together; rows of a batch are independent (left padding), so this only trades memory for
/// speed.
const GENERATION_BATCH: usize = 32;

/// New tokens allowed beyond the longest reference answer: room for the end of turn and a little more.
const EXTRA_NEW_TOKENS: usize = 4;

/// One held-out instruction: the prompt's token ids, the reference answer and the row's `type`, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOutItem {
    pub prompt_ids: Vec<u32>,
    pub reference: String,
    pub group: Option<String>,
}

/// A held-out set ready for generation.
#[derive(Debug, Clone)]
pub struct HeldOut {
    pub items: Vec<HeldOutItem>,
    /// The new-token budget: the longest reference in tokens plus [`EXTRA_NEW_TOKENS`].
    pub max_new_tokens: usize,
}

/// Exact match over a held-out set, with every generated answer (in the file's order).
#[derive(Debug, Clone)]
pub struct HeldOutScore {
    pub score: ExactMatch,
    pub predictions: Vec<String>,
}

fn template(encoder: &LmEncoder) -> Result<(&ChatTemplate, &str)> {
    match &encoder.format {
        RowFormat::Instruction {
            template,
            messages_field,
        } => Ok((template, messages_field)),
        RowFormat::Text { .. } => Err(TrainError::Invalid(
            "exact match needs instruction data (method = \"instruction\")".into(),
        )),
    }
}

impl HeldOut {
    /// Reads a JSONL file of instruction rows (`{"instruction", "input", "output"}` or `{"messages": [...]}`,
    /// with an optional `"type"`); a bad row is an error naming `file:line`.
    pub fn load(encoder: &LmEncoder, path: &Path, context: usize) -> Result<Self> {
        let (template, messages_field) = template(encoder)?;
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        let tokenizer = encoder.encoder.tokenizer();
        let mut items = Vec::new();
        let mut longest = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |message: String| {
                TrainError::Invalid(format!("{}:{}: {message}", path.display(), i + 1))
            };
            let row: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
            // As in training, a custom messages column is read as `messages`.
            let conversation_row = match row.get(messages_field) {
                Some(messages) if messages_field != "messages" => {
                    serde_json::json!({ "messages": messages })
                }
                _ => row.clone(),
            };
            let messages =
                conversation_from_row(&conversation_row).map_err(|e| at(e.to_string()))?;
            let last = messages
                .iter()
                .rposition(|m| m.is_assistant())
                .ok_or_else(|| at("no assistant answer to compare with".into()))?;
            let prompt = template
                .render(&messages[..last], true)
                .map_err(|e| at(e.to_string()))?;
            let reference = messages[last].content.clone();
            let encode = |text: &str| -> Result<Vec<u32>> {
                Ok(tokenizer
                    .encode(text, false)
                    .map_err(|e| at(format!("cannot tokenize: {e}")))?
                    .get_ids()
                    .to_vec())
            };
            longest = longest.max(encode(&reference)?.len());
            items.push(HeldOutItem {
                prompt_ids: encode(&prompt)?,
                reference,
                group: row.get("type").and_then(|t| t.as_str()).map(str::to_string),
            });
        }
        if items.is_empty() {
            return Err(TrainError::file(path, "no held-out examples"));
        }
        // The prompt needs room too: the budget never takes more than half the context.
        let max_new_tokens = (longest + EXTRA_NEW_TOKENS).min(context / 2).max(1);
        Ok(HeldOut {
            items,
            max_new_tokens,
        })
    }

    /// Generates every answer greedily with `model` (in eval mode) and scores it.
    pub fn score(&self, model: &Gpt2, encoder: &LmEncoder) -> Result<HeldOutScore> {
        let (template, _) = template(encoder)?;
        let tokenizer = encoder.encoder.tokenizer();
        // A row ends at the EOS or at the format's end of turn (ChatML's `<|im_end|>`), as a token when the
        // vocabulary has it, else as text.
        let end_of_turn = template.eos_token().map(str::to_string);
        let mut eos_ids = vec![encoder.eos_id];
        let mut stop_strings = Vec::new();
        if let Some(eot) = &end_of_turn {
            match tokenizer.token_to_id(eot) {
                Some(id) => eos_ids.push(id),
                None => stop_strings.push(eot.clone()),
            }
        }
        let config = GenerationConfig {
            stop_strings,
            pad_token_id: Some(encoder.encoder.pad_id()),
            ..GenerationConfig::greedy(self.max_new_tokens).with_eos(eos_ids.clone())
        };
        let decode = |ids: &[u32]| tokenizer.decode(ids, false).unwrap_or_default();
        // Similar lengths together: less padding per batch.
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.sort_by_key(|&i| self.items[i].prompt_ids.len());
        let training = model.mode.is_training();
        model.set_training(false);
        let mut predictions = vec![String::new(); self.items.len()];
        let generated = (|| -> Result<()> {
            for chunk in order.chunks(GENERATION_BATCH) {
                let prompts: Vec<Vec<u32>> = chunk
                    .iter()
                    .map(|&i| self.items[i].prompt_ids.clone())
                    .collect();
                let outputs = generate(model, &prompts, &config, Some(&decode))?;
                for (&i, out) in chunk.iter().zip(outputs) {
                    let ids: Vec<u32> = out
                        .token_ids
                        .into_iter()
                        .take_while(|id| !eos_ids.contains(id))
                        .collect();
                    let mut text = decode(&ids);
                    if let Some(eot) = &end_of_turn
                        && let Some(at) = text.find(eot.as_str())
                    {
                        text.truncate(at);
                    }
                    predictions[i] = text;
                }
            }
            Ok(())
        })();
        model.set_training(training);
        generated?;
        let references: Vec<&str> = self.items.iter().map(|i| i.reference.as_str()).collect();
        let groups: Vec<Option<String>> = self.items.iter().map(|i| i.group.clone()).collect();
        let score = ExactMatch::compute(&predictions, &references, &groups)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        Ok(HeldOutScore { score, predictions })
    }
}
