//! The metrics `train.metric` may name, and each task's default.

use super::choices::Task;

/// Metric names `train.metric` accepts. For token classification the
/// F1/precision/recall are entity-level (seqeval) and `accuracy` is
/// token accuracy.
pub const METRICS: &[&str] = &[
    "loss",
    "accuracy",
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "precision_micro",
    "precision_macro",
    "precision_weighted",
    "recall_micro",
    "recall_macro",
    "recall_weighted",
    "recall_at_1",
    "recall_at_5",
    // Detection: COCO's box mAP@[.5:.95], mAP@.5, mAP@.75 and by object size, and the average recalls
    // (pycocotools' twelve `stats`, in its order).
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

/// The default `train.metric` for a task: `f1_macro` for classification,
/// `f1_micro` (seqeval's headline entity F1) for token classification.
pub fn default_metric(task: Task) -> &'static str {
    match task {
        Task::Classification => "f1_macro",
        Task::TokenClassification => "f1_micro",
        Task::CausalLm => "loss",
        // Mean of image→text and text→image recall@1 (CoOp recipes default to `accuracy` instead).
        Task::ImageTextContrastive => "recall_at_1",
        Task::ImageClassification => "f1_macro",
        Task::VisualInstruction => "loss",
        Task::MultimodalClassification => "accuracy",
        Task::TextToImage => "loss",
        // COCO's headline figure, mAP@[.5:.95].
        Task::Detection => "map",
    }
}
