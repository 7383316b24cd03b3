//! Object detection, DETR-style (`task = "detection"`): the Hungarian matcher that pairs object queries with
//! ground-truth boxes and the set loss over the matched pairs, both as transformers computes them, and the task
//! that trains a `DetrForObjectDetection` with them.
//!
//! **Model.** `model` is a DETR folder (`model_type = "detr"`, an HF ResNet backbone), fine-tuned from its
//! weights (`init = "pretrained"`), or only its `config.json` for a seeded random initialisation
//! (`init = "random"`). The labels are the training file's categories (sorted by id); when they differ from the
//! folder's `id2label`, a fresh `class_labels_classifier` is initialised. The loss coefficients and matching costs
//! are the config's (`eos_coefficient`, `bbox_loss_coefficient`, `giou_loss_coefficient`, `class_cost`, …).
//! A pretrained backbone keeps DETR's frozen stem and first stage; a random one trains whole. `train.freeze`:
//! `"embeddings"` freezes the whole backbone, `"all-but-head"` trains the class and box heads only,
//! `"all-but-top-N"` the heads, the decoder's final norm and the top N encoder and decoder layers.
//!
//! **Data.** `data.train`, `data.valid`, `data.test` are COCO detection JSON files, images relative to each file
//! ([`data`]). Images are preprocessed once by the DETR processor: the model folder's `preprocessor_config.json`,
//! else the one next to `data.train` (the data set's); batches are padded with a pixel mask.
//!
//! **Run folder.** As every task: `recipe.toml`, `metrics.jsonl` (each step's `loss` and its `loss_ce`,
//! `loss_bbox`, `loss_giou` terms; each validation's twelve COCO figures `map`, `map50`, … and `loss`),
//! `training.svg`, `best/` and `last/` (an HF DETR folder with `preprocessor_config.json` and a `mosaic.json`
//! mapping labels to category ids, [`DetectionCheckpoint`]); `report.json` with COCO mAP on the test split (else
//! the validation split) before and after training; and `detections.png`, test images with the best
//! checkpoint's boxes drawn in class colours ([`draw`]).

pub mod checkpoint;
pub mod data;
pub mod draw;
pub mod evaluate;
pub mod matcher;
pub mod set_loss;
pub mod task;

pub use checkpoint::{
    DetectionCheckpoint, DetectionMeta, PROCESSOR_FILE, TASK, is_detection_checkpoint,
    is_detr_folder,
};
pub use data::{DetectionSet, DetrInputs};
pub use evaluate::{METRIC_NAMES, stats_metrics};
pub use matcher::{DetectionTarget, HungarianMatcher, Match, linear_sum_assignment};
pub use set_loss::{DetrLoss, DetrLossConfig, DetrLossOutput};
pub use task::DetectionTask;

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::image::{DetrAugmentation, DetrImageProcessor, DetrProcessorConfig};
use mosaic_models::ModelSource;
use mosaic_models::detr::{BackboneNorms, Detr, DetrConfig};

use crate::error::{Result, TrainError};
use crate::evaluate::Evaluation;
use crate::observer::Observer;
use crate::recipe::{Init, Recipe};
use crate::run::{RunOptions, RunSummary};
use crate::run_folder::{RunFolder, eval_record};
use crate::trainer::{FitOutcome, Trainer};

/// Images drawn into `detections.png`.
pub const DRAWN_IMAGES: usize = 16;
/// The score a box needs to be drawn (transformers' default post-processing threshold).
pub const DRAW_THRESHOLD: f32 = 0.5;

/// The set loss's settings from a DETR's config: its labels, coefficients and matching costs.
pub fn loss_config(model: &Detr) -> Result<DetrLossConfig> {
    let c = &model.config;
    Ok(DetrLossConfig {
        num_labels: c.labels.len(),
        eos_coefficient: c.eos_coefficient,
        bbox_loss_coefficient: c.bbox_loss_coefficient,
        giou_loss_coefficient: c.giou_loss_coefficient,
        matcher: HungarianMatcher::new(c.class_cost, c.bbox_cost, c.giou_cost)?,
    })
}

/// A run's model, loss, processor and decoded splits.
struct Loaded {
    model: Detr,
    loss: DetrLoss,
    processor: DetrImageProcessor,
    processor_file: PathBuf,
    train: DetectionSet,
    valid: Option<DetectionSet>,
    test: Option<DetectionSet>,
    /// `[data.augment]`: flips / crops / multi-scale resizes of the training images, boxes moved with them.
    augmentation: Option<DetrAugmentation>,
    meta: DetectionMeta,
}

