//! Loss and perplexity of a causal LM over a data set.

use candle_core::Device;
use mosaic_models::Gpt2;

use super::data::{LmBatch, LmExample};
use crate::error::Result;

/// Mean token loss and perplexity over a data set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LmEvaluation {
    pub loss: f64,
    pub perplexity: f64,
    /// Tokens the loss counted.
    pub tokens: usize,
}

/// Loss and perplexity of `model` (in eval mode) over `examples` (packed or not), in batches of `batch_size`.
pub fn evaluate(
    model: &Gpt2,
    examples: &[LmExample],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<LmEvaluation> {
    let training = model.mode.is_training();
    model.set_training(false);
    let mut sum = 0.0;
    let mut tokens = 0;
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = LmBatch::collate(chunk, pad_id, device)?;
        let (s, n) = model.lm_loss_sum_with_layout(
            &batch.input_ids,
            &batch.layout(),
            Some(&batch.labels),
        )?;
        sum += s.to_scalar::<f32>()? as f64;
        tokens += n;
    }
    model.set_training(training);
    let loss = sum / tokens.max(1) as f64;
    Ok(LmEvaluation {
        loss,
        perplexity: loss.exp(),
        tokens,
    })
}
