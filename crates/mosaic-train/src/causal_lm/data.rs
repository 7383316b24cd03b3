//! Causal-LM training examples: JSONL rows rendered with an instruction format (labels on the response tokens
//! only) or plain text (every token counts), tokenized with the model's tokenizer, and right-padded batches.

use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_data::Encoder;
use mosaic_data::IGNORE_INDEX;
use mosaic_prompt::{ChatTemplate, conversation_from_row};

use crate::error::{Result, TrainError};

/// One tokenized sequence: `labels[t]` is the token id where position `t` counts in the loss, else −100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmExample {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl LmExample {
    /// Tokens the shifted loss counts (the first position predicts nothing).
    pub fn counted(&self) -> usize {
        self.labels
            .iter()
            .skip(1)
            .filter(|&&l| l != IGNORE_INDEX)
            .count()
    }
}

/// How rows become text and labels.
pub enum RowFormat {
    /// `{"messages": [...]}` or `{"instruction", "input", "output"}` rows through a chat template; the loss counts
    /// the assistant responses (end-of-turn included) and the final EOS.
    Instruction {
        // Boxed: a compiled template is large next to the `Text` variant.
        template: Box<ChatTemplate>,
        messages_field: String,
    },
    /// `{"<text_field>": "..."}` rows; every token counts, and an EOS closes each text.
    Text { text_field: String },
}

/// Tokenizes rows into [`LmExample`]s.
pub struct LmEncoder {
    pub encoder: Encoder,
    pub format: RowFormat,
    pub eos_id: u32,
    pub max_length: usize,
}

/// What loading a file found besides the examples.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    /// Examples cut to `max_length` (from the left: their response and EOS are kept).
    pub truncated: usize,
    /// Examples dropped because truncation left no counted token.
    pub dropped: usize,
}

impl LmEncoder {
    /// Text and the byte ranges of it whose tokens count in the loss.
    fn render(
        &self,
        row: &serde_json::Value,
    ) -> std::result::Result<(String, Vec<(usize, usize)>), String> {
        match &self.format {
            RowFormat::Instruction {
                template,
                messages_field,
            } => {
                // `conversation_from_row` reads `messages`; a custom column is moved there first.
                let row = match row.get(messages_field.as_str()) {
                    Some(messages) if messages_field != "messages" => {
                        serde_json::json!({ "messages": messages })
                    }
                    _ => row.clone(),
                };
                let messages = conversation_from_row(&row).map_err(|e| e.to_string())?;
                let rendered = template
                    .render_for_training(&messages)
                    .map_err(|e| e.to_string())?;
                let spans = rendered
                    .responses
                    .iter()
                    .map(|s| (s.start, s.end))
                    .collect();
                Ok((rendered.text, spans))
            }
            RowFormat::Text { text_field } => {
                let text = row
                    .get(text_field.as_str())
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| format!("no string field `{text_field}`"))?;
                Ok((text.to_string(), vec![(0, text.len())]))
            }
        }
    }

    /// Encodes one row; `Ok(None)` when truncation left nothing to learn. The bool says whether it was truncated.
    pub fn encode_row(
        &self,
        row: &serde_json::Value,
    ) -> std::result::Result<Option<(LmExample, bool)>, String> {
        let (text, spans) = self.render(row)?;
        let encoding = self
            .encoder
            .tokenizer()
            .encode(text.as_str(), false)
            .map_err(|e| format!("cannot tokenize: {e}"))?;
        let mut input_ids = encoding.get_ids().to_vec();
        // A token counts when its bytes overlap a response span (byte offsets, the tokenizers default).
        let mut labels: Vec<i64> = input_ids
            .iter()
            .zip(encoding.get_offsets())
            .map(|(&id, &(start, end))| {
                let inside = spans.iter().any(|&(s, e)| start < e && end > s);
                if inside { id as i64 } else { IGNORE_INDEX }
            })
            .collect();
        // The model must learn to stop: EOS always counts, even when it doubles as padding. Templates that end
        // the response with EOS already have it; otherwise it is appended.
        if input_ids.last() != Some(&self.eos_id) {
            input_ids.push(self.eos_id);
            labels.push(self.eos_id as i64);
        } else if let Some(last) = labels.last_mut() {
            *last = self.eos_id as i64;
        }
        // Too long: the start is cut (from the left), because the loss lives at the end — the response and its
        // EOS — and a cut prompt still teaches more than a cut answer.
        let truncated = input_ids.len() > self.max_length;
        if truncated {
            let cut = input_ids.len() - self.max_length;
            input_ids.drain(..cut);
            labels.drain(..cut);
        }
        let example = LmExample { input_ids, labels };
        Ok((example.counted() > 0).then_some((example, truncated)))
    }

    /// Reads a JSONL file; a bad row is an error naming `file:line`.
    pub fn load(&self, path: &Path) -> Result<(Vec<LmExample>, LoadStats)> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        let mut examples = Vec::new();
        let mut stats = LoadStats::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |message: String| {
                TrainError::Invalid(format!("{}:{}: {message}", path.display(), i + 1))
            };
            let row: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
            match self.encode_row(&row).map_err(at)? {
                Some((example, truncated)) => {
                    stats.truncated += usize::from(truncated);
                    examples.push(example);
                }
                None => stats.dropped += 1,
            }
        }
        if examples.is_empty() {
            return Err(TrainError::file(path, "no usable examples"));
        }
        Ok((examples, stats))
    }
}

/// A right-padded batch: `input_ids` (B, T) u32, `attention_mask` (B, T) u32, `labels` (B, T) i64.
pub struct LmBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Tensor,
    /// Tokens the shifted loss counts.
    pub counted: usize,
}

impl LmBatch {
    pub fn collate<'a>(
        examples: impl IntoIterator<Item = &'a LmExample>,
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        let examples: Vec<&LmExample> = examples.into_iter().collect();
        let b = examples.len();
        let t = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        let mut ids = vec![pad_id; b * t];
        let mut mask = vec![0u32; b * t];
        let mut labels = vec![IGNORE_INDEX; b * t];
        for (row, e) in examples.iter().enumerate() {
            let n = e.input_ids.len();
            ids[row * t..row * t + n].copy_from_slice(&e.input_ids);
            mask[row * t..row * t + n].fill(1);
            labels[row * t..row * t + n].copy_from_slice(&e.labels);
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            attention_mask: Tensor::from_vec(mask, (b, t), device)?,
            labels: Tensor::from_vec(labels, (b, t), device)?,
            counted: examples.iter().map(|e| e.counted()).sum(),
        })
    }
}
