//! Detections from DETR's raw outputs, as `DetrImageProcessor.post_process_object_detection` computes them
//! (`transformers/models/detr/image_processing_detr.py`).

use candle_core::{D, DType, Tensor};

use crate::boxes::center_to_corners;
use crate::error::{ModelError, Result};

/// One detection: the best real class of a query, its probability and its box in target pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The softmax probability of `label` (over every class, "no object" included).
    pub score: f32,
    /// The class id, `0..labels` ("no object" is never a detection).
    pub label: usize,
    /// `[x0, y0, x1, y1]` scaled to the target size (unclipped, as transformers leaves it).
    pub bbox: [f32; 4],
}

/// Per image, the queries whose best real-class probability exceeds `threshold` (strictly), in query order.
///
/// `logits: [B, Q, labels + 1]`, `pred_boxes: [B, Q, 4]` as `(cx, cy, w, h)` in `[0, 1]`; `target_sizes`: each
/// image's `(height, width)` in pixels, or `None` to keep relative coordinates. As transformers: softmax over the
/// classes, drop the last ("no object"), take the max and its label, convert the boxes to corners and scale them
/// by `(w, h, w, h)`.
pub fn post_process_object_detection(
    logits: &Tensor,
    pred_boxes: &Tensor,
    threshold: f32,
    target_sizes: Option<&[(usize, usize)]>,
) -> Result<Vec<Vec<Detection>>> {
    let (b, q, classes) = logits.dims3().map_err(|_| {
        ModelError::InvalidInput(format!(
            "post-processing: logits must be (batch, queries, classes), got {:?}",
            logits.dims()
        ))
    })?;
    if pred_boxes.dims() != [b, q, 4] {
        return Err(ModelError::InvalidInput(format!(
            "post-processing: pred_boxes must be ({b}, {q}, 4) to match the logits, got {:?}",
            pred_boxes.dims()
        )));
    }
    if classes < 2 {
        return Err(ModelError::InvalidInput(format!(
            "post-processing: logits need at least one class besides \"no object\", got {classes}"
        )));
    }
    if let Some(sizes) = target_sizes
        && sizes.len() != b
    {
        return Err(ModelError::InvalidInput(format!(
            "post-processing: {} target sizes for a batch of {b} (give one (height, width) per image)",
            sizes.len()
        )));
    }
    let logits = logits.detach().to_dtype(DType::F32)?;
    // softmax over the last dimension; these are outputs, so no gradient is needed.
    let max = logits.max_keepdim(D::Minus1)?;
    let exp = logits.broadcast_sub(&max)?.exp()?;
    let prob = exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?;
    let real = prob.narrow(D::Minus1, 0, classes - 1)?;
    let scores: Vec<Vec<f32>> = real.max(D::Minus1)?.to_vec2()?;
    let labels: Vec<Vec<u32>> = real.argmax(D::Minus1)?.to_vec2()?;
    let corners: Vec<Vec<Vec<f32>>> =
        center_to_corners(&pred_boxes.detach().to_dtype(DType::F32)?)?.to_vec3()?;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let (sx, sy) = match target_sizes {
            Some(sizes) => (sizes[i].1 as f32, sizes[i].0 as f32),
            None => (1.0, 1.0),
        };
        let mut detections = Vec::new();
        for j in 0..q {
            let score = scores[i][j];
            if score > threshold {
                let c = &corners[i][j];
                detections.push(Detection {
                    score,
                    label: labels[i][j] as usize,
                    bbox: [c[0] * sx, c[1] * sy, c[2] * sx, c[3] * sy],
                });
            }
        }
        out.push(detections);
    }
    Ok(out)
}
