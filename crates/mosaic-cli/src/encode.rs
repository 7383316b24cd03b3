//! Tokenizing batches of text for a model: truncation (with a warning, or an error when asked), padding, tensors.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// A tokenizer set up to truncate at `max_len` and pad with `pad_id`.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_len: usize,
    pad_id: u32,
    truncate: bool,
}

/// One padded batch, as tensors of shape (B, T).
pub struct EncodedBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    /// Token ids per row, unpadded.
    pub ids: Vec<Vec<u32>>,
}

impl TextEncoder {
    pub fn load(model_dir: &Path, max_len: usize, pad_id: u32, truncate: bool) -> Result<Self> {
        let path = model_dir.join("tokenizer.json");
        if !path.is_file() {
            bail!(
                "{}: missing (the model folder needs a tokenizer.json)",
                path.display()
            );
        }
        let mut tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(TextEncoder {
            tokenizer,
            max_len,
            pad_id,
            truncate,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Encodes `texts` (with special tokens) into one padded batch.
    pub fn encode(&self, texts: &[String], device: &Device) -> Result<EncodedBatch> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        let mut ids = Vec::with_capacity(texts.len());
        let mut types = Vec::with_capacity(texts.len());
        for (text, enc) in texts.iter().zip(&encodings) {
            if !enc.get_overflowing().is_empty() {
                let preview: String = text.chars().take(40).collect();
                if !self.truncate {
                    bail!(
                        "text \"{preview}…\" is longer than the model's {} tokens (allow truncation, or shorten it)",
                        self.max_len
                    );
                }
                tracing::warn!("text \"{preview}…\" truncated to {} tokens", self.max_len);
            }
            ids.push(enc.get_ids().to_vec());
            types.push(enc.get_type_ids().to_vec());
        }
        let t = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let b = ids.len();
        let mut flat_ids = vec![self.pad_id; b * t];
        let mut flat_mask = vec![0u32; b * t];
        let mut flat_types = vec![0u32; b * t];
        for (row, (row_ids, row_types)) in ids.iter().zip(&types).enumerate() {
            let base = row * t;
            flat_ids[base..base + row_ids.len()].copy_from_slice(row_ids);
            flat_types[base..base + row_types.len()].copy_from_slice(row_types);
            flat_mask[base..base + row_ids.len()].fill(1);
        }
        Ok(EncodedBatch {
            input_ids: Tensor::from_vec(flat_ids, (b, t), device)?,
            attention_mask: Tensor::from_vec(flat_mask, (b, t), device)?,
            token_type_ids: Tensor::from_vec(flat_types, (b, t), device)?,
            ids,
        })
    }
}

/// Reads texts from a file: one a line, or JSONL rows with a "text" field. Blank lines are skipped.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut texts = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.trim_start().starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!("{}:{}: not valid JSON: {e}", path.display(), i + 1)
            })?;
            match value.get("text").and_then(|t| t.as_str()) {
                Some(t) => texts.push(t.to_string()),
                None => bail!("{}:{}: missing string field `text`", path.display(), i + 1),
            }
        } else {
            texts.push(line.to_string());
        }
    }
    if texts.is_empty() {
        bail!("{}: no texts in the file", path.display());
    }
    Ok(texts)
}
