//! DETR's set-prediction loss, as transformers' `ForObjectDetectionLoss` with `ImageLoss` and `HungarianMatcher`
//! (`transformers/loss/loss_for_object_detection.py`): match queries to targets, then
//!
//! * `loss_ce`: cross-entropy over `num_labels + 1` classes, every unmatched query labelled "no object" (the last
//!   class), with class weight `eos_coefficient` for that class — the weighted mean of torch's
//!   `cross_entropy(weight=)`, `Σ wᵢ·ℓᵢ / Σ wᵢ`;
//! * `loss_bbox`: L1 of the matched `(cx, cy, w, h)` boxes, summed and divided by `num_boxes`;
//! * `loss_giou`: `1 − GIoU` of the matched corner boxes, summed and divided by `num_boxes`;
//! * `cardinality_error`: `|#queries not predicting no-object − #targets|` averaged over images, logged only;
//!
//! with `num_boxes` the number of target boxes in the batch, at least 1. Each auxiliary decoder output is matched
//! and scored the same way, its entries suffixed `_0`, `_1`, …; the total is
//! `Σ loss_ce + bbox_loss_coefficient · loss_bbox + giou_loss_coefficient · loss_giou` over all layers.

use std::collections::BTreeMap;

use candle_core::{D, DType, Tensor};
use mosaic_kernels::IGNORE_INDEX;
use mosaic_models::boxes::{center_to_corners, generalized_box_iou};

use super::matcher::{DetectionTarget, HungarianMatcher, Match};
use crate::error::{Result, TrainError};

/// The loss's settings, named as DETR's `config.json` names them; [`DetrLossConfig::new`] gives DETR's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetrLossConfig {
    /// Real classes; logits have `num_labels + 1` columns, the last meaning "no object".
    pub num_labels: usize,
    /// Class weight of "no object" in `loss_ce` (0.1).
    pub eos_coefficient: f64,
    /// Weight of `loss_bbox` in the total (5).
    pub bbox_loss_coefficient: f64,
    /// Weight of `loss_giou` in the total (2).
    pub giou_loss_coefficient: f64,
    /// The matching costs (`class_cost` 1, `bbox_cost` 5, `giou_cost` 2).
    pub matcher: HungarianMatcher,
}

impl DetrLossConfig {
    /// DETR's defaults for `num_labels` classes.
    pub fn new(num_labels: usize) -> Self {
        DetrLossConfig {
            num_labels,
            eos_coefficient: 0.1,
            bbox_loss_coefficient: 5.0,
            giou_loss_coefficient: 2.0,
            matcher: HungarianMatcher::default(),
        }
    }
}

/// What [`DetrLoss::forward`] returns.
#[derive(Debug, Clone)]
pub struct DetrLossOutput {
    /// The weighted total, a differentiable f32 scalar.
    pub loss: Tensor,
    /// Every entry transformers' `loss_dict` has (`loss_ce`, `loss_bbox`, `loss_giou`, `cardinality_error`, and
    /// their `_i` copies for auxiliary output `i`).
    pub loss_dict: BTreeMap<String, f64>,
    /// The matching of the final layer, one per image.
    pub indices: Vec<Match>,
    /// The matching of each auxiliary output, in the order given.
    pub aux_indices: Vec<Vec<Match>>,
}

/// The four losses of one decoder layer.
struct LayerLosses {
    ce: Tensor,
    bbox: Tensor,
    giou: Tensor,
    cardinality: f64,
}

/// DETR's set loss; see the module documentation.
#[derive(Debug, Clone)]
pub struct DetrLoss {
    cfg: DetrLossConfig,
}

