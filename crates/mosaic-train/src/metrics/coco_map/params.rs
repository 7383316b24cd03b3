//! What the evaluation and the accumulation share: pycocotools' `maxDets` and `areaRng`, and `evaluateImg`'s
//! record of one image, category and area range.

/// The detections kept per image and category, and the `maxDets` of the recall figures (pycocotools' default).
pub const MAX_DETS: [usize; 3] = [1, 10, 100];

/// COCO's object size ranges: name, lower and upper bound of the area, both inclusive (pycocotools' `areaRng`).
pub const AREA_RANGES: [(&str, f64, f64); 4] = [
    ("all", 0.0, 1e10),
    ("small", 0.0, 1024.0),
    ("medium", 1024.0, 9216.0),
    ("large", 9216.0, 1e10),
];

/// `evaluateImg`'s output for one image, category and area range.
pub(super) struct EvalImg {
    /// The scores of the (at most 100) detections, best first.
    pub scores: Vec<f64>,
    /// `[threshold][detection]`: the id of the matched ground truth, 0 when unmatched.
    pub matches: Vec<Vec<i64>>,
    /// `[threshold][detection]`: the detection is ignored (matched to an ignored box, or unmatched and out of range).
    pub dt_ignore: Vec<Vec<bool>>,
    /// Per ground-truth box: ignored (crowd, or out of the area range).
    pub gt_ignore: Vec<bool>,
}
