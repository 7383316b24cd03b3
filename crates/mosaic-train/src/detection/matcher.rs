//! DETR's Hungarian matcher, as transformers' `HungarianMatcher` (`transformers/loss/loss_for_object_detection.py`):
//! per image, the cost of giving query `q` the target `j` is
//! `bbox_cost · ‖box_q − box_j‖₁ + class_cost · (−p_q(class_j)) + giou_cost · (−GIoU(box_q, box_j))`, and a
//! minimum-cost one-to-one assignment picks which queries answer which targets.
//!
//! The assignment is solved by `pathfinding`'s Kuhn–Munkres on integer weights: the f32 costs are shifted and scaled
//! to i64 with a resolution far finer than f32's own, so the optimum is the one scipy's `linear_sum_assignment`
//! finds on the same matrix (ties aside). Matching runs on detached tensors: it chooses pairs, it is not a loss.

use candle_core::{D, DType, Tensor};
use mosaic_models::boxes::{center_to_corners, generalized_box_iou};
use pathfinding::kuhn_munkres::{Weights, kuhn_munkres_min};

use crate::error::{Result, TrainError};

/// The ground truth of one image: `class_labels[i]` (in `0..num_labels`) and `boxes[i]` as normalised
/// `(cx, cy, w, h)`, as DETR's `labels` list of dicts has them. An image without objects has both empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectionTarget {
    /// `[n]` class ids.
    pub class_labels: Vec<u32>,
    /// `[n, 4]` boxes, normalised `(cx, cy, w, h)`.
    pub boxes: Vec<[f32; 4]>,
}

impl DetectionTarget {
    /// Number of objects.
    pub fn len(&self) -> usize {
        self.class_labels.len()
    }

    /// True for an image without objects.
    pub fn is_empty(&self) -> bool {
        self.class_labels.is_empty()
    }

    /// The boxes as a `[n, 4]` f32 tensor on `device`.
    pub fn boxes_tensor(&self, device: &candle_core::Device) -> Result<Tensor> {
        let flat: Vec<f32> = self.boxes.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (self.boxes.len(), 4), device)?)
    }

    /// Refuses a target that the loss could not use, naming image `image`: labels and boxes of different lengths,
    /// a label outside `0..num_labels` (the no-object id `num_labels` included), a non-finite coordinate or a
    /// negative width/height.
    pub fn validate(&self, image: usize, num_labels: usize) -> Result<()> {
        if self.class_labels.len() != self.boxes.len() {
            return Err(TrainError::Invalid(format!(
                "detection target {image}: {} class labels but {} boxes",
                self.class_labels.len(),
                self.boxes.len()
            )));
        }
        if let Some((i, l)) = self
            .class_labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= num_labels)
        {
            return Err(TrainError::Invalid(format!(
                "detection target {image}: class label {l} of box {i} is out of range (num_labels = {num_labels}, \
                 labels are 0..{num_labels}; {num_labels} is the no-object class)"
            )));
        }
        for (i, b) in self.boxes.iter().enumerate() {
            if b.iter().any(|v| !v.is_finite()) || b[2] < 0.0 || b[3] < 0.0 {
                return Err(TrainError::Invalid(format!(
                    "detection target {image}: box {i} = {b:?} is not a valid (cx, cy, w, h) box (finite, w >= 0, \
                     h >= 0)"
                )));
            }
        }
        Ok(())
    }
}

/// Which queries answer which targets in one image: `queries[k]` is matched to `targets[k]`, sorted by query as
/// scipy's `linear_sum_assignment` returns them. Both have `min(num_queries, n)` = `n` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    /// Query indices, ascending.
    pub queries: Vec<usize>,
    /// The target index matched to each query.
    pub targets: Vec<usize>,
}

/// The matcher's cost weights; DETR's config defaults are `class_cost = 1`, `bbox_cost = 5`, `giou_cost = 2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HungarianMatcher {
    /// Weight of `−p(target class)`.
    pub class_cost: f64,
    /// Weight of the L1 distance of `(cx, cy, w, h)`.
    pub bbox_cost: f64,
    /// Weight of `−GIoU` of the corner boxes.
    pub giou_cost: f64,
}

impl Default for HungarianMatcher {
    fn default() -> Self {
        HungarianMatcher {
            class_cost: 1.0,
            bbox_cost: 5.0,
            giou_cost: 2.0,
        }
    }
}

impl HungarianMatcher {
    /// A matcher with these weights; as transformers, refuses all three zero (every assignment would tie).
    pub fn new(class_cost: f64, bbox_cost: f64, giou_cost: f64) -> Result<Self> {
        if class_cost == 0.0 && bbox_cost == 0.0 && giou_cost == 0.0 {
            return Err(TrainError::Invalid(
                "all costs of the Hungarian matcher are 0".into(),
            ));
        }
        Ok(HungarianMatcher {
            class_cost,
            bbox_cost,
            giou_cost,
        })
    }

