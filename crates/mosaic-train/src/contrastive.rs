//! `task = "image-text-contrastive"`: adapting CLIP to image-text data.
//!
//! - `method = "contrastive"` ([`fine_tune`]): both towers and `logit_scale` train on symmetric InfoNCE over
//!   each batch of image-caption pairs (every other caption / image of the batch is a negative);
//!   `logit_scale` is clamped at `ln(100)` after each optimizer step. Each epoch is evaluated on the validation
//!   pairs: loss and recall@1/5 image → text and text → image (`recall_at_1`, their mean, is the default
//!   `train.metric`).
//! - `method = "coop"` ([`prompt_tuning`]): CoOp. Both towers are frozen; only `prompt.context_tokens`
//!   (default 4) context vectors in front of each class name train, on the cross-entropy of the class logits
//!   (`logit_scale` fixed). The class names are the data's labels (`data.label_field`). Reported: zero-shot
//!   accuracy with the hand-written `prompt.template` (default `"a photo of a {}."`) before, CoOp's after.
//!
//! Data: JSONL/CSV records with an image path relative to the file (`data.image_field`, default `image`) and a
//! caption (`data.caption_field`, default `caption`) or a label (`data.label_field`). Before / after figures are
//! on `data.test` when given, else on `data.valid`. The run folder holds `recipe.toml`, `metrics.jsonl`,
//! `report.json`, `training.svg` and `best/` and `last/` checkpoints ([`checkpoint`]), which
//! [`evaluate_checkpoint`] (`mosaic eval`) reads back.

pub mod checkpoint;
pub mod coop;
pub mod data;
pub mod fine_tune;
pub mod info_nce;
pub mod prompt_tuning;

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::image::ImageProcessor;
use mosaic_models::{Clip, ModelSource};

pub use checkpoint::{
    CONTEXT_FILE, CheckpointEvaluation, ClipMeta, evaluate_checkpoint, is_contrastive_checkpoint,
};
use data::CaptionTokenizer;
pub use data::Fields;
pub use info_nce::{PairEvaluation, info_nce};

use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::optim::default_no_decay;
use crate::recipe::{Method, Recipe};
use crate::run::{RunOptions, RunSummary};
use crate::run_folder::RunFolder;
use crate::trainer::{FitOutcome, Trainer};

/// The `train.metric` values method "contrastive" measures (recall is the mean of both directions).
pub const CONTRASTIVE_METRICS: &[&str] = &["recall_at_1", "recall_at_5", "loss"];

/// The `train.metric` values method "coop" measures.
pub const COOP_METRICS: &[&str] = &[
    "accuracy",
    "loss",
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "precision_micro",
    "precision_macro",
    "precision_weighted",
    "recall_micro",
    "recall_macro",
    "recall_weighted",
];

/// Trains `recipe` and writes its run folder.
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    let t = &recipe.train;
    let (measured, method): (&[&str], &str) = match recipe.method {
        Method::Coop => (COOP_METRICS, "coop"),
        _ => (CONTRASTIVE_METRICS, "contrastive"),
    };
    if !measured.contains(&t.metric.as_str()) {
        return Err(TrainError::Invalid(format!(
            "recipe key `train.metric`: `{}` is not measured by method \"{method}\" (use one of {})",
            t.metric,
            measured.join(", ")
        )));
    }
    let device = Device::Cpu;
    let resume = crate::run::resume_point(recipe, &options, observer)?;
    let base = BaseModel::load(recipe, observer, &device)?;
    let trainer = Trainer {
        config: t,
        peft: recipe.peft.as_ref(),
        stop: options.stop,
        collective: options.collective(),
    };
    match recipe.method {
        Method::Coop => prompt_tuning::run(recipe, &base, &device, &trainer, resume, observer),
        _ => fine_tune::run(recipe, &base, &device, &trainer, resume, observer),
    }
}

/// The recipe's data fields.
pub fn fields(recipe: &Recipe) -> Fields {
    let d = &recipe.data;
    Fields {
        image_field: d.image_field.clone().unwrap_or_else(|| "image".into()),
        caption_field: d.caption_field.clone().unwrap_or_else(|| "caption".into()),
        label_field: d.label_field.clone(),
    }
}

/// The model a run starts from: its folder, the CLIP model (seeded with `train.seed`), its caption tokenizer and
/// image preprocessing.
pub struct BaseModel {
    pub dir: PathBuf,
    pub clip: Clip,
    pub tokenizer: CaptionTokenizer,
    pub processor: ImageProcessor,
}

impl BaseModel {
    /// Resolves `recipe.model` (saying which, in a message) and loads it.
    pub fn load(recipe: &Recipe, observer: &mut dyn Observer, device: &Device) -> Result<Self> {
        let source = ModelSource::parse(&recipe.model);
        observer.message(&format!("model: {}", source.spec()));
        let dir = source.resolve()?;
        let clip = Clip::from_folder(&dir, recipe.train.seed, device)?;
        let tokenizer = CaptionTokenizer::load(&dir, &clip)?;
        let processor =
            ImageProcessor::from_folder(&dir).map_err(|e| TrainError::Invalid(e.to_string()))?;
        Ok(BaseModel {
            dir,
            clip,
            tokenizer,
            processor,
        })
    }
}

/// The recipe's `data.train` (an error naming the key when it is missing).
pub fn train_path(recipe: &Recipe) -> Result<&Path> {
    recipe
        .data
        .train
        .as_deref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))
}

/// Whether a parameter is excluded from weight decay: biases and norms (as the HF `Trainer`), and
/// `logit_scale` and the vision class embedding (as CLIP training code does: decaying a temperature or a single
/// token vector toward zero has no regularising meaning).
pub fn no_decay(name: &str) -> bool {
    default_no_decay(name) || name == "logit_scale" || name.ends_with("class_embedding")
}

/// Writes `report.json` — `method_report`'s fields plus what every run reports (recipe name, model, task,
/// method, steps, training loss, the selection metric and its best validation value) — and `training.svg`.
pub fn finish_report(
    recipe: &Recipe,
    outcome: &FitOutcome,
    method_report: serde_json::Value,
    files: &RunFolder,
) -> Result<()> {
    let metric = &recipe.train.metric;
    let mut report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "steps": outcome.steps,
        "train_loss": outcome.last_train_loss,
        "metric": metric,
        "best_valid": outcome.best.map(|(value, _)| value),
    });
    if let serde_json::Value::Object(fields) = method_report {
        for (key, value) in fields {
            report[key] = value;
        }
    }
    files.finish(&report, metric)
}
