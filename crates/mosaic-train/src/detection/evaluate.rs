//! Scoring a DETR on a split: every image through the model in eval mode, `post_process_object_detection` with
//! threshold 0 (every query is a ranked detection, as COCO evaluation wants: maxDets 100 covers them all),
//! boxes brought back to the original image's pixels, then pycocotools' twelve figures against the split's
//! ground truth, and the set loss.

use std::collections::BTreeMap;

use candle_core::Device;
use mosaic_data::image::DetrImageProcessor;
use mosaic_models::detr::{Detection, Detr, post_process_object_detection};

use super::data::{DetectionSet, DetrInputs};
use super::set_loss::DetrLoss;
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Report};
use crate::metrics::coco_map::{self, CocoDetection, CocoStats};

/// The metric names of the twelve figures, in pycocotools' `stats` order (what `train.metric` may name).
pub const METRIC_NAMES: [&str; 12] = [
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
];

/// The twelve figures by metric name.
pub fn stats_metrics(stats: &CocoStats) -> BTreeMap<String, f64> {
    METRIC_NAMES
        .iter()
        .zip(stats.values())
        .map(|(n, v)| (n.to_string(), v))
        .collect()
}

/// The model's outputs on a batch, post-processed: per image, every query scoring above `threshold` with its box
/// in the original image's pixels (`[x0, y0, x1, y1]`), and the batch's set loss when `loss` is given.
pub fn detect_batch(
    model: &Detr,
    inputs: &DetrInputs,
    threshold: f32,
    loss: Option<&DetrLoss>,
) -> Result<(Vec<Vec<Detection>>, Option<f64>)> {
    let out =
        mosaic_models::no_grad(|| model.forward(&inputs.pixel_values, Some(&inputs.pixel_mask)))?;
    let batch_loss = match loss {
        Some(loss) => {
            let aux: Vec<_> = out
                .auxiliary
                .iter()
                .map(|p| (p.logits.clone(), p.pred_boxes.clone()))
                .collect();
            let l = loss.forward(&out.logits, &out.pred_boxes, &aux, &inputs.targets)?;
            Some(l.loss.to_scalar::<f32>()? as f64)
        }
        None => None,
    };
    // Relative to the padded image, then scaled per image: a padded batch's boxes are fractions of the padded
    // size, so the original-size scaling transformers applies would be off for all but the largest image.
    let mut detections =
        post_process_object_detection(&out.logits, &out.pred_boxes, threshold, None)?;
    for (image, &(sx, sy)) in detections.iter_mut().zip(&inputs.scales) {
        for d in image.iter_mut() {
            d.bbox = [
                d.bbox[0] * sx,
                d.bbox[1] * sy,
                d.bbox[2] * sx,
                d.bbox[3] * sy,
            ];
        }
    }
    Ok((detections, batch_loss))
}

/// Every image of `set` through the model (eval mode, then back to how it was left by the caller: the trainer
/// sets the mode again before its next step), as detections in original pixels, with the mean batch loss.
pub fn detect_set(
    model: &Detr,
    processor: &DetrImageProcessor,
    set: &DetectionSet,
    batch_size: usize,
    threshold: f32,
    loss: Option<&DetrLoss>,
    device: &Device,
) -> Result<(Vec<Vec<Detection>>, f64)> {
    let was_training = model.mode.is_training();
    model.set_training(false);
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut all = Vec::with_capacity(set.len());
    let (mut loss_sum, mut batches) = (0.0, 0usize);
    let result = (|| {
        for chunk in indices.chunks(batch_size.max(1)) {
            let inputs = set.collate(processor, chunk, None, device)?;
            let (detections, l) = detect_batch(model, &inputs, threshold, loss)?;
            all.extend(detections);
            if let Some(l) = l {
                loss_sum += l * chunk.len() as f64;
                batches += chunk.len();
            }
        }
        Ok::<_, TrainError>(())
    })();
    model.set_training(was_training);
    result?;
    Ok((all, loss_sum / batches.max(1) as f64))
}

/// Detections of the images of `set` (in its image order) as COCO results, boxes as `[x, y, w, h]`: label `l`
/// becomes category `category(l)`; a label without one (or one the ground truth does not have) is dropped.
pub fn coco_detections(
    set: &DetectionSet,
    detections: &[Vec<Detection>],
    category: impl Fn(usize) -> Option<i64>,
) -> Vec<CocoDetection> {
    let mut out = Vec::new();
    for (info, image) in set.coco.images().iter().zip(detections) {
        for d in image {
            let Some(category_id) = category(d.label).filter(|&c| set.coco.label(c).is_some())
            else {
                continue;
            };
            out.push(to_coco(info.id, category_id, d));
        }
    }
    out
}

/// One detection as a COCO result.
pub fn to_coco(image_id: i64, category_id: i64, d: &Detection) -> CocoDetection {
    let [x0, y0, x1, y1] = d.bbox.map(f64::from);
    CocoDetection {
        image_id,
        category_id,
        bbox: [x0, y0, (x1 - x0).max(0.0), (y1 - y0).max(0.0)],
        score: d.score as f64,
    }
}

/// COCO mAP (and the set loss) of `model` on `set`: an [`Evaluation`] whose report is the twelve figures.
pub fn evaluate(
    model: &Detr,
    processor: &DetrImageProcessor,
    set: &DetectionSet,
    loss: &DetrLoss,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    let (detections, mean_loss) =
        detect_set(model, processor, set, batch_size, 0.0, Some(loss), device)?;
    let results = coco_detections(set, &detections, |l| set.coco.category_id(l));
    score(set, &results, Some(mean_loss))
}

/// pycocotools' twelve figures of `results` on `set` as an [`Evaluation`] (`loss` NaN when not computed).
pub fn score(
    set: &DetectionSet,
    results: &[CocoDetection],
    loss: Option<f64>,
) -> Result<Evaluation> {
    let scored = coco_map::evaluate(&set.coco, results)
        .map_err(|e| TrainError::Invalid(format!("COCO evaluation: {e}")))?;
    let stats = *scored.stats();
    let mut metrics = stats_metrics(&stats);
    let loss = loss.unwrap_or(f64::NAN);
    if loss.is_finite() {
        metrics.insert("loss".into(), loss);
    }
    Ok(Evaluation {
        loss,
        metrics,
        report: Report::Detection(stats),
        predictions: Vec::new(),
    })
}
