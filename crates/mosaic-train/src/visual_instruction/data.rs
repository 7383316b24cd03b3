//! Visual-instruction examples: LLaVA conversation rows (`{"image", "conversations": [{"from": "human", "value":
//! "<image>\n..."}, {"from": "gpt", ...}]}`, or the `messages` form), as a JSON array (LLaVA's files) or JSONL,
//! rendered with the model's chat template, labels on the assistant replies only (EOS counted, image positions
//! −100), each `<image>` expanded to one token per image feature, and the images decoded once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mosaic_data::IGNORE_INDEX;
use mosaic_prompt::{ChatMessage, conversation_from_row};

use super::processor::{IMAGE_TOKEN, LlavaProcessor};
use crate::error::{Result, TrainError};

/// One tokenized conversation about one image.
#[derive(Debug, Clone)]
pub struct VisualExample {
    /// The row's `id`, else `file:row`.
    pub id: String,
    /// Row of [`VisualData::pixel_values`].
    pub image: usize,
    /// The whole conversation, image placeholders expanded.
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    /// The conversation up to its first reply, with the generation prompt: what evaluation asks the model.
    pub prompt_ids: Vec<u32>,
    /// The first reply (or the row's `answer`), what a generated answer is compared with.
    pub answer: String,
    /// `question_type` of VQA rows.
    pub question_type: Option<String>,
    /// `references` of caption rows (else the answer alone).
    pub references: Vec<String>,
}

impl VisualExample {
    /// Tokens the shifted loss counts.
    pub fn counted(&self) -> usize {
        crate::causal_lm::data::counted_labels(&self.labels)
    }
}

/// The examples of one file and their images `(U, C, S, S)`.
pub struct VisualData {
    pub examples: Vec<VisualExample>,
    pub pixel_values: Tensor,
    pub image_paths: Vec<PathBuf>,
}

/// The rows of a LLaVA JSON array or a JSONL file, each with the name errors give it.
fn read_rows(path: &Path) -> Result<Vec<(String, serde_json::Value)>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
    if text.trim_start().starts_with('[') {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| TrainError::file(path, e))?;
        return Ok(rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| (format!("{}: row {}", path.display(), i + 1), row))
            .collect());
    }
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let row = serde_json::from_str(line)
            .map_err(|e| TrainError::Invalid(format!("{at}: invalid JSON: {e}")))?;
        rows.push((at, row));
    }
    Ok(rows)
}

/// How rows are read.
pub struct VisualEncoder<'a> {
    pub processor: &'a LlavaProcessor,
    /// The column holding the image path (relative to the data file). Default `image`.
    pub image_field: &'a str,
    /// The most tokens a conversation may have once its image features are in (the LM's context at most).
    pub max_length: usize,
}

