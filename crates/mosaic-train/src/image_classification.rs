//! Image classification (`task = "image-classification"`, `method = "head"`): a ViT or a ResNet-style CNN —
//! chosen by the model folder's `config.json` `model_type` — fine-tuned from its weights (`init = "pretrained"`)
//! or trained from scratch (`init = "random"`: a seeded initialisation from `config.json`).
//!
//! Data: `data.train` (and `data.valid`, `data.test`) are image folders (`<root>/<label>/*.png|jpg`) or JSONL/CSV
//! files whose `data.image_field` (default `image`) names an image relative to the file and whose
//! `data.label_field` names its class; `data.split` carves missing splits out of the training set. The labels are
//! the model's `id2label` when it names exactly the training classes (a pretrained head keeps its order), else the
//! training classes, sorted. Every split is decoded once with the model folder's `preprocessor_config.json` and
//! kept in memory, so epochs cost no decoding (this is meant for small sets). With `[data.augment]` the training
//! images are decoded and augmented afresh each epoch, seeded by `train.seed`, the epoch and the image.
//!
//! [`run`] writes the same run folder as the text pipeline: `recipe.toml`, `metrics.jsonl` (train steps and
//! per-epoch validation metrics), `report.json` (the classification report on the test set — the validation set
//! when there is none — before training and of the best checkpoint after), `training.svg`, and `best/` and
//! `last/` checkpoints (a Hugging Face folder with `preprocessor_config.json` and a `mosaic.json` saying
//! `"task": "image-classification"`), which [`ImageCheckpoint`] loads for `mosaic eval` and `mosaic predict`.
//! Training is deterministic for a seed: batch order, initialisation and dropout all derive from `train.seed`.
//! Training runs through the one [`Trainer`]: resumable checkpoints, `--resume`, SIGINT / SIGTERM, freezing
//! ([`ImageClassifier::role`]) and accumulation work as for every task.

pub mod checkpoint;
pub mod data;
pub mod evaluate;
pub mod model;
pub mod task;

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::image::{ImageAugmentation, ImageProcessor};
use mosaic_models::ModelSource;

pub use checkpoint::{ImageCheckpoint, ImageMeta, TASK, is_image_checkpoint};
pub use data::{Fields, ImageSplits, PixelSet, load_splits, read_dataset};
pub use evaluate::evaluate;
pub use model::{ImageClassifier, config_labels};
pub use task::ImageTask;

use crate::error::{Result, TrainError};
use crate::evaluate::Evaluation;
use crate::observer::Observer;
use crate::recipe::{Init, Recipe};
use crate::run::{RunOptions, RunSummary};
use crate::run_folder::{RunFolder, eval_record};
use crate::trainer::{FitOutcome, Trainer};

/// The default `data.image_field`.
pub const DEFAULT_IMAGE_FIELD: &str = "image";

fn report_json(e: &Evaluation) -> serde_json::Value {
    serde_json::json!({ "metrics": e.metrics, "report": e.report.to_json() })
}

/// A run's model, decoded splits and preprocessing.
struct Loaded {
    model_dir: PathBuf,
    model: ImageClassifier,
    labels: Vec<String>,
    processor: ImageProcessor,
    augmentation: Option<ImageAugmentation>,
    train: PixelSet,
    valid: Option<PixelSet>,
    test: Option<PixelSet>,
    meta: ImageMeta,
    image_size: (usize, usize),
}

impl Loaded {
    /// The split the before / after figures are on: the test set, else the validation set.
    fn eval_set(&self) -> (Option<&PixelSet>, &'static str) {
        match (&self.test, &self.valid) {
            (Some(t), _) => (Some(t), "test"),
            (None, Some(v)) => (Some(v), "valid"),
            (None, None) => (None, "test"),
        }
    }
}

