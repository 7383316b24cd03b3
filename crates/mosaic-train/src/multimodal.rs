//! Multimodal classification (`task = "multimodal-classification"`, `method = "head"`): one label per
//! image-text pair, from an image tower (`vision_model`: a CLIP folder's vision tower, a ViT or the ResNet-style
//! CNN) and a text tower (`model`: BERT / MiniLM, or a CLIP folder's text tower), joined by a fusion module (`fusion`: `concat` (default), `cross-attention` — the text tokens
//! attending to the image tokens —, `weighted-sum`, or the single-modality baselines `image-only` /
//! `text-only`) under a two-layer head. `freeze_towers` says which towers stay frozen: `true` (both, the default:
//! only the fusion and the head train), `false`, `"image"` or `"text"`.
//!
//! Data: JSONL rows `{"image": "<path relative to the file>", "text": "…", "label": …}` (columns from
//! `data.image_field`, `data.text_field`, `data.label_field`); the labels are the training file's, sorted. Every
//! image is decoded once with the image tower folder's `preprocessor_config.json`.
//!
//! [`run`] writes the usual run folder: `metrics.jsonl`, `report.json` (test — else validation — loss, accuracy
//! and classification report before training and of the best checkpoint after; for `weighted-sum` the mean
//! fusion weight of each modality), `training.svg`, and `best/` / `last/` checkpoints holding the new
//! parameters (`head.safetensors`) and a `mosaic.json` naming both tower folders by absolute path — or, when the
//! towers trained, holding them too (`vision/`, `text/`). [`load`] reads one back for `mosaic eval` / `predict`.

pub mod checkpoint;
pub mod data;
pub mod features;
pub mod model;
pub mod task;
pub mod towers;

use std::path::PathBuf;

use candle_core::Device;
use mosaic_data::Encoder;
use mosaic_data::image::ImageProcessor;
use mosaic_models::ModelSource;

pub use checkpoint::{LoadedMultimodal, is_multimodal_checkpoint, load};
pub use data::{Fields, PairBatch, PairReader, PairSet, read_labels};
pub use model::{Forward, FusionKind, MultimodalClassifier};
pub use task::{HEAD_FILE, MultimodalEvaluation, MultimodalMeta, MultimodalTask, evaluate};

use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::{FreezeTowers, Recipe};
use crate::run::{RunOptions, RunSummary};
use crate::run_folder::{RunFolder, eval_record};
use crate::trainer::Trainer;

/// What `mosaic.json` says `task` is.
pub const TASK: &str = "multimodal-classification";
/// The default `data.max_length` (capped by the text encoder's positions).
pub const DEFAULT_MAX_LENGTH: usize = 128;

