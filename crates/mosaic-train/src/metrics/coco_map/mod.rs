//! COCO detection mAP for boxes, as pycocotools' `COCOeval(gt, dt, iouType="bbox")` computes it.
//!
//! [`evaluate`] runs `evaluate()`, `accumulate()` and `summarize()` on a ground-truth [`CocoDataset`] and a list of
//! [`CocoDetection`]s (read from a COCO results file with [`load_results`], or made in memory) and returns the
//! [`CocoEvaluation`]: the precision and recall arrays and pycocotools' twelve [`CocoStats`].
//!
//! What is reproduced (pycocotools 2.0.x): IoU thresholds `.50:.05:.95` and recall thresholds `0:.01:1` computed
//! as `np.linspace` computes them; at most 100 detections an image and category (ranked by score with a stable
//! sort, as `np.argsort(-score, kind="mergesort")`); greedy matching per IoU threshold in score order, each
//! detection taking the unmatched ground truth of highest IoU, non-ignored ground truth before ignored; crowd
//! regions (`iscrowd`) are ignored, scored by intersection over the detection's area, and may match any number of
//! detections; size ranges all / small / medium / large (`0–32²`, `32²–96²`, `96²–1e5²`, bounds inclusive) on the
//! ground truth's `area` field and on `w · h` for detections (as `loadRes` sets it); unmatched detections outside
//! the range are ignored; 101-point interpolated precision over the monotone envelope with `searchsorted(...,
//! "left")`; `-1` for every figure with nothing to average. One quirk kept on purpose: pycocotools records a match
//! by the ground truth's id, so a detection matched to an annotation with id 0 counts as unmatched.
//!
//! Where this is stricter than pycocotools: a detection of a category the ground truth does not have is an error
//! (pycocotools drops it silently), as are non-finite numbers and negative box sizes. An empty results list is
//! scored (every figure with ground truth is 0) where pycocotools' `loadRes` fails on it.

mod accumulate;
mod evaluate;
mod params;
mod results;
mod stats;

pub use evaluate::{CocoEvaluation, evaluate, iou_thresholds, recall_thresholds};
pub use params::{AREA_RANGES, MAX_DETS};
pub use results::{CocoDetection, load_results, parse_results};
pub use stats::CocoStats;

#[doc(no_inline)]
pub use mosaic_data::CocoDataset;
