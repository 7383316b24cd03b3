//! Classifying images with CLIP by class name: zero-shot with a hand-written template (`"a photo of a {}."`), or
//! with CoOp's learned context in front of each name; the loss and classification report of such logits.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use mosaic_models::clip::CoopPrompt;
use mosaic_models::clip::zero_shot::{class_prompts, ensemble_class_embeddings, zero_shot_logits};
use mosaic_models::{Clip, l2_normalize};

use super::data::CaptionTokenizer;
use super::info_nce::text_features;
use crate::error::{Result, TrainError};
use crate::metrics::ClassificationReport;

/// Each class name's token ids as CoOp feeds them: `[SOS] name . [EOS]` (the context goes after `[SOS]`).
pub fn class_name_ids(tokenizer: &CaptionTokenizer, classes: &[String]) -> Result<Vec<Vec<u32>>> {
    let names: Vec<String> = classes.iter().map(|c| format!("{c}.")).collect();
    let (ids, truncated) = tokenizer.ids(&names)?;
    if truncated > 0 {
        return Err(TrainError::Invalid(format!(
            "{truncated} class names are longer than the model's text positions"
        )));
    }
    Ok(ids)
}

/// Unit class embeddings `(classes, P)` from one hand-written template (`{}` = the class name).
pub fn template_class_embeddings(
    clip: &Clip,
    tokenizer: &CaptionTokenizer,
    classes: &[String],
    template: &str,
    device: &Device,
) -> Result<Tensor> {
    let prompts: Vec<String> = class_prompts(classes, &[template.to_string()])?
        .into_iter()
        .flatten()
        .collect();
    let (ids, _) = tokenizer.ids(&prompts)?;
    let features = text_features(clip, tokenizer, &ids, ids.len(), device)?;
    Ok(ensemble_class_embeddings(&features, 1)?)
}

/// Unit class embeddings `(classes, P)` through CoOp's context (differentiable in the context).
pub fn coop_class_embeddings(
    clip: &Clip,
    prompt: &CoopPrompt,
    class_ids: &[Vec<u32>],
) -> Result<Tensor> {
    Ok(l2_normalize(&prompt.text_features(clip, class_ids)?)?)
}

/// Class logits `(images, classes)`: `exp(logit_scale) · cos(image, class)`.
pub fn class_logits(clip: &Clip, image_features: &Tensor, class_embeds: &Tensor) -> Result<Tensor> {
    Ok(zero_shot_logits(clip, image_features, class_embeds)?)
}

/// Cross-entropy of class logits against class ids (differentiable).
pub fn class_loss(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let targets: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let targets = Tensor::new(targets.as_slice(), logits.device())?;
    Ok(mosaic_models::loss::cross_entropy(logits, &targets)?)
}

/// Loss and classification report of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassEvaluation {
    pub loss: f64,
    pub report: ClassificationReport,
}

impl ClassEvaluation {
    /// `loss`, `accuracy`, and F1 / precision / recall micro, macro and weighted (the recipe metric names).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let r = &self.report;
        let mut m = BTreeMap::new();
        m.insert("loss".into(), self.loss);
        m.insert("accuracy".into(), r.micro_avg.recall);
        for (suffix, s) in [
            ("micro", &r.micro_avg),
            ("macro", &r.macro_avg),
            ("weighted", &r.weighted_avg),
        ] {
            m.insert(format!("f1_{suffix}"), s.f1);
            m.insert(format!("precision_{suffix}"), s.precision);
            m.insert(format!("recall_{suffix}"), s.recall);
        }
        m
    }
}

/// The loss and report of `logits` `(images, classes)` against `labels` (ties go to the first class).
pub fn evaluate_logits(
    logits: &Tensor,
    labels: &[usize],
    classes: &[String],
) -> Result<ClassEvaluation> {
    let loss = class_loss(logits, labels)?.to_scalar::<f32>()? as f64;
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let predicted: Vec<usize> = rows
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect();
    let report = ClassificationReport::compute(classes, labels, &predicted)
        .map_err(|e| TrainError::Invalid(e.to_string()))?;
    Ok(ClassEvaluation { loss, report })
}