impl DetrLoss {
    /// A loss with these settings; refuses `num_labels = 0` and a negative or non-finite coefficient.
    pub fn new(cfg: DetrLossConfig) -> Result<Self> {
        if cfg.num_labels == 0 {
            return Err(TrainError::Invalid(
                "DETR loss: num_labels must be at least 1".into(),
            ));
        }
        let coefficients = [
            ("eos_coefficient", cfg.eos_coefficient),
            ("bbox_loss_coefficient", cfg.bbox_loss_coefficient),
            ("giou_loss_coefficient", cfg.giou_loss_coefficient),
        ];
        if let Some((name, v)) = coefficients
            .iter()
            .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        {
            return Err(TrainError::Invalid(format!(
                "DETR loss: {name} must be finite and >= 0, got {v}"
            )));
        }
        Ok(DetrLoss { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &DetrLossConfig {
        &self.cfg
    }

    /// The loss of `logits: [B, Q, num_labels + 1]` and `pred_boxes: [B, Q, 4]` (normalised cx, cy, w, h) with the
    /// auxiliary decoder outputs `aux` (each a `(logits, pred_boxes)` pair of the same shapes) against one target per
    /// image. Errors on mismatched shapes, a target with more boxes than queries, a label outside `0..num_labels`,
    /// or a NaN or degenerate box.
    pub fn forward(
        &self,
        logits: &Tensor,
        pred_boxes: &Tensor,
        aux: &[(Tensor, Tensor)],
        targets: &[DetectionTarget],
    ) -> Result<DetrLossOutput> {
        let dims = self.check_layer(logits, pred_boxes, "logits", None)?;
        for (i, (l, b)) in aux.iter().enumerate() {
            self.check_layer(l, b, &format!("auxiliary output {i}"), Some(dims))?;
        }
        if targets.len() != dims.0 {
            return Err(TrainError::Invalid(format!(
                "{} detection targets for a batch of {} images",
                targets.len(),
                dims.0
            )));
        }
        for (i, t) in targets.iter().enumerate() {
            t.validate(i, self.cfg.num_labels)?;
        }
        // The number of target boxes normalises the box losses of every layer, clamped as transformers does so an
        // all-empty batch divides by 1.
        let num_boxes = targets
            .iter()
            .map(DetectionTarget::len)
            .sum::<usize>()
            .max(1) as f64;

        let mut loss_dict = BTreeMap::new();
        let indices = self.cfg.matcher.forward(logits, pred_boxes, targets)?;
        let layer = self.layer_losses(logits, pred_boxes, targets, &indices, num_boxes)?;
        let mut loss = self.record(&layer, "", &mut loss_dict)?;
        let mut aux_indices = Vec::with_capacity(aux.len());
        for (i, (l, b)) in aux.iter().enumerate() {
            let m = self.cfg.matcher.forward(l, b, targets)?;
            let layer = self.layer_losses(l, b, targets, &m, num_boxes)?;
            loss = (loss + self.record(&layer, &format!("_{i}"), &mut loss_dict)?)?;
            aux_indices.push(m);
        }
        Ok(DetrLossOutput {
            loss,
            loss_dict,
            indices,
            aux_indices,
        })
    }

    /// Checks one layer's shapes, returning `(B, Q)`; `expected` is the final layer's `(B, Q)` for auxiliary ones.
    fn check_layer(
        &self,
        logits: &Tensor,
        pred_boxes: &Tensor,
        what: &str,
        expected: Option<(usize, usize)>,
    ) -> Result<(usize, usize)> {
        let classes = self.cfg.num_labels + 1;
        let (b, q) = match logits.dims() {
            [b, q, c] if *c == classes => (*b, *q),
            d => {
                return Err(TrainError::Invalid(format!(
                    "DETR loss: {what} logits must be [batch, queries, {classes}] (num_labels + 1), got {d:?}"
                )));
            }
        };
        if pred_boxes.dims() != [b, q, 4] {
            return Err(TrainError::Invalid(format!(
                "DETR loss: {what} pred_boxes must be [{b}, {q}, 4], got {:?}",
                pred_boxes.dims()
            )));
        }
        if let Some(e) = expected.filter(|e| *e != (b, q)) {
            return Err(TrainError::Invalid(format!(
                "DETR loss: {what} has batch and queries {:?}, the final layer {e:?}",
                (b, q)
            )));
        }
        Ok((b, q))
    }

    /// Adds one layer's entries to `loss_dict` under `suffix` and returns its weighted sum.
    fn record(
        &self,
        layer: &LayerLosses,
        suffix: &str,
        loss_dict: &mut BTreeMap<String, f64>,
    ) -> Result<Tensor> {
        let scalar = |t: &Tensor| -> Result<f64> {
            Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
        };
        loss_dict.insert(format!("loss_ce{suffix}"), scalar(&layer.ce)?);
        loss_dict.insert(format!("loss_bbox{suffix}"), scalar(&layer.bbox)?);
        loss_dict.insert(format!("loss_giou{suffix}"), scalar(&layer.giou)?);
        loss_dict.insert(format!("cardinality_error{suffix}"), layer.cardinality);
        let bbox = layer.bbox.affine(self.cfg.bbox_loss_coefficient, 0.0)?;
        let giou = layer.giou.affine(self.cfg.giou_loss_coefficient, 0.0)?;
        Ok(((&layer.ce + bbox)? + giou)?)
    }

    /// The losses of one layer given its matching.
    fn layer_losses(
        &self,
        logits: &Tensor,
        pred_boxes: &Tensor,
        targets: &[DetectionTarget],
        matches: &[Match],
        num_boxes: f64,
    ) -> Result<LayerLosses> {
        let (bbox, giou) = self.box_losses(pred_boxes, targets, matches, num_boxes)?;
        Ok(LayerLosses {
            ce: self.class_loss(logits, targets, matches)?,
            bbox,
            giou,
            cardinality: self.cardinality_error(logits, targets)?,
        })
    }

    /// `loss_ce`: `logits: [B, Q, K+1]` → scalar. Torch's weighted mean `Σ w[yᵢ]·ℓᵢ / Σ w[yᵢ]` has only two weights
    /// here (1 for real classes, `eos_coefficient` for no-object), so it is two fused cross-entropy sums — one over
    /// the rows of each kind, the other kind ignored — whose backward is the kernel's own.
    fn class_loss(
        &self,
        logits: &Tensor,
        targets: &[DetectionTarget],
        matches: &[Match],
    ) -> Result<Tensor> {
        let (b, q, c) = logits.dims3()?;
        let no_object = self.cfg.num_labels as i64;
        let mut classes = vec![no_object; b * q];
        for (i, (m, t)) in matches.iter().zip(targets).enumerate() {
            for (&query, &target) in m.queries.iter().zip(&m.targets) {
                classes[i * q + query] = i64::from(t.class_labels[target]);
            }
        }
        let keep = |object: bool| -> Vec<i64> {
            let pick = |&c: &i64| {
                if (c == no_object) != object {
                    c
                } else {
                    IGNORE_INDEX
                }
            };
            classes.iter().map(pick).collect()
        };
        let flat = logits.reshape((b * q, c))?;
        let device = logits.device();
        let (obj_sum, n_obj) =
            mosaic_kernels::cross_entropy_sum(&flat, &Tensor::new(keep(true), device)?, 0.0)?;
        let (empty_sum, n_empty) =
            mosaic_kernels::cross_entropy_sum(&flat, &Tensor::new(keep(false), device)?, 0.0)?;
        let eos = self.cfg.eos_coefficient;
        let weight = n_obj as f64 + eos * n_empty as f64;
        Ok((obj_sum + empty_sum.affine(eos, 0.0)?)?.affine(1.0 / weight, 0.0)?)
    }

    /// `(loss_bbox, loss_giou)` of the matched pairs: `pred_boxes: [B, Q, 4]` → two scalars.
    fn box_losses(
        &self,
        pred_boxes: &Tensor,
        targets: &[DetectionTarget],
        matches: &[Match],
        num_boxes: f64,
    ) -> Result<(Tensor, Tensor)> {
        let (b, q, _) = pred_boxes.dims3()?;
        let mut rows = Vec::new();
        let mut target_boxes = Vec::new();
        for (i, (m, t)) in matches.iter().zip(targets).enumerate() {
            for (&query, &target) in m.queries.iter().zip(&m.targets) {
                rows.push((i * q + query) as u32);
                target_boxes.extend_from_slice(&t.boxes[target]);
            }
        }
        let n = rows.len();
        if n == 0 {
            // No targets anywhere: both losses are 0, kept attached to the boxes so every layer still gets a
            // (zero) gradient as torch's empty sums give one.
            let zero = pred_boxes.sum_all()?.affine(0.0, 0.0)?;
            return Ok((zero.clone(), zero));
        }
        let device = pred_boxes.device();
        let src = pred_boxes
            .reshape((b * q, 4))?
            .index_select(&Tensor::new(rows, device)?, 0)?;
        let tgt = Tensor::from_vec(target_boxes, (n, 4), device)?.to_dtype(src.dtype())?;
        let l1 = (&src - &tgt)?
            .abs()?
            .sum_all()?
            .affine(1.0 / num_boxes, 0.0)?;
        let giou = generalized_box_iou(&center_to_corners(&src)?, &center_to_corners(&tgt)?)?;
        // torch.diag of the pairwise [n, n] matrix: the entries k·(n + 1) of its flattening.
        let diagonal: Vec<u32> = (0..n).map(|k| (k * (n + 1)) as u32).collect();
        let diag = giou
            .flatten_all()?
            .index_select(&Tensor::new(diagonal, device)?, 0)?;
        let loss_giou = diag
            .affine(-1.0, 1.0)?
            .sum_all()?
            .affine(1.0 / num_boxes, 0.0)?;
        Ok((l1, loss_giou))
    }

    /// `cardinality_error`: mean over images of `|#queries whose argmax is not no-object − #targets|`; no gradient.
    fn cardinality_error(&self, logits: &Tensor, targets: &[DetectionTarget]) -> Result<f64> {
        let argmax: Vec<Vec<u32>> = logits.detach().argmax(D::Minus1)?.to_vec2()?;
        let no_object = self.cfg.num_labels as u32;
        let total: f64 = argmax
            .iter()
            .zip(targets)
            .map(|(row, t)| {
                let predicted = row.iter().filter(|&&c| c != no_object).count() as f64;
                (predicted - t.len() as f64).abs()
            })
            .sum();
        Ok(total / argmax.len().max(1) as f64)
    }
}
