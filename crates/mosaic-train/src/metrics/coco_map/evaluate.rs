//! `COCOeval.evaluate()` for boxes: per image and category, the IoUs and the greedy matching at every threshold.

use std::cmp::Ordering;

use mosaic_data::CocoDataset;

use super::accumulate::{Accumulated, accumulate, summarize};
use super::params::{AREA_RANGES, EvalImg, MAX_DETS};
use super::results::{CocoDetection, check_detection};
use super::stats::CocoStats;
use crate::metrics::MetricsError;

/// The IoU thresholds `.50:.05:.95`, bit for bit as `np.linspace(.5, .95, 10)` gives them.
pub fn iou_thresholds() -> [f64; 10] {
    linspace(0.5, 0.95)
}

/// The recall thresholds `0:.01:1`, bit for bit as `np.linspace(0, 1, 101)` gives them.
pub fn recall_thresholds() -> [f64; 101] {
    linspace(0.0, 1.0)
}

/// `np.linspace(start, stop, N)`: `i * step + start`, two roundings as numpy does them, the last point `stop`.
fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    let mut y = [0.0; N];
    for (i, v) in y.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    y[N - 1] = stop;
    y
}

/// A ground-truth box of one image and category.
struct Gt {
    id: i64,
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
}

/// A detection of one image and category; `id` is its 1-based position in the results, as `loadRes` numbers them.
struct Dt {
    id: i64,
    bbox: [f64; 4],
    score: f64,
}

/// The result of a COCO evaluation: pycocotools' `eval["precision"]`, `eval["recall"]` and `stats`.
#[derive(Clone, Debug)]
pub struct CocoEvaluation {
    categories: Vec<i64>,
    acc: Accumulated,
    stats: CocoStats,
}

impl CocoEvaluation {
    /// The twelve summary figures.
    pub fn stats(&self) -> &CocoStats {
        &self.stats
    }

    /// The category ids, in the order of the `category` index (sorted, as the contiguous labels).
    pub fn categories(&self) -> &[i64] {
        &self.categories
    }

    /// Interpolated precision at IoU threshold `t`, recall threshold `r`, category `k`, area range `a` and
    /// `MAX_DETS[m]`; -1 where the category has no ground truth in that range. `None` out of bounds.
    pub fn precision(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> Option<f64> {
        self.acc.precision(t, r, k, a, m)
    }

    /// Recall at IoU threshold `t`, category `k`, area range `a` and `MAX_DETS[m]` (-1 as for precision).
    pub fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> Option<f64> {
        self.acc.recall(t, k, a, m)
    }

    /// AP@[.50:.95] (all areas, 100 detections) of each category, as `(category id, AP)`; -1 for a category
    /// without ground truth.
    pub fn category_ap(&self) -> Vec<(i64, f64)> {
        self.categories
            .iter()
            .enumerate()
            .map(|(k, &id)| (id, self.acc.category_ap(k)))
            .collect()
    }
}

/// Scores detections against a COCO ground truth as `COCOeval(gt, dt, "bbox")` with `evaluate()`,
/// `accumulate()` and `summarize()` does.
///
/// Every detection must name an image and a category of `gt` and have finite numbers and a non-negative size;
/// the error names the first that does not (by its index in `detections`).
pub fn evaluate(
    gt: &CocoDataset,
    detections: &[CocoDetection],
) -> Result<CocoEvaluation, MetricsError> {
    for (index, d) in detections.iter().enumerate() {
        check_detection(d, gt).map_err(|message| MetricsError::CocoDetection { index, message })?;
    }
    let mut image_ids: Vec<i64> = gt.images().iter().map(|i| i.id).collect();
    image_ids.sort_unstable();
    let rank = |image_id: i64| image_ids.binary_search(&image_id).ok();
    let (n_images, n_cats) = (image_ids.len(), gt.num_labels());

    // One cell per (category, image), each in file order, as pycocotools' `_gts` and `_dts` hold them.
    let cell = |k: usize, i: usize| k * n_images + i;
    let mut gts: Vec<Vec<Gt>> = (0..n_cats * n_images).map(|_| Vec::new()).collect();
    let mut dts: Vec<Vec<Dt>> = (0..n_cats * n_images).map(|_| Vec::new()).collect();
    for a in gt.annotations() {
        if let Some(i) = rank(a.image_id) {
            gts[cell(a.label, i)].push(Gt {
                id: a.id,
                bbox: a.file_bbox,
                area: a.area,
                crowd: a.iscrowd,
            });
        }
    }
    for (n, d) in detections.iter().enumerate() {
        if let (Some(i), Some(k)) = (rank(d.image_id), gt.label(d.category_id)) {
            dts[cell(k, i)].push(Dt {
                id: n as i64 + 1,
                bbox: d.bbox,
                score: d.score,
            });
        }
    }

    let thresholds = iou_thresholds();
    let max_det = MAX_DETS[MAX_DETS.len() - 1];
    let mut eval_imgs: Vec<Option<EvalImg>> = (0..n_cats * AREA_RANGES.len() * n_images)
        .map(|_| None)
        .collect();
    for k in 0..n_cats {
        for i in 0..n_images {
            let g = &gts[cell(k, i)];
            let d = &mut dts[cell(k, i)];
            // A stable sort by descending score is `argsort(-score, kind="mergesort")` (equal scores, 0 and -0
            // included, keep their order).
            d.sort_by(|x, y| y.score.partial_cmp(&x.score).unwrap_or(Ordering::Equal));
            d.truncate(max_det);
            let ious: Vec<Vec<f64>> = d
                .iter()
                .map(|d| {
                    g.iter()
                        .map(|g| box_iou(&d.bbox, &g.bbox, g.crowd))
                        .collect()
                })
                .collect();
            for (a, &(_, lo, hi)) in AREA_RANGES.iter().enumerate() {
                eval_imgs[(k * AREA_RANGES.len() + a) * n_images + i] =
                    evaluate_img(g, d, &ious, lo, hi, &thresholds);
            }
        }
    }
    let acc = accumulate(
        &eval_imgs,
        n_cats,
        n_images,
        thresholds.len(),
        &recall_thresholds(),
    );
    let stats = summarize(&acc, &thresholds);
    Ok(CocoEvaluation {
        categories: gt.categories().iter().map(|c| c.id).collect(),
        acc,
        stats,
    })
}

/// pycocotools' `bbIou` for `[x, y, w, h]` boxes: intersection over union, or over the detection's area when the
/// ground truth is a crowd region.
fn box_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

/// `evaluateImg` for one image, category and area range `[lo, hi]`; `dts` are sorted and truncated, `ious` is
/// `[detection][ground truth]` in file order of the ground truth. `None` when there is neither.
fn evaluate_img(
    gts: &[Gt],
    dts: &[Dt],
    ious: &[Vec<f64>],
    lo: f64,
    hi: f64,
    thresholds: &[f64],
) -> Option<EvalImg> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let ignored = |g: &Gt| g.crowd || g.area < lo || g.area > hi;
    // Ignored ground truth goes last (a stable sort), so that a detection prefers a regular match.
    let mut order: Vec<usize> = (0..gts.len()).collect();
    order.sort_by_key(|&g| ignored(&gts[g]));
    let gt_ignore: Vec<bool> = order.iter().map(|&g| ignored(&gts[g])).collect();