    /// The cost matrix of one image: `logits: [Q, K+1]`, `pred_boxes: [Q, 4]` (cx, cy, w, h), a target of `n`
    /// boxes → `[Q, n]` f32 (detached), as transformers builds it. Errors when a predicted box is degenerate or NaN.
    pub fn cost_matrix(
        &self,
        logits: &Tensor,
        pred_boxes: &Tensor,
        target: &DetectionTarget,
    ) -> Result<Tensor> {
        let (q, _) = logits.dims2()?;
        let n = target.len();
        if n == 0 {
            return Ok(Tensor::zeros((q, 0), DType::F32, logits.device())?);
        }
        let logits = logits.detach().to_dtype(DType::F32)?;
        let pred_boxes = pred_boxes.detach().to_dtype(DType::F32)?;
        let prob = candle_nn::ops::softmax_last_dim(&logits)?;
        let ids = Tensor::from_iter(target.class_labels.iter().copied(), logits.device())?;
        let class = prob.index_select(&ids, 1)?.neg()?;
        let tgt = target.boxes_tensor(logits.device())?;
        // torch.cdist(p = 1): Σ over the four coordinates of |pred − target|.
        let l1 = pred_boxes
            .unsqueeze(1)?
            .broadcast_sub(&tgt.unsqueeze(0)?)?
            .abs()?
            .sum(D::Minus1)?;
        let giou =
            generalized_box_iou(&center_to_corners(&pred_boxes)?, &center_to_corners(&tgt)?)?
                .neg()?;
        let cost = ((l1.affine(self.bbox_cost, 0.0)? + class.affine(self.class_cost, 0.0)?)?
            + giou.affine(self.giou_cost, 0.0)?)?;
        Ok(cost)
    }

    /// Matches one image: `logits: [Q, K+1]`, `pred_boxes: [Q, 4]` against a target of `n ≤ Q` boxes.
    pub fn match_image(
        &self,
        logits: &Tensor,
        pred_boxes: &Tensor,
        target: &DetectionTarget,
    ) -> Result<Match> {
        let cost = self.cost_matrix(logits, pred_boxes, target)?;
        let (q, n) = cost.dims2()?;
        if n == 0 {
            return Ok(Match::default());
        }
        let rows: Vec<Vec<f32>> = cost.to_vec2()?;
        let flat: Vec<f64> = rows.into_iter().flatten().map(f64::from).collect();
        linear_sum_assignment(&flat, q, n)
    }

    /// Matches a batch: `logits: [B, Q, K+1]`, `pred_boxes: [B, Q, 4]`, `targets.len() == B` → one [`Match`] per
    /// image. Errors when an image has more targets than there are queries (DETR cannot leave a target unmatched) or
    /// a target is invalid (see [`DetectionTarget::validate`]).
    pub fn forward(
        &self,
        logits: &Tensor,
        pred_boxes: &Tensor,
        targets: &[DetectionTarget],
    ) -> Result<Vec<Match>> {
        let (b, q, classes) = logits.dims3()?;
        if targets.len() != b {
            return Err(TrainError::Invalid(format!(
                "{} detection targets for a batch of {b} images",
                targets.len()
            )));
        }
        let mut matches = Vec::with_capacity(b);
        for (i, target) in targets.iter().enumerate() {
            target.validate(i, classes.saturating_sub(1))?;
            if target.len() > q {
                return Err(TrainError::Invalid(format!(
                    "detection target {i} has {} boxes but the model has only {q} queries (num_queries must be at \
                     least the largest number of objects in an image)",
                    target.len()
                )));
            }
            let m = self
                .match_image(&logits.get(i)?, &pred_boxes.get(i)?, target)
                .map_err(|e| match e {
                    // Name the image: a degenerate predicted box is reported by the GIoU as `boxes1[q]`.
                    TrainError::Model(e) => {
                        TrainError::Invalid(format!("image {i}: predicted boxes: {e}"))
                    }
                    e => e,
                })?;
            matches.push(m);
        }
        Ok(matches)
    }
}

/// Row-major integer weights for `pathfinding`, already transposed to `rows ≤ columns`.
struct IntWeights {
    rows: usize,
    columns: usize,
    data: Vec<i64>,
}

impl Weights<i64> for IntWeights {
    fn rows(&self) -> usize {
        self.rows
    }

    fn columns(&self) -> usize {
        self.columns
    }

    fn at(&self, row: usize, col: usize) -> i64 {
        self.data[row * self.columns + col]
    }

    fn neg(&self) -> Self {
        IntWeights {
            rows: self.rows,
            columns: self.columns,
            data: self.data.iter().map(|v| -v).collect(),
        }
    }
}

