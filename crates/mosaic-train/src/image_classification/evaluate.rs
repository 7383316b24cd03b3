//! Evaluation of an image classifier on a decoded split: mean cross-entropy, per-image probabilities and the
//! scikit-learn style classification report with the metric names recipes use (`accuracy`, `f1_macro`, …).

use candle_core::Tensor;

use super::data::PixelSet;
use super::model::ImageClassifier;
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Report};
use crate::metrics::ClassificationReport;

/// Class probabilities `(B, labels)` of a batch of pixels (the model's mode is left as it is).
pub fn probabilities(model: &ImageClassifier, pixels: &Tensor) -> Result<Vec<Vec<f32>>> {
    let logits = model.logits(pixels)?;
    Ok(mosaic_kernels::softmax_last_dim(&logits)?.to_vec2::<f32>()?)
}

/// The index of the largest value (the first on ties).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// Evaluates `model` on `set` in eval mode (it is left there: the trainer switches back), `batch_size` images at a time.
pub fn evaluate(
    model: &ImageClassifier,
    set: &PixelSet,
    labels: &[String],
    batch_size: usize,
) -> Result<Evaluation> {
    if set.is_empty() {
        return Err(TrainError::Invalid(
            "cannot evaluate on an empty data set".into(),
        ));
    }
    model.set_training(false);
    run(model, set, labels, batch_size.max(1))
}

fn run(
    model: &ImageClassifier,
    set: &PixelSet,
    labels: &[String],
    batch_size: usize,
) -> Result<Evaluation> {
    let mut loss_sum = 0.0;
    let mut predictions = Vec::with_capacity(set.len());
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let (pixels, targets) = set.batch(chunk)?;
        let logits = model.logits(&pixels)?;
        let (sum, _) = mosaic_kernels::cross_entropy_sum(&logits, &targets, 0.0)?;
        loss_sum += sum.to_scalar::<f32>()? as f64;
        let probs = mosaic_kernels::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
        predictions.extend(probs.into_iter().map(|p| (argmax(&p), p)));
    }
    let y_pred: Vec<usize> = predictions.iter().map(|(p, _)| *p).collect();
    let report = ClassificationReport::compute(labels, &set.labels, &y_pred)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    let loss = loss_sum / set.len() as f64;
    let metrics = crate::evaluate::classification_metrics(loss, &report);
    Ok(Evaluation {
        loss,
        metrics,
        report: Report::Classification(report),
        predictions,
    })
}