/// Resolves the model, reads and decodes the splits, checks the augmentation and the input size.
fn load(recipe: &Recipe, observer: &mut dyn Observer, device: &Device) -> Result<Loaded> {
    let cfg = &recipe.train;
    let source = ModelSource::parse(&recipe.model);
    observer.message(&format!("model: {}", source.spec()));
    let model_dir = source.resolve()?;
    let random = recipe.init == Init::Random;
    // Reading the labels also checks `model_type` before any image is decoded.
    let preferred = config_labels(&model_dir)?;
    let weights = model_dir.join("model.safetensors");
    if !random && !weights.exists() {
        return Err(TrainError::file(
            weights,
            "missing: `init = \"pretrained\"` needs the model's weights (set `init = \"random\"` to train from \
             config.json alone)",
        ));
    }
    let fields = Fields {
        image: recipe
            .data
            .image_field
            .clone()
            .unwrap_or_else(|| DEFAULT_IMAGE_FIELD.into()),
        label: recipe.data.label_field.clone(),
    };
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let splits = load_splits(
        train_path,
        recipe.data.valid.as_deref(),
        recipe.data.test.as_deref(),
        recipe.data.split.as_deref(),
        &preferred,
        &fields,
        cfg.seed,
    )?;
    let labels = splits.labels.clone();
    let processor = ImageProcessor::from_folder(&model_dir).map_err(data::image_error)?;
    let decode =
        |set: &mosaic_data::image::ImageDataset| PixelSet::from_dataset(set, &processor, device);
    let train = decode(&splits.train)?;
    let valid = splits.valid.as_ref().map(decode).transpose()?;
    let test = splits.test.as_ref().map(decode).transpose()?;
    let augmentation = match &recipe.data.augment {
        Some(section) => {
            if let Some(key) = section.foreign_keys(false).first() {
                return Err(TrainError::Invalid(format!(
                    "recipe key `data.augment.{key}`: a detection augmentation; image classification does not \
                     read it"
                )));
            }
            let a = section.with_seed(cfg.seed);
            a.validate()
                .map_err(|e| TrainError::Invalid(format!("recipe key `data.augment`: {e}")))?;
            if a.random_resized_crop && processor.config.output_size().is_none() {
                return Err(TrainError::Invalid(format!(
                    "recipe key `data.augment.random_resized_crop`: {} gives no fixed output size \
                     (a crop_size, or a height/width size)",
                    model_dir.join("preprocessor_config.json").display()
                )));
            }
            Some(a)
        }
        None => None,
    };
    let model = ImageClassifier::load(&model_dir, &labels, random, cfg.seed, device)?;
    let (height, width) = train.image_size();
    if let Some(side) = model.image_size()
        && (height, width) != (side, side)
    {
        return Err(TrainError::file(
            model_dir.join("preprocessor_config.json"),
            format!("gives {height}x{width} pixel values, but config.json's image_size is {side}"),
        ));
    }
    observer.message(&format!(
        "{} ({} parameters, {}), {height}x{width} inputs; labels: {}; images: {} train, {} valid, {} test",
        model.model_type(),
        model.num_parameters(),
        if random { "random init" } else { "pretrained" },
        labels.join(", "),
        train.len(),
        valid.as_ref().map_or(0, PixelSet::len),
        test.as_ref().map_or(0, PixelSet::len),
    ));

    let meta = ImageMeta {
        task: TASK.into(),
        model_type: model.model_type().into(),
        labels: labels.clone(),
        image_field: fields.image.clone(),
        label_field: fields.label.clone(),
        base_model: source.spec(),
        init: if random { "random" } else { "pretrained" }.into(),
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    Ok(Loaded {
        model_dir,
        model,
        labels,
        processor,
        augmentation,
        train,
        valid,
        test,
        meta,
        image_size: (height, width),
    })
}

/// Trains an image classifier as `recipe` says and writes its run folder; with `options.resume`, continues from
/// the last resumable checkpoint exactly.
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    let cfg = &recipe.train;
    let device = Device::Cpu;
    let resume = crate::run::resume_point(recipe, &options, observer)?;
    let loaded = load(recipe, observer, &device)?;
    let mut files = RunFolder::create(recipe, options.collective())?;
    let eval_batch = cfg.batch_size.max(1) * 2;
    // The untrained model's figures: also on resume (before the checkpoint's weights are restored).
    let before = match loaded.eval_set().0 {
        Some(set) => {
            let e = evaluate(&loaded.model, set, &loaded.labels, eval_batch)?;
            observer.report(
                if recipe.init == Init::Random {
                    "before training (random init)"
                } else {
                    "before training (untrained head)"
                },
                &e,
            );
            Some(e)
        }
        None => None,
    };
    let params = loaded.model.params();
    let mut task = ImageTask {
        model: &loaded.model,
        train: &loaded.train,
        valid: loaded.valid.as_ref(),
        labels: &loaded.labels,
        augmentation: loaded.augmentation.as_ref().map(|a| (a, &loaded.processor)),
        eval_batch,
        metric: &cfg.metric,
        meta: &loaded.meta,
        model_dir: &loaded.model_dir,
        no_decay: ImageTask::rank_one_names(&params),
        epoch_set: None,
    };
    let trainer = Trainer {
        config: cfg,
        peft: recipe.peft.as_ref(),
        stop: options.stop,
        collective: options.collective(),
    };
    let outcome = trainer.fit(&mut task, &mut files, resume, observer)?;
    finish(
        recipe, &loaded, &outcome, before, &mut files, &device, observer,
    )
}