/// Minimum-cost assignment of a row-major `cost: [q, n]` matrix with `n ≤ q`, as scipy's `linear_sum_assignment`:
/// every column gets one distinct row; returns `(rows, columns)` sorted by row.
///
/// Non-finite costs are treated as larger than any finite assignment, as transformers replaces them with the
/// largest float before scipy sees them: such a pair is chosen only when nothing else can be.
pub fn linear_sum_assignment(cost: &[f64], q: usize, n: usize) -> Result<Match> {
    if cost.len() != q * n {
        return Err(TrainError::Invalid(format!(
            "cost matrix has {} entries, expected {q} x {n}",
            cost.len()
        )));
    }
    if n > q {
        return Err(TrainError::Invalid(format!(
            "cannot assign {n} targets to {q} queries: each target needs its own query"
        )));
    }
    if n == 0 {
        return Ok(Match::default());
    }
    let finite = cost.iter().copied().filter(|c| c.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
        (lo.min(c), hi.max(c))
    });
    let range = if hi > lo { hi - lo } else { 1.0 };
    // Shifting every cost by `lo` changes every assignment's total by the same n·lo, so the optimum is unchanged.
    // `units` integer steps span the finite range; `big` exceeds any finite total, and n·big still fits an i64.
    let units = ((1u64 << 61) as f64 / ((n + 1) * (n + 1)) as f64).min((1u64 << 40) as f64);
    let big = (n as f64 + 1.0) * (units + 1.0);
    let scaled = |c: f64| -> i64 {
        if c.is_finite() {
            ((c - lo) / range * units).round() as i64
        } else {
            big as i64
        }
    };
    // pathfinding needs rows ≤ columns: rows are the targets, columns the queries.
    let mut data = Vec::with_capacity(q * n);
    for j in 0..n {
        data.extend((0..q).map(|i| scaled(cost[i * n + j])));
    }
    let weights = IntWeights {
        rows: n,
        columns: q,
        data,
    };
    let (_, query_of_target) = kuhn_munkres_min(&weights);
    let mut pairs: Vec<(usize, usize)> = query_of_target
        .into_iter()
        .enumerate()
        .map(|(t, q)| (q, t))
        .collect();
    pairs.sort_unstable();
    Ok(Match {
        queries: pairs.iter().map(|p| p.0).collect(),
        targets: pairs.iter().map(|p| p.1).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn assignment_finds_the_known_optimum() {
        // 4 queries x 3 targets; the greedy choice (row 0 → col 0, cost 1) is not optimal: it forces 1 → 1 (8),
        // total 10, while 0 → 1, 1 → 0, 3 → 2 costs 2 + 2 + 1 = 5.
        #[rustfmt::skip]
        let cost = [
            1.0, 2.0, 9.0,
            2.0, 8.0, 9.0,
            9.0, 9.0, 9.0,
            9.0, 9.0, 1.0,
        ];
        let m = linear_sum_assignment(&cost, 4, 3).unwrap();
        assert_eq!(m.queries, vec![0, 1, 3]);
        assert_eq!(m.targets, vec![1, 0, 2]);
    }

    #[test]
    fn non_finite_costs_are_avoided_and_shapes_checked() {
        let cost = [f64::NAN, 1.0, 2.0, f64::INFINITY];
        let m = linear_sum_assignment(&cost, 2, 2).unwrap();
        assert_eq!((m.queries, m.targets), (vec![0, 1], vec![1, 0]));
        assert!(linear_sum_assignment(&[0.0; 6], 2, 3).is_err());
        assert!(linear_sum_assignment(&[0.0; 5], 2, 3).is_err());
        assert_eq!(linear_sum_assignment(&[], 3, 0).unwrap(), Match::default());
    }

    #[test]
    fn matcher_pairs_each_target_with_its_query() {
        let dev = Device::Cpu;
        // Query 2 sits on target 0 and predicts class 1; query 0 sits on target 1 and predicts class 0.
        let logits =
            Tensor::new(&[[5f32, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 5.0, 0.0]], &dev).unwrap();
        let boxes = Tensor::new(
            &[
                [0.7f32, 0.7, 0.2, 0.2],
                [0.5, 0.5, 0.9, 0.9],
                [0.2, 0.2, 0.2, 0.2],
            ],
            &dev,
        )
        .unwrap();
        let target = DetectionTarget {
            class_labels: vec![1, 0],
            boxes: vec![[0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]],
        };
        let m = HungarianMatcher::default()
            .match_image(&logits, &boxes, &target)
            .unwrap();
        assert_eq!((m.queries, m.targets), (vec![0, 2], vec![1, 0]));
    }

    #[test]
    fn bad_targets_are_named() {
        let t = DetectionTarget {
            class_labels: vec![0, 4],
            boxes: vec![[0.5; 4], [0.5; 4]],
        };
        let err = t.validate(2, 4).unwrap_err().to_string();
        assert!(err.contains("target 2") && err.contains("label 4"), "{err}");
        let t = DetectionTarget {
            class_labels: vec![0],
            boxes: vec![[0.5, f32::NAN, 0.1, 0.1]],
        };
        assert!(t.validate(0, 4).unwrap_err().to_string().contains("box 0"));
        assert!(HungarianMatcher::new(0.0, 0.0, 0.0).is_err());
    }
}
