//! The model a recipe trains: a BERT plus the way its outputs become class scores — a classification head
//! (`head`), verbalizer logits at the mask through the MLM head (`cloze`, PET / LM-BFF), or the cosine between
//! the input's and each label description's embedding over a temperature (`prompt-similarity`).

use candle_core::{DType, Device, Tensor};
use mosaic_data::Batch;
use mosaic_models::{Bert, l2_normalize, mean_pool};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::recipe::{Method, Task};

/// How scores are read off the model; everything needed to rebuild it from a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Scoring {
    /// Classification head on the pooled output (or per token).
    Head,
    /// Per label, the token ids of its verbalizer words; the label's score is their mean MLM logit at the mask.
    Cloze {
        mask_id: u32,
        label_words: Vec<Vec<u32>>,
    },
    /// Per label, the tokenized description prompt; score = cos(input, description) / temperature.
    PromptSimilarity {
        descriptions: Vec<Vec<u32>>,
        temperature: f64,
    },
}

/// A batch as tensors on the model's device.
pub struct TensorBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    /// (B,) class ids, or (B·T,) token labels with -100 where nothing counts.
    pub labels: Tensor,
    pub ids: Vec<u32>,
    pub batch_size: usize,
    pub seq_len: usize,
}

impl TensorBatch {
    pub fn new(batch: &Batch, device: &Device) -> Result<Self> {
        let shape = (batch.batch_size, batch.seq_len);
        Ok(TensorBatch {
            input_ids: Tensor::from_slice(&batch.input_ids, shape, device)?,
            attention_mask: Tensor::from_slice(&batch.attention_mask, shape, device)?,
            token_type_ids: Tensor::from_slice(&batch.token_type_ids, shape, device)?,
            labels: Tensor::from_slice(&batch.labels, batch.labels.len(), device)?,
            ids: batch.input_ids.clone(),
            batch_size: batch.batch_size,
            seq_len: batch.seq_len,
        })
    }
}

/// A BERT with its scoring rule and label names.
pub struct TaskModel {
    pub bert: Bert,
    pub task: Task,
    pub scoring: Scoring,
    pub labels: Vec<String>,
    pad_id: u32,
}

impl TaskModel {
    pub fn new(bert: Bert, task: Task, scoring: Scoring, labels: Vec<String>, pad_id: u32) -> Self {
        TaskModel {
            bert,
            task,
            scoring,
            labels,
            pad_id,
        }
    }

    pub fn method(&self) -> Method {
        match self.scoring {
            Scoring::Head => Method::Head,
            Scoring::Cloze { .. } => Method::Cloze,
            Scoring::PromptSimilarity { .. } => Method::PromptSimilarity,
        }
    }

    /// Class scores: (B, L) for sequence classification, (B·T, L) for token classification.
    pub fn scores(&self, batch: &TensorBatch) -> Result<Tensor> {
        let hidden = self.bert.hidden_states(
            &batch.input_ids,
            Some(&batch.token_type_ids),
            Some(&batch.attention_mask),
        )?;
        match &self.scoring {
            Scoring::Head => {
                let logits = self.bert.classifier_logits(&hidden)?;
                Ok(match self.task {
                    Task::TokenClassification => logits.flatten_to(1)?,
                    // A causal LM never becomes a TaskModel (it trains through `causal_lm`).
                    Task::Classification
                    | Task::CausalLm
                    | Task::ImageClassification
                    | Task::ImageTextContrastive
                    | Task::VisualInstruction
                    | Task::MultimodalClassification
                    | Task::TextToImage
                    | Task::Detection => logits,
                })
            }
            Scoring::Cloze {
                mask_id,
                label_words,
            } => self.cloze_scores(batch, &hidden, *mask_id, label_words),
            Scoring::PromptSimilarity {
                descriptions,
                temperature,
            } => {
                let inputs = l2_normalize(&mean_pool(&hidden, &batch.attention_mask)?)?;
                let described = self.embed_token_rows(descriptions, batch.input_ids.device())?;
                Ok(inputs
                    .matmul(&described.t()?)?
                    .affine(1.0 / temperature, 0.0)?)
            }
        }
    }

    fn cloze_scores(
        &self,
        batch: &TensorBatch,
        hidden: &Tensor,
        mask_id: u32,
        label_words: &[Vec<u32>],
    ) -> Result<Tensor> {
        let t = batch.seq_len;
        let mut rows = Vec::with_capacity(batch.batch_size);
        for b in 0..batch.batch_size {
            let row = &batch.ids[b * t..(b + 1) * t];
            let pos = mosaic_data::mask_position(row, mask_id)?;
            rows.push((b * t + pos) as u32);
        }
        let device = hidden.device();
        let flat = hidden.flatten_to(1)?;
        let at_mask = flat.index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
        let vocab_logits = self.bert.mlm_logits(&at_mask)?;
        // Mean over each label's words, as one matmul with an averaging matrix (words × labels).
        let words: Vec<u32> = label_words.iter().flatten().copied().collect();
        let mut average = vec![0f32; words.len() * label_words.len()];
        let mut w = 0;
        for (l, ids) in label_words.iter().enumerate() {
            for _ in ids {
                average[w * label_words.len() + l] = 1.0 / ids.len() as f32;
                w += 1;
            }
        }
        let picked = vocab_logits.index_select(&Tensor::new(words.as_slice(), device)?, 1)?;
        let average = Tensor::from_vec(average, (words.len(), label_words.len()), device)?;
        Ok(picked.matmul(&average)?)
    }

    /// Normalised mean-pooled embeddings of already tokenized rows (with grads).
    fn embed_token_rows(&self, rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let t = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = vec![self.pad_id; rows.len() * t];
        let mut mask = vec![0u32; rows.len() * t];
        for (r, row) in rows.iter().enumerate() {
            ids[r * t..r * t + row.len()].copy_from_slice(row);
            mask[r * t..r * t + row.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (rows.len(), t), device)?;
        let mask = Tensor::from_vec(mask, (rows.len(), t), device)?;
        let hidden = self.bert.hidden_states(&ids, None, Some(&mask))?;
        Ok(l2_normalize(&mean_pool(&hidden, &mask)?)?)
    }

    /// Summed cross-entropy of the scores and the number of counted targets.
    pub fn loss_sum(&self, batch: &TensorBatch) -> Result<(Tensor, usize)> {
        let scores = self.scores(batch)?;
        Ok(mosaic_models::loss::cross_entropy_sum(
            &scores,
            &batch.labels,
        )?)
    }

    /// Softmax probabilities and argmax predictions, in eval mode (no dropout), per counted target.
    pub fn predict(&self, batch: &TensorBatch) -> Result<Vec<(usize, Vec<f32>)>> {
        let scores = self.scores(batch)?.detach();
        let probs = mosaic_kernels::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
        let rows: Vec<Vec<f32>> = probs.to_vec2()?;
        Ok(rows
            .into_iter()
            .map(|p| {
                let best = p
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                (best, p)
            })
            .collect())
    }

    /// The number of labels.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }
}

/// The tokenizer's mask token: BERT's `[MASK]`, else RoBERTa-style `<mask>`.
pub fn mask_token(encoder: &mosaic_data::Encoder) -> &'static str {
    if encoder.tokenizer().token_to_id("[MASK]").is_some() {
        "[MASK]"
    } else {
        "<mask>"
    }
}
