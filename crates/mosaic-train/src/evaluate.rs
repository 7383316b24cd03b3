//! Evaluation of a [`TaskModel`] on an encoded data set: loss, predictions and the report that fits the task.

use std::collections::BTreeMap;

use candle_core::Device;
use mosaic_data::{Collator, EncodedDataset, IGNORE_INDEX};
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::metrics::{ClassificationReport, EntityReport, Scores};
use crate::recipe::Task;
use crate::task_model::{TaskModel, TensorBatch};

/// The report of one evaluation.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Report {
    Classification(ClassificationReport),
    Entities(EntityReport),
    /// Detection: pycocotools' twelve COCO box figures.
    Detection(crate::metrics::coco_map::CocoStats),
}

impl Report {
    /// sklearn / seqeval-style text table.
    pub fn to_text(&self) -> String {
        match self {
            Report::Classification(r) => r.to_text(4),
            Report::Entities(r) => r.to_string(),
            Report::Detection(s) => s.summary_lines().join("\n"),
        }
    }
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Report::Classification(r) => r.to_json(),
            Report::Entities(r) => r.to_json(),
            Report::Detection(s) => serde_json::to_value(s).unwrap_or_default(),
        }
    }
}

/// Loss, named metrics and the report.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub loss: f64,
    /// `accuracy`, `f1_macro`, … (the names recipes use for `train.metric`), plus `loss`.
    pub metrics: BTreeMap<String, f64>,
    pub report: Report,
    /// Per example (sequence tasks): predicted class and probabilities.
    pub predictions: Vec<(usize, Vec<f32>)>,
}

/// `loss`, `accuracy` and the micro / macro / weighted F1, precision and recall of a classification report: the
/// metrics every classifying task's validation reports.
pub(crate) fn classification_metrics(
    loss: f64,
    report: &ClassificationReport,
) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    metrics.insert("loss".to_string(), loss);
    metrics.insert(
        "accuracy".into(),
        report.accuracy().unwrap_or(report.micro_avg.f1),
    );
    averages(
        &mut metrics,
        &report.micro_avg,
        &report.macro_avg,
        &report.weighted_avg,
    );
    metrics
}

fn averages(
    metrics: &mut BTreeMap<String, f64>,
    micro: &Scores,
    macro_: &Scores,
    weighted: &Scores,
) {
    for (suffix, s) in [("micro", micro), ("macro", macro_), ("weighted", weighted)] {
        metrics.insert(format!("f1_{suffix}"), s.f1);
        metrics.insert(format!("precision_{suffix}"), s.precision);
        metrics.insert(format!("recall_{suffix}"), s.recall);
    }
}

/// Evaluates `model` (switched to eval mode) on `data`, `batch_size` examples at a time.
pub fn evaluate(
    model: &TaskModel,
    data: &EncodedDataset,
    collator: &Collator,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    if data.is_empty() {
        return Err(TrainError::Invalid(
            "cannot evaluate on an empty data set".into(),
        ));
    }
    let was_training = model.bert.mode.is_training();
    model.bert.set_training(false);
    let result = run(model, data, collator, batch_size.max(1), device);
    model.bert.set_training(was_training);
    result
}

fn run(
    model: &TaskModel,
    data: &EncodedDataset,
    collator: &Collator,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    let mut loss_sum = 0.0;
    let mut counted = 0usize;
    let mut predictions = Vec::new();
    let mut y_true = Vec::new();
    let mut y_pred = Vec::new();
    let mut tag_true: Vec<Vec<String>> = Vec::new();
    let mut tag_pred: Vec<Vec<String>> = Vec::new();
    for chunk in data.examples.chunks(batch_size) {
        let batch = collator.collate(chunk)?;
        let tensors = TensorBatch::new(&batch, device)?;
        let (loss, n) = model.loss_sum(&tensors)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        counted += n;
        let rows = model.predict(&tensors)?;
        match model.task {
            Task::Classification => {
                y_true.extend(batch.labels.iter().map(|&l| l as usize));
                y_pred.extend(rows.iter().map(|(p, _)| *p));
                predictions.extend(rows);
            }
            Task::CausalLm
            | Task::ImageClassification
            | Task::ImageTextContrastive
            | Task::VisualInstruction
            | Task::MultimodalClassification
            | Task::TextToImage
            | Task::Detection => {
                return Err(not_text(model.task));
            }
            Task::TokenClassification => {
                for b in 0..batch.batch_size {
                    let (mut t_row, mut p_row) = (Vec::new(), Vec::new());
                    for t in 0..batch.seq_len {
                        let i = b * batch.seq_len + t;
                        let label = batch.labels[i];
                        if label == IGNORE_INDEX {
                            continue;
                        }
                        t_row.push(model.labels[label as usize].clone());
                        p_row.push(model.labels[rows[i].0].clone());
                    }
                    tag_true.push(t_row);
                    tag_pred.push(p_row);
                }
            }
        }
    }
    let loss = loss_sum / counted.max(1) as f64;
    let mut metrics = BTreeMap::new();
    metrics.insert("loss".to_string(), loss);
    let report = match model.task {
        Task::Classification => {
            let r = ClassificationReport::compute(&model.labels, &y_true, &y_pred)
                .map_err(|e| TrainError::Invalid(e.to_string()))?;
            metrics.insert("accuracy".into(), r.accuracy().unwrap_or(r.micro_avg.f1));
            averages(&mut metrics, &r.micro_avg, &r.macro_avg, &r.weighted_avg);
            Report::Classification(r)
        }
        Task::CausalLm
        | Task::ImageClassification
        | Task::ImageTextContrastive
        | Task::VisualInstruction
        | Task::MultimodalClassification
        | Task::TextToImage
        | Task::Detection => {
            return Err(not_text(model.task));
        }
        Task::TokenClassification => {
            let r = EntityReport::compute(&tag_true, &tag_pred)
                .map_err(|e| TrainError::Invalid(e.to_string()))?;
            let flat_true: Vec<&String> = tag_true.iter().flatten().collect();
            let flat_pred: Vec<&String> = tag_pred.iter().flatten().collect();
            let correct = flat_true
                .iter()
                .zip(&flat_pred)
                .filter(|(a, b)| a == b)
                .count();
            metrics.insert(
                "accuracy".into(),
                correct as f64 / flat_true.len().max(1) as f64,
            );
            averages(&mut metrics, &r.micro_avg, &r.macro_avg, &r.weighted_avg);
            Report::Entities(r)
        }
    };
    Ok(Evaluation {
        loss,
        metrics,
        report,
        predictions,
    })
}

/// The error for a task that has its own runner (`causal_lm`, `image_classification`, `contrastive`).
fn not_text(task: Task) -> TrainError {
    TrainError::Invalid(format!(
        "task {task:?} is not a text classifier: it has its own runner"
    ))
}
