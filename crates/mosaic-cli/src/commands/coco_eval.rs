//! COCO box mAP for `mosaic eval --data GT.json --predictions RESULTS.json [--json]`: pycocotools' twelve figures
//! of a COCO results file against a COCO ground truth. The scoring takes in-memory detections too
//! ([`score`]), so that evaluating a detection checkpoint can print the same report.

use std::path::Path;

use anyhow::Result;
use mosaic_data::CocoDataset;
use mosaic_train::metrics::coco_map::{self, CocoDetection, CocoEvaluation, CocoStats};

/// Reads the ground truth, for [`score`].
pub fn load_ground_truth(gt: &Path) -> Result<CocoDataset> {
    Ok(CocoDataset::load(gt)?)
}

/// Scores detections (category ids as in the ground truth, boxes `[x, y, w, h]` in pixels) against it.
pub fn score(gt: &CocoDataset, detections: &[CocoDetection]) -> Result<CocoEvaluation> {
    Ok(coco_map::evaluate(gt, detections)?)
}

/// Scores a COCO results file against a COCO ground-truth file.
pub fn score_file(gt: &Path, results: &Path) -> Result<CocoEvaluation> {
    let gt = load_ground_truth(gt)?;
    let detections = coco_map::load_results(results, &gt)?;
    score(&gt, &detections)
}

/// Prints the twelve figures: pycocotools' `summarize()` lines, or one JSON object `{"AP": ..., ..., "ARl": ...}`.
pub fn print_stats(stats: &CocoStats, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(stats)?);
    } else {
        for line in stats.summary_lines() {
            println!("{line}");
        }
    }
    Ok(())
}

/// `mosaic eval --data GT.json --predictions RESULTS.json [--json]`.
pub fn run(gt: &Path, results: &Path, json: bool) -> Result<()> {
    let evaluation = score_file(gt, results)?;
    print_stats(evaluation.stats(), json)
}