impl Loaded {
    /// The split the before / after figures and the drawing are on: the test split, else the validation split.
    fn eval_set(&self) -> Option<(&DetectionSet, &'static str)> {
        match (&self.test, &self.valid) {
            (Some(t), _) => Some((t, "test")),
            (None, Some(v)) => Some((v, "valid")),
            (None, None) => None,
        }
    }
}

/// The processor settings: the model folder's, else the data set's (next to `data.train`).
fn processor_file(model_dir: &Path, train: &Path) -> Result<PathBuf> {
    let candidates = [
        model_dir.join(PROCESSOR_FILE),
        train
            .parent()
            .unwrap_or(Path::new("."))
            .join(PROCESSOR_FILE),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            TrainError::file(
                &candidates[0],
                format!(
                    "missing, and so is {}: detection needs a DetrImageProcessor preprocessor_config.json in the \
                     model folder or beside data.train",
                    candidates[1].display()
                ),
            )
        })
}

/// Resolves the model, reads and decodes the splits, builds the model and its loss.
fn load(recipe: &Recipe, observer: &mut dyn Observer, device: &Device) -> Result<Loaded> {
    let cfg = &recipe.train;
    let source = ModelSource::parse(&recipe.model);
    observer.message(&format!("model: {}", source.spec()));
    let model_dir = source.resolve()?;
    if !is_detr_folder(&model_dir) {
        return Err(TrainError::file(
            model_dir.join("config.json"),
            "missing or not a DETR: task \"detection\" needs a model_type \"detr\" config.json",
        ));
    }
    let random = recipe.init == Init::Random;
    let weights = model_dir.join("model.safetensors");
    if !random && !weights.exists() {
        return Err(TrainError::file(
            weights,
            "missing: `init = \"pretrained\"` needs the model's weights (set `init = \"random\"` to train from \
             config.json alone)",
        ));
    }
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let processor_file = processor_file(&model_dir, train_path)?;
    let processor = DetrImageProcessor::new(
        DetrProcessorConfig::read(&processor_file).map_err(data::image_error)?,
    );
    let augmentation = match &recipe.data.augment {
        Some(section) => {
            if let Some(key) = section.foreign_keys(true).first() {
                return Err(TrainError::Invalid(format!(
                    "recipe key `data.augment.{key}`: an image-classification augmentation; detection reads \
                     hflip_prob, crop_prob, crop_scale, scales and max_size"
                )));
            }
            let a = section.detection_with_seed(cfg.seed);
            a.validate()
                .map_err(|e| TrainError::Invalid(format!("recipe key `data.augment`: {e}")))?;
            Some(a)
        }
        None => None,
    };
    let train = DetectionSet::load(train_path, &processor, None)?;
    let categories = data::category_list(&train.coco);
    let other = |path: &Option<PathBuf>| {
        path.as_deref()
            .map(|p| DetectionSet::load(p, &processor, Some(&categories)))
            .transpose()
    };
    let valid = other(&recipe.data.valid)?;
    let test = other(&recipe.data.test)?;
    let labels = train.labels();
    let model = if random {
        let mut config = DetrConfig::read(&model_dir.join("config.json"))?;
        config.labels = labels.clone();
        // From scratch the whole backbone trains, its batch norms too: DETR's frozen norms and frozen stem are
        // for pretrained features (frozen at identity the norms would leave an unnormalised convnet).
        let model = Detr::new_with(config, BackboneNorms::Trainable, cfg.seed, device)?;
        for (_, var) in model.params.all() {
            mosaic_models::grad_mode::set_frozen(&var, false);
        }
        model
    } else {
        Detr::from_folder(&model_dir, Some(&labels), cfg.seed, device)?
    };
    let loss = DetrLoss::new(loss_config(&model)?)?;
    let count =
        |s: &Option<DetectionSet>| s.as_ref().map_or((0, 0), |s| (s.len(), s.num_objects()));
    let ((vn, vo), (tn, to)) = (count(&valid), count(&test));
    observer.message(&format!(
        "detr ({} parameters, {}, {} queries, d_model {}), processor {}; labels: {}; images (objects): {} ({}) \
         train, {vn} ({vo}) valid, {tn} ({to}) test",
        model.params.all().iter().map(|(_, v)| v.as_tensor().elem_count()).sum::<usize>(),
        if random { "random init" } else { "pretrained" },
        model.config.num_queries,
        model.config.d_model,
        processor_file.display(),
        labels.join(", "),
        train.len(),
        train.num_objects(),
    ));
    let meta = DetectionMeta {
        task: TASK.into(),
        model_type: "detr".into(),
        labels,
        category_ids: categories.iter().map(|(id, _)| *id).collect(),
        base_model: source.spec(),
        init: if random { "random" } else { "pretrained" }.into(),
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    Ok(Loaded {
        model,
        loss,
        processor,
        processor_file,
        train,
        valid,
        test,
        augmentation,
        meta,
    })
}

/// Trains a DETR as `recipe` says and writes its run folder; with `options.resume`, continues from the last
/// resumable checkpoint exactly.
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
    let before = match loaded.eval_set() {
        Some((set, _)) => {
            let e = evaluate::evaluate(
                &loaded.model,
                &loaded.processor,
                set,
                &loaded.loss,
                eval_batch,
                &device,
            )?;
            observer.report(
                if recipe.init == Init::Random {
                    "before training (random init)"
                } else {
                    "before training"
                },
                &e,
            );
            Some(e)
        }
        None => None,
    };
    let no_decay = loaded
        .model
        .params
        .all()
        .into_iter()
        .filter(|(_, v)| v.as_tensor().rank() <= 1)
        .map(|(n, _)| n)
        .collect();
    let mut task = DetectionTask {
        model: &loaded.model,
        loss: &loaded.loss,
        processor: &loaded.processor,
        train: &loaded.train,
        valid: loaded.valid.as_ref(),
        augmentation: loaded.augmentation.as_ref(),
        eval_batch,
        metric: &cfg.metric,
        meta: &loaded.meta,
        processor_file: &loaded.processor_file,
        default_frozen: recipe.init != Init::Random,
        device: &device,
        epoch: 0,
        no_decay,
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

/// Evaluates the best checkpoint on the test (else validation) split, draws `detections.png` and writes
/// `report.json` and `training.svg`.
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
    let best = DetectionCheckpoint::open(&best_dir, device)?;
    let mut drawing = serde_json::Value::Null;
    let after = match loaded.eval_set() {
        Some((set, split)) => {
            let e = evaluate::evaluate(
                &best.model,
                &best.processor,
                set,
                &loaded.loss,
                eval_batch,
                device,
            )?;
            observer.report("trained (after, best checkpoint)", &e);
            let mut record = eval_record(&e.metrics, split);
            record["final"] = true.into();
            files.log(record)?;
            let n = set.len().min(DRAWN_IMAGES);
            let images: Vec<_> = set.images.iter().take(n).collect();
            let detections = best.detect(&set.images[..n], DRAW_THRESHOLD, eval_batch, device)?;
            let png = files.path("detections.png");
            if files.writes() {
                draw::draw_detections(&images, &detections, &png)?;
            }
            drawing = serde_json::json!({
                "file": "detections.png",
                "split": split,
                "images": n,
                "threshold": DRAW_THRESHOLD,
                "colours": loaded.meta.labels.iter().enumerate()
                    .map(|(i, l)| (l.clone(), draw::colour_hex(i).into()))
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
            });
            Some(e)
        }
        None => None,
    };
    let split_json = |s: &Option<DetectionSet>| {
        s.as_ref()
            .map(|s| serde_json::json!({ "images": s.len(), "objects": s.num_objects() }))
    };
    let stats =
        |e: &Evaluation| serde_json::json!({ "metrics": e.metrics, "coco": e.report.to_json() });
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "init": loaded.meta.init,
        "model_type": "detr",
        "labels": loaded.meta.labels,
        "category_ids": loaded.meta.category_ids,
        "num_queries": loaded.model.config.num_queries,
        "train": { "images": loaded.train.len(), "objects": loaded.train.num_objects() },
        "valid": split_json(&loaded.valid),
        "test": split_json(&loaded.test),
        "evaluated_on": loaded.eval_set().map(|(_, split)| split),
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "stopped_early": outcome.stopped_early,
        "interrupted": false,
        "best": outcome.best.map(|(value, step)| serde_json::json!({ "metric": cfg.metric, "value": value, "step": step })),
        "train_loss": outcome.last_train_loss,
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "before": before.as_ref().map(stats),
        "after": after.as_ref().map(stats),
        "detections_png": drawing,
    });
    files.finish(&report, &cfg.metric)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before,
        after,
        best_checkpoint: Some(best_dir),
    })
}

/// COCO mAP of the checkpoint in `dir` on a COCO ground-truth file.
pub fn evaluate_checkpoint(
    dir: &Path,
    data: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    DetectionCheckpoint::open(dir, device)?.evaluate(data, batch_size, device)
}