/// Evaluates the best checkpoint on the test (else validation) set and writes `report.json` and `training.svg`.
fn finish(
    recipe: &Recipe,
    loaded: &Loaded,
    outcome: &FitOutcome,
    before: Option<Evaluation>,
    files: &mut RunFolder,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let cfg = &recipe.train;
    let eval_batch = cfg.batch_size.max(1) * 2;
    let best_dir = files.path("best");
    let (eval_set, eval_split) = loaded.eval_set();
    let after = match eval_set {
        Some(set) => {
            let best = ImageCheckpoint::open(&best_dir, device)?;
            let e = evaluate(&best.model, set, &loaded.labels, eval_batch)?;
            observer.report("trained (after, best checkpoint)", &e);
            let mut record = eval_record(&e.metrics, eval_split);
            record["final"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    let (height, width) = loaded.image_size;
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "init": loaded.meta.init,
        "model_type": loaded.meta.model_type,
        "labels": loaded.labels,
        "image_size": [height, width],
        "augment": recipe.data.augment.is_some(),
        "train_examples": loaded.train.len(),
        "valid_examples": loaded.valid.as_ref().map(PixelSet::len),
        "test_examples": loaded.test.as_ref().map(PixelSet::len),
        "evaluated_on": eval_set.map(|_| eval_split),
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "stopped_early": outcome.stopped_early,
        "interrupted": false,
        "best": outcome.best.map(|(value, step)| serde_json::json!({ "metric": cfg.metric, "value": value, "step": step })),
        "train_loss": outcome.last_train_loss,
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "peft": recipe.peft.as_ref().map(|p| p.method.as_str()),
        "before": before.as_ref().map(report_json),
        "after": after.as_ref().map(report_json),
    });
    files.finish(&report, &cfg.metric)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before,
        after,
        best_checkpoint: Some(best_dir),
    })
}

/// The classification report of the checkpoint in `dir` on `data` (an image folder or a JSONL/CSV file).
pub fn evaluate_checkpoint(
    dir: &Path,
    data: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    ImageCheckpoint::open(dir, device)?.evaluate(data, batch_size, device)
}

/// The JSONL rows of `input` with `label` and `scores` added by the checkpoint in `dir`.
pub fn predict(
    dir: &Path,
    input: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    ImageCheckpoint::open(dir, device)?.predict(input, batch_size, device)
}