fn absolute(p: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn report_json(e: &MultimodalEvaluation) -> serde_json::Value {
    serde_json::json!({
        "metrics": e.evaluation.metrics,
        "report": e.evaluation.report.to_json(),
        "fusion_weights": e.mean_weights.map(|[image, text]| serde_json::json!({ "image": image, "text": text })),
    })
}

/// Trains a multimodal classifier as `recipe` says and writes its run folder (see the module docs).
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    let cfg = &recipe.train;
    let device = Device::Cpu;
    let resume = crate::run::resume_point(recipe, &options, observer)?;
    let vision_spec = recipe.vision_model.as_ref().ok_or_else(|| {
        TrainError::Invalid("recipe key `vision_model`: no CLIP folder given".into())
    })?;
    let vision_dir = absolute(&ModelSource::parse(vision_spec).resolve()?);
    let text_dir = absolute(&ModelSource::parse(&recipe.model).resolve()?);
    let kind = FusionKind::parse(recipe.fusion.as_deref())?;
    let freeze = recipe.freeze_towers.unwrap_or(FreezeTowers::Both);
    let fields = Fields {
        image: recipe
            .data
            .image_field
            .clone()
            .unwrap_or_else(|| "image".into()),
        text: recipe.data.text_field.clone(),
        label: recipe.data.label_field.clone(),
    };
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let labels = read_labels(train_path, &fields)?;
    let model = MultimodalClassifier::load(
        &vision_dir,
        &text_dir,
        kind,
        labels.len(),
        freeze,
        cfg.seed,
        &device,
    )?;
    let processor = ImageProcessor::from_folder(&vision_dir)
        .map_err(crate::image_classification::data::image_error)?;
    let encoder = Encoder::from_file(text_dir.join("tokenizer.json"))?;
    let positions = model.text.max_positions();
    let max_length = recipe
        .data
        .max_length
        .unwrap_or(DEFAULT_MAX_LENGTH)
        .min(positions);
    let reader = PairReader {
        fields: &fields,
        labels: &labels,
        processor: &processor,
        encoder: &encoder,
        max_length,
        needs_labels: true,
    };
    let eval_batch = cfg.batch_size.max(1) * 2;
    let load = |path: &std::path::Path| -> Result<PairSet> {
        let mut set = reader.load(path, &device)?;
        model.cache_features(&mut set, eval_batch)?;
        Ok(set)
    };
    let train = load(train_path)?;
    let valid = recipe.data.valid.as_deref().map(load).transpose()?;
    let test = recipe.data.test.as_deref().map(load).transpose()?;
    observer.message(&format!(
        "multimodal: vision tower of {}, text encoder {}, fusion {}{}; labels: {}; pairs: {} train, {} valid, {} test",
        vision_dir.display(),
        text_dir.display(),
        kind.as_str(),
        match freeze {
            FreezeTowers::Both => " (towers frozen)",
            FreezeTowers::Image => " (image tower frozen, text tower trains)",
            FreezeTowers::Text => " (text tower frozen, image tower trains)",
            FreezeTowers::Neither => " (both towers train)",
        },
        labels.join(", "),
        train.len(),
        valid.as_ref().map_or(0, PairSet::len),
        test.as_ref().map_or(0, PairSet::len),
    ));
    let meta = MultimodalMeta {
        task: TASK.into(),
        fusion: kind.as_str().into(),
        labels: labels.clone(),
        vision_model: vision_dir.display().to_string(),
        text_model: text_dir.display().to_string(),
        fields: fields.clone(),
        max_length,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let mut files = RunFolder::create(recipe, options.collective())?;
    let (eval_set, eval_split) = match (&test, &valid) {
        (Some(t), _) => (Some(t), "test"),
        (None, Some(v)) => (Some(v), "valid"),
        (None, None) => (None, "test"),
    };
    let before = match eval_set {
        Some(set) => {
            let e = evaluate(&model, set, &labels, eval_batch)?;
            observer.report("before training (untrained fusion and head)", &e.evaluation);
            Some(e)
        }
        None => None,
    };
    let mut task = MultimodalTask {
        model: &model,
        train: &train,
        valid: valid.as_ref(),
        labels: &labels,
        eval_batch,
        metric: &cfg.metric,
        meta: &meta,
    };
    let trainer = Trainer {
        config: cfg,
        peft: recipe.peft.as_ref(),
        stop: options.stop,
        collective: options.collective(),
    };
    let outcome = trainer.fit(&mut task, &mut files, resume, observer)?;

    let best_dir = files.path("best");
    let after = match eval_set {
        Some(set) => {
            let e = if !model.towers_train() {
                // The towers did not change: the best checkpoint is its head on them (and the set's cached
                // features stay valid).
                model.load_head(&best_dir.join(HEAD_FILE))?;
                evaluate(&model, set, &labels, eval_batch)?
            } else {
                // The towers trained: the best checkpoint holds its own, loaded as `mosaic eval` would.
                let loaded = checkpoint::load(&best_dir, &device)?;
                evaluate(&loaded.model, set, &labels, eval_batch)?
            };
            observer.report("trained (after, best checkpoint)", &e.evaluation);
            let mut record = eval_record(&e.evaluation.metrics, eval_split);
            record["final"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "vision_model": recipe.vision_model,
        "task": recipe.task,
        "method": recipe.method,
        "fusion": kind.as_str(),
        "freeze_towers": freeze,
        "labels": labels,
        "train_examples": train.len(),
        "valid_examples": valid.as_ref().map(PairSet::len),
        "test_examples": test.as_ref().map(PairSet::len),
        "evaluated_on": eval_set.map(|_| eval_split),
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "stopped_early": outcome.stopped_early,
        "best": outcome.best.map(|(value, step)| serde_json::json!({ "metric": cfg.metric, "value": value, "step": step })),
        "train_loss": outcome.last_train_loss,
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "before": before.as_ref().map(report_json),
        "after": after.as_ref().map(report_json),
    });
    files.finish(&report, &cfg.metric)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: before.map(|e| e.evaluation),
        after: after.map(|e| e.evaluation),
        best_checkpoint: Some(best_dir),
    })
}
