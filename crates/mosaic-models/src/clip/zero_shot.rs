//! Zero-shot classification with CLIP: class prompts from templates (`"a photo of a {}."`), prompt ensembles
//! (the mean of a class's normalised text embeddings over the templates, renormalised, as in the CLIP paper) and
//! label probabilities for images. Tokenization is the caller's (this crate has no tokenizer).

use candle_core::Tensor;

use super::model::{Clip, probabilities};
use crate::bert::l2_normalize;
use crate::error::{ModelError, Result};
use crate::grad_mode::param;

/// The slot a template's label goes into.
pub const LABEL_SLOT: &str = "{}";

/// The default template (OpenAI's).
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

/// For each label, every template with its `{}` replaced by the label: `prompts[label][template]`.
pub fn class_prompts(labels: &[String], templates: &[String]) -> Result<Vec<Vec<String>>> {
    if labels.is_empty() || templates.is_empty() {
        return Err(ModelError::InvalidInput(
            "zero-shot classification needs at least one label and one template".into(),
        ));
    }
    if let Some(bad) = templates.iter().find(|t| !t.contains(LABEL_SLOT)) {
        return Err(ModelError::InvalidInput(format!(
            "template `{bad}` has no `{LABEL_SLOT}` slot for the label"
        )));
    }
    if let Some(bad) = labels.iter().find(|l| l.trim().is_empty()) {
        return Err(ModelError::InvalidInput(format!("label `{bad}` is empty")));
    }
    Ok(labels
        .iter()
        .map(|label| {
            templates
                .iter()
                .map(|t| t.replace(LABEL_SLOT, label))
                .collect()
        })
        .collect())
}

/// Class embeddings `(labels, P)` from projected text features of the class prompts, laid out label-major
/// (`labels · templates` rows, the templates of label 0 first): each prompt's features are normalised, averaged
/// over the label's templates, and the mean renormalised.
pub fn ensemble_class_embeddings(text_features: &Tensor, templates: usize) -> Result<Tensor> {
    let (rows, p) = text_features.dims2()?;
    if templates == 0 || rows == 0 || !rows.is_multiple_of(templates) {
        return Err(ModelError::InvalidInput(format!(
            "{rows} prompt embeddings do not split into groups of {templates} templates"
        )));
    }
    let unit = l2_normalize(text_features)?;
    let mean = unit.reshape((rows / templates, templates, p))?.mean(1)?;
    Ok(l2_normalize(&mean)?)
}

/// Label logits `(images, labels)`: `exp(logit_scale) · normalize(image_features) · class_embedsᵀ`.
pub fn zero_shot_logits(
    clip: &Clip,
    image_features: &Tensor,
    class_embeds: &Tensor,
) -> Result<Tensor> {
    let images = l2_normalize(image_features)?;
    Ok(images
        .matmul(&class_embeds.t()?)?
        .broadcast_mul(&param(&clip.logit_scale).exp()?)?)
}

/// Label probabilities `(images, labels)`: the softmax of [`zero_shot_logits`].
pub fn zero_shot_probs(
    clip: &Clip,
    image_features: &Tensor,
    class_embeds: &Tensor,
) -> Result<Tensor> {
    probabilities(&zero_shot_logits(clip, image_features, class_embeds)?)
}
