//! The contrastive objective and its evaluation: CLIP's symmetric InfoNCE over a batch of image-caption pairs,
//! and loss + retrieval recall over a whole split.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use mosaic_models::Clip;
use mosaic_models::clip::clip_loss;

use super::data::{CaptionTokenizer, PairData};
use crate::error::Result;
use crate::metrics::retrieval::RetrievalRecall;

/// The recall cut-offs reported.
pub const RECALL_KS: [usize; 2] = [1, 5];

/// Symmetric InfoNCE of a batch: pair `i` is image `i` with caption `i`, every other caption (image) of the batch
/// is a negative. The mean of the cross-entropies over texts and over images of
/// `exp(logit_scale) · cos(text, image)` (HF's `clip_loss`); differentiable in both towers and `logit_scale`.
pub fn info_nce(
    clip: &Clip,
    pixels: &Tensor,
    input_ids: &Tensor,
    attention_mask: &Tensor,
) -> Result<Tensor> {
    let out = clip.forward(input_ids, Some(attention_mask), pixels)?;
    Ok(clip_loss(&out.logits_per_text)?)
}

/// Projected image features `(N, P)` of `pixels`, in batches, without a graph.
pub fn image_features(clip: &Clip, pixels: &Tensor, batch_size: usize) -> Result<Tensor> {
    let n = pixels.dim(0)?;
    let mut parts = Vec::new();
    for start in (0..n).step_by(batch_size.max(1)) {
        let len = batch_size.max(1).min(n - start);
        parts.push(
            clip.image_features(&pixels.narrow(0, start, len)?)?
                .detach(),
        );
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Projected text features `(N, P)` of token-id rows, in batches, without a graph.
pub fn text_features(
    clip: &Clip,
    tokenizer: &CaptionTokenizer,
    rows: &[Vec<u32>],
    batch_size: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in rows.chunks(batch_size.max(1)) {
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let (ids, mask) = tokenizer.batch(&refs, device)?;
        parts.push(clip.text_features(&ids, Some(&mask))?.detach());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Loss and recall of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct PairEvaluation {
    /// Symmetric InfoNCE over the whole split as one batch (every other pair of the split is a negative, so it
    /// is larger than the training batches' loss when the split is larger than a batch).
    pub loss: f64,
    pub recall: RetrievalRecall,
}

impl PairEvaluation {
    /// `loss`, `recall_at_{k}` (the mean of both directions) and the per-direction recalls.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = self.recall.metrics();
        m.insert("loss".into(), self.loss);
        m
    }
}

/// Loss and recall@1/5 of `clip` on `data` (eval mode is the caller's to set).
pub fn evaluate_pairs(
    clip: &Clip,
    data: &PairData,
    tokenizer: &CaptionTokenizer,
    batch_size: usize,
    device: &Device,
) -> Result<PairEvaluation> {
    let images = image_features(clip, &data.pixels, batch_size)?;
    let texts = text_features(clip, tokenizer, &data.captions, batch_size, device)?;
    let out = clip.similarity(&images, &texts)?;
    let loss = clip_loss(&out.logits_per_text)?.to_scalar::<f32>()? as f64;
    let n = data.len();
    let similarity: Vec<f32> = out
        .logits_per_image
        .contiguous()?
        .flatten_all()?
        .to_vec1()?;
    let recall = RetrievalRecall::compute(&similarity, n, &RECALL_KS)
        .map_err(|e| crate::TrainError::Invalid(e.to_string()))?;
    Ok(PairEvaluation { loss, recall })
}
