//! Measuring a LLaVA: the loss of the assistant replies, and its greedy answers — VQA accuracy (exact match
//! after the VQA normalisation, overall and per question type) on rows with a `question_type`, caption BLEU-4
//! (sacrebleu's) and CIDEr-D (pycocoevalcap's, on PTB-style tokens) on the others.

use mosaic_models::generation::GenerationConfig;
use mosaic_models::{Llava, no_grad};

use super::data::{VisualBatch, VisualData, VisualExample};
use super::processor::LlavaProcessor;
use crate::error::{Result, TrainError};
use crate::metrics::bleu::corpus_bleu;
use crate::metrics::cider::{cider_d, ptb_tokenize};
use crate::metrics::vqa::VqaAccuracy;

/// Mean reply-token loss and perplexity over a data set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct VisualLoss {
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: usize,
}

/// The loss of `model` (in eval mode, no graph) over `data`, in batches of `batch_size`.
pub fn evaluate_loss(
    model: &Llava,
    data: &VisualData,
    batch_size: usize,
    pad_id: u32,
) -> Result<VisualLoss> {
    let training = model.mode.is_training();
    model.set_training(false);
    let result = no_grad(|| -> Result<(f64, usize)> {
        let mut sum = 0.0;
        let mut tokens = 0;
        let examples: Vec<&VisualExample> = data.examples.iter().collect();
        for chunk in examples.chunks(batch_size.max(1)) {
            let batch = VisualBatch::collate(data, chunk, pad_id)?;
            let (s, n) = model.loss_sum(
                &batch.input_ids,
                Some(&batch.pixel_values),
                &vec![1; chunk.len()],
                Some(&batch.attention_mask),
                &batch.labels,
            )?;
            sum += s.to_scalar::<f32>()? as f64;
            tokens += n;
        }
        Ok((sum, tokens))
    });
    model.set_training(training);
    let (sum, tokens) = result?;
    let loss = sum / tokens.max(1) as f64;
    Ok(VisualLoss {
        loss,
        perplexity: loss.exp(),
        tokens,
    })
}

/// What the greedy answers to a data set score.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AnswerScores {
    /// Rows with a `question_type`.
    pub vqa: Option<VqaAccuracy>,
    /// Caption rows: corpus BLEU-4 (0–100, sacrebleu's scale) and CIDEr-D.
    pub bleu4: Option<f64>,
    pub cider: Option<f64>,
    pub captions: usize,
    /// Every generated answer, in data order.
    pub predictions: Vec<String>,
}

impl AnswerScores {
    /// One line for the log.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.vqa {
            parts.push(format!(
                "VQA accuracy {:.4} ({} questions)",
                v.overall(),
                v.count()
            ));
        }
        if let (Some(b), Some(c)) = (self.bleu4, self.cider) {
            parts.push(format!(
                "caption BLEU-4 {b:.2}, CIDEr-D {c:.4} ({} captions)",
                self.captions
            ));
        }
        parts.join("; ")
    }

    /// The report's / metrics log's fields.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "vqa": self.vqa,
            "bleu4": self.bleu4,
            "cider": self.cider,
            "captions": self.captions,
        })
    }
}

/// Generates a greedy answer (up to `max_new_tokens`, fewer when the context has less room after a prompt) to
/// each example's prompt and scores them.
pub fn score_answers(
    model: &Llava,
    processor: &LlavaProcessor,
    data: &VisualData,
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<AnswerScores> {
    let training = model.mode.is_training();
    model.set_training(false);
    let context = model.config.text.n_positions;
    let mut predictions = Vec::with_capacity(data.examples.len());
    let result = (|| -> Result<()> {
        for chunk in data.examples.chunks(batch_size.max(1)) {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|e| e.prompt_ids.clone()).collect();
            let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
            let room = context.saturating_sub(longest).min(max_new_tokens);
            if room == 0 {
                let e = chunk
                    .iter()
                    .max_by_key(|e| e.prompt_ids.len())
                    .map_or("?", |e| &e.id);
                return Err(TrainError::Invalid(format!(
                    "{e}: its prompt ({longest} tokens with the image features) leaves no room for an answer in \
                     the language model's context of {context}"
                )));
            }
            let mut config = GenerationConfig::greedy(room);
            config.eos_token_ids = processor.stop_ids.clone();
            config.pad_token_id = Some(processor.encoder.pad_id());
            let images: Vec<u32> = chunk.iter().map(|e| e.image as u32).collect();
            let images = candle_core::Tensor::new(images.as_slice(), data.pixel_values.device())?;
            let pixels = data.pixel_values.index_select(&images, 0)?;
            let generated = model.generate(
                &prompts,
                Some(&pixels),
                &vec![1; chunk.len()],
                &config,
                None,
            )?;
            for g in generated {
                let ids: Vec<u32> = g
                    .token_ids
                    .into_iter()
                    .filter(|id| !processor.stop_ids.contains(id))
                    .collect();
                let text = processor
                    .encoder
                    .tokenizer()
                    .decode(&ids, true)
                    .map_err(|e| TrainError::Invalid(format!("cannot decode: {e}")))?;
                predictions.push(text.trim().to_string());
            }
        }
        Ok(())
    })();
    model.set_training(training);
    result?;
    score_predictions(&data.examples, predictions)
}

/// Scores generated answers against the examples' references.
pub fn score_predictions(
    examples: &[VisualExample],
    predictions: Vec<String>,
) -> Result<AnswerScores> {
    let metric = |e: crate::metrics::MetricsError| TrainError::Invalid(e.to_string());
    let mut vqa = VqaAccuracy::default();
    let mut hypotheses = Vec::new();
    let mut references = Vec::new();
    for (example, prediction) in examples.iter().zip(&predictions) {
        match &example.question_type {
            Some(kind) => vqa.add(kind, prediction, &example.answer),
            None => {
                hypotheses.push(prediction.as_str());
                references.push(example.references.iter().map(String::as_str).collect());
            }
        }
    }
    let (bleu4, cider) = if hypotheses.is_empty() {
        (None, None)
    } else {
        let bleu = corpus_bleu(&hypotheses, &references).map_err(metric)?;
        let tokenized_h: Vec<String> = hypotheses.iter().map(|h| ptb_tokenize(h)).collect();
        let tokenized_r: Vec<Vec<String>> = references
            .iter()
            .map(|rs: &Vec<&str>| rs.iter().map(|r| ptb_tokenize(r)).collect())
            .collect();
        let h: Vec<&str> = tokenized_h.iter().map(String::as_str).collect();
        let r: Vec<Vec<&str>> = tokenized_r
            .iter()
            .map(|rs| rs.iter().map(String::as_str).collect())
            .collect();
        let cider = cider_d(&h, &r).map_err(metric)?;
        (Some(bleu.score), Some(cider.score))
    };
    Ok(AnswerScores {
        vqa: (vqa.count() > 0).then_some(vqa),
        bleu4,
        cider,
        captions: hypotheses.len(),
        predictions,
    })
}