impl VisualEncoder<'_> {
    /// Reads and tokenizes a data file, decoding each distinct image once; a bad row is an error naming it.
    pub fn load(&self, path: &Path, device: &Device) -> Result<VisualData> {
        let root = path.parent().unwrap_or(Path::new("."));
        let mut examples = Vec::new();
        let mut image_index: HashMap<PathBuf, usize> = HashMap::new();
        let mut image_paths = Vec::new();
        for (at, row) in read_rows(path)? {
            let bad = |message: String| TrainError::Invalid(format!("{at}: {message}"));
            let image = row
                .get(self.image_field)
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    bad(format!(
                        "no string field `{}` (the image)",
                        self.image_field
                    ))
                })?;
            let image_path = root.join(image);
            if !image_path.is_file() {
                return Err(bad(format!(
                    "image {} does not exist",
                    image_path.display()
                )));
            }
            let next = image_paths.len();
            let index = *image_index.entry(image_path.clone()).or_insert(next);
            if index == next {
                image_paths.push(image_path);
            }
            let id = row
                .get("id")
                .and_then(|v| v.as_str())
                .map_or_else(|| at.clone(), str::to_string);
            let example = self.encode_row(&row, id, index).map_err(bad)?;
            examples.push(example);
        }
        if examples.is_empty() {
            return Err(TrainError::file(path, "no examples"));
        }
        let pixel_values = self
            .processor
            .pixel_values(&image_paths, device)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(VisualData {
            examples,
            pixel_values,
            image_paths,
        })
    }

    /// One row as an example about image `image`.
    pub fn encode_row(
        &self,
        row: &serde_json::Value,
        id: String,
        image: usize,
    ) -> std::result::Result<VisualExample, String> {
        let p = self.processor;
        let mut messages = conversation_from_row(row).map_err(|e| e.to_string())?;
        let markers: usize = messages
            .iter()
            .map(|m| m.content.matches(IMAGE_TOKEN).count())
            .sum();
        match markers {
            // LLaVA puts the image before the first question when the text does not say where.
            0 => match messages.iter_mut().find(|m| !m.is_assistant()) {
                Some(first) => first.content = format!("{IMAGE_TOKEN}\n{}", first.content),
                None => return Err("the conversation has no user turn".into()),
            },
            1 => {}
            n => return Err(format!("{n} `{IMAGE_TOKEN}` markers but one image")),
        }
        let first_reply = messages
            .iter()
            .position(ChatMessage::is_assistant)
            .ok_or("the conversation has no assistant turn (nothing to learn)")?;
        let shown: Vec<ChatMessage> = messages.iter().map(|m| p.message(m)).collect();
        let rendered = p
            .template
            .render_for_training(&shown)
            .map_err(|e| e.to_string())?;
        let encoding = p.tokenize(&rendered.text).map_err(|e| e.to_string())?;
        let (mut ids, offsets) = (encoding.get_ids().to_vec(), encoding.get_offsets());
        let mut labels: Vec<i64> = ids
            .iter()
            .zip(offsets)
            .map(|(&id, &(start, end))| {
                let inside = rendered
                    .responses
                    .iter()
                    .any(|s| start < s.end && end > s.start);
                if inside && id != p.image_token_id {
                    id as i64
                } else {
                    IGNORE_INDEX
                }
            })
            .collect();
        if ids.last() != Some(&p.eos_id) {
            ids.push(p.eos_id);
            labels.push(p.eos_id as i64);
        } else if let Some(last) = labels.last_mut() {
            *last = p.eos_id as i64;
        }
        let (input_ids, labels) = expand_with_labels(p, &ids, &labels);
        if input_ids.len() > self.max_length {
            return Err(format!(
                "{} tokens with the image's {} features inserted, more than the {} the language model takes",
                input_ids.len(),
                p.image_tokens,
                self.max_length
            ));
        }
        let prompt = p
            .template
            .render(&shown[..first_reply], true)
            .map_err(|e| e.to_string())?;
        let prompt_ids = p.encode_prompt(&prompt).map_err(|e| e.to_string())?;
        let answer = row.get("answer").and_then(|a| a.as_str()).map_or_else(
            || messages[first_reply].content.trim().to_string(),
            str::to_string,
        );
        let references = match row.get("references").and_then(|r| r.as_array()) {
            Some(refs) => refs
                .iter()
                .map(|r| {
                    r.as_str()
                        .map(str::to_string)
                        .ok_or("`references` must be strings")
                })
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => vec![answer.clone()],
        };
        Ok(VisualExample {
            id,
            image,
            input_ids,
            labels,
            prompt_ids,
            answer,
            question_type: row
                .get("question_type")
                .and_then(|t| t.as_str())
                .map(str::to_string),
            references,
        })
    }
}

/// `ids`/`labels` with each image placeholder repeated once per feature (labels −100 there).
fn expand_with_labels(p: &LlavaProcessor, ids: &[u32], labels: &[i64]) -> (Vec<u32>, Vec<i64>) {
    let mut out_ids = Vec::with_capacity(ids.len() + p.image_tokens);
    let mut out_labels = Vec::with_capacity(ids.len() + p.image_tokens);
    for (&id, &label) in ids.iter().zip(labels) {
        if id == p.image_token_id {
            out_ids.extend(std::iter::repeat_n(id, p.image_tokens));
            out_labels.extend(std::iter::repeat_n(IGNORE_INDEX, p.image_tokens));
        } else {
            out_ids.push(id);
            out_labels.push(label);
        }
    }
    (out_ids, out_labels)
}

/// A right-padded batch with its images.
pub struct VisualBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Tensor,
    pub pixel_values: Tensor,
    pub counted: usize,
}

impl VisualBatch {
    pub fn collate(data: &VisualData, batch: &[&VisualExample], pad_id: u32) -> Result<Self> {
        let device = data.pixel_values.device();
        let b = batch.len();
        let t = batch.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut ids = vec![pad_id; b * t];
        let mut mask = vec![0u32; b * t];
        let mut labels = vec![IGNORE_INDEX; b * t];
        for (row, e) in batch.iter().enumerate() {
            let n = e.input_ids.len();
            ids[row * t..row * t + n].copy_from_slice(&e.input_ids);
            mask[row * t..row * t + n].fill(1);
            labels[row * t..row * t + n].copy_from_slice(&e.labels);
        }
        let images: Vec<u32> = batch.iter().map(|e| e.image as u32).collect();
        let images = Tensor::from_vec(images, b, device)?;
        Ok(VisualBatch {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            attention_mask: Tensor::from_vec(mask, (b, t), device)?,
            labels: Tensor::from_vec(labels, (b, t), device)?,
            pixel_values: data.pixel_values.index_select(&images, 0)?,
            counted: batch.iter().map(|e| e.counted()).sum(),
        })
    }
}
