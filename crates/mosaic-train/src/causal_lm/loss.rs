//! The causal-LM loss of an accumulation window — normalised by the counted tokens of the whole window, so that
//! accumulating micro-batches gives the gradient of one big batch — and loss / perplexity over a data set.

use candle_core::backprop::GradStore;
use candle_core::{Device, Var};
use mosaic_models::Gpt2;

use super::data::{LmBatch, LmExample};
use crate::clip::{GradAccumulator, Reduction};
use crate::error::Result;

/// Mean token loss and perplexity over a data set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LmEvaluation {
    pub loss: f64,
    pub perplexity: f64,
    /// Tokens the loss counted.
    pub tokens: usize,
}

/// Gradients of `Σ token losses / Σ counted tokens` over the micro-batches of one window, and that loss.
pub fn window_gradients(
    model: &Gpt2,
    batches: &[LmBatch],
    params: &[(String, Var)],
) -> Result<(GradStore, f64)> {
    let total: usize = batches.iter().map(|b| b.counted).sum();
    let mut accumulator = GradAccumulator::new(params.iter().map(|(_, v)| v.clone()));
    let mut window_loss = 0.0;
    for batch in batches {
        // Packed batches carry positions and segments: every sample sees only itself.
        let (sum, _) = model.lm_loss_sum_with_layout(
            &batch.input_ids,
            &batch.layout(),
            Some(&batch.labels),
        )?;
        // Each micro-batch is divided by the window's total, not its own count: the sum of the parts is then
        // exactly the big batch's mean.
        let loss = sum.affine(1.0 / total.max(1) as f64, 0.0)?;
        window_loss += loss.to_scalar::<f32>()? as f64;
        accumulator.add(&loss.backward()?)?;
    }
    Ok((accumulator.take(Reduction::Sum)?, window_loss))
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