    let (n_t, n_d) = (thresholds.len(), dts.len());
    let mut matches = vec![vec![0i64; n_d]; n_t];
    let mut dt_ignore = vec![vec![false; n_d]; n_t];
    for (t, &thr) in thresholds.iter().enumerate() {
        // `gt_match[g]`: the id of the detection that took ground truth `g` (ids start at 1; 0 is free).
        let mut gt_match = vec![0i64; order.len()];
        for (di, d) in dts.iter().enumerate() {
            let mut best = thr.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (gi, &g) in order.iter().enumerate() {
                // A matched box is taken, unless it is a crowd region.
                if gt_match[gi] > 0 && !gts[g].crowd {
                    continue;
                }
                // Once matched to a regular box, ignored boxes (sorted last) are no better.
                if m.is_some_and(|m| !gt_ignore[m]) && gt_ignore[gi] {
                    break;
                }
                let iou = ious[di][g];
                if iou < best {
                    continue;
                }
                best = iou;
                m = Some(gi);
            }
            if let Some(m) = m {
                dt_ignore[t][di] = gt_ignore[m];
                matches[t][di] = gts[order[m]].id;
                gt_match[m] = d.id;
            }
        }
    }
    // Unmatched detections outside the area range are ignored; "unmatched" is a match id of 0, as pycocotools
    // tests it.
    for (di, d) in dts.iter().enumerate() {
        let area = d.bbox[2] * d.bbox[3];
        if area < lo || area > hi {
            for t in 0..n_t {
                if matches[t][di] == 0 {
                    dt_ignore[t][di] = true;
                }
            }
        }
    }
    Some(EvalImg {
        scores: dts.iter().map(|d| d.score).collect(),
        matches,
        dt_ignore,
        gt_ignore,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_numpy_linspace() {
        let t = iou_thresholds();
        assert_eq!((t[0], t[5], t[9]), (0.5, 0.75, 0.95));
        let r = recall_thresholds();
        assert_eq!((r[0], r[1], r[100]), (0.0, 0.01, 1.0));
    }

    #[test]
    fn iou_of_boxes_and_crowds() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [5.0, 0.0, 10.0, 10.0];
        assert_eq!(box_iou(&a, &b, false), 50.0 / 150.0);
        // Crowd: intersection over the detection's area.
        assert_eq!(box_iou(&a, &b, true), 0.5);
        assert_eq!(box_iou(&a, &[10.0, 0.0, 5.0, 5.0], false), 0.0);
    }

    fn gt_json() -> CocoDataset {
        CocoDataset::from_json(
            r#"{"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500}]}"#,
            "gt.json",
        )
        .unwrap()
    }

    #[test]
    fn a_perfect_detection_scores_one_and_absent_categories_minus_one() {
        let gt = gt_json();
        let det = CocoDetection {
            image_id: 1,
            category_id: 1,
            bbox: [0.0, 0.0, 50.0, 50.0],
            score: 0.9,
        };
        let e = evaluate(&gt, &[det]).unwrap();
        let s = e.stats();
        // Precision is tp / (tp + fp + eps), a hair under 1, as in pycocotools.
        for v in [s.ap, s.ap50, s.ap_medium, s.ar1] {
            assert!((v - 1.0).abs() < 1e-12, "{v}");
        }
        assert_eq!((s.ap_small, s.ap_large, s.ar_small), (-1.0, -1.0, -1.0));
        let per_category = e.category_ap();
        assert_eq!((per_category[0].0, per_category[1]), (1, (2, -1.0)));
        assert!((per_category[0].1 - 1.0).abs() < 1e-12);
        // Nothing detected: zero where there is ground truth.
        let e = evaluate(&gt, &[]).unwrap();
        assert_eq!((e.stats().ap, e.stats().ar100), (0.0, 0.0));
    }

    #[test]
    fn unknown_image_in_memory_names_the_index() {
        let det = CocoDetection {
            image_id: 5,
            category_id: 1,
            bbox: [0.0, 0.0, 1.0, 1.0],
            score: 0.5,
        };
        let e = evaluate(&gt_json(), &[det]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "detection 0: unknown image_id 5 (not an image of gt.json)"
        );
    }
}
