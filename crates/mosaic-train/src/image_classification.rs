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
//! Resuming (`--resume`) is not supported yet; an interrupt (the CLI's SIGINT / SIGTERM flag) ends training after
//! the current step and still writes the checkpoints and the report.

pub mod checkpoint;
pub mod data;
pub mod evaluate;
pub mod model;

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Var};
use mosaic_data::BatchSampler;
use mosaic_data::image::ImageProcessor;
use mosaic_models::ModelSource;

pub use checkpoint::{ImageCheckpoint, ImageMeta, TASK, is_image_checkpoint};
pub use data::{Fields, ImageSplits, PixelSet, load_splits, read_dataset};
pub use evaluate::evaluate;
pub use model::{ImageClassifier, config_labels};

use crate::clip::{GradAccumulator, Reduction, clip_grad_norm, grad_norm};
use crate::early_stopping::{Decision, EarlyStopping};
use crate::error::{Result, TrainError};
use crate::evaluate::Evaluation;
use crate::observer::{Observer, StepLog};
use crate::pipeline::{RunOptions, RunSummary};
use crate::recipe::{Freeze, Init, NonFinite, Recipe};
use crate::recipe_optimizer::recipe_optimizer;
use crate::run_folder::{RunFolder, eval_record};
use crate::schedule::LrSchedule;

/// The default `data.image_field`.
pub const DEFAULT_IMAGE_FIELD: &str = "image";

fn report_json(e: &Evaluation) -> serde_json::Value {
    serde_json::json!({ "metrics": e.metrics, "report": e.report.to_json() })
}

/// Biases and norm weights (every parameter of rank ≤ 1) get no weight decay — HF's name rule misses ResNet's
/// `normalization.weight`, so the rule here is the shape.
fn no_decay_names(params: &[(String, Var)]) -> std::collections::HashSet<String> {
    params
        .iter()
        .filter(|(_, v)| v.as_tensor().rank() <= 1)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Refuses recipe keys this task does not implement, naming them.
fn check_supported(recipe: &Recipe, options: &RunOptions<'_>) -> Result<()> {
    if options.resume {
        return Err(TrainError::Invalid(
            "--resume is not supported for image-classification recipes yet".into(),
        ));
    }
    if recipe.train.freeze != Freeze::None {
        return Err(TrainError::Invalid(
            "recipe key `train.freeze`: freezing is not supported for image-classification recipes yet"
                .into(),
        ));
    }
    if recipe.train.fgm_epsilon.is_some() {
        return Err(TrainError::Invalid(
            "recipe key `train.fgm_epsilon`: FGM perturbs word embeddings; image models have none"
                .into(),
        ));
    }
    Ok(())
}

/// Gradients of `Σ losses / Σ images` over the micro-batches of one accumulation window, and that loss (`None`
/// when the loss is not finite).
fn window_gradients(
    model: &ImageClassifier,
    train: &PixelSet,
    window: &[&[usize]],
    params: &[(String, Var)],
) -> Result<(Option<GradStore>, f64)> {
    let total: usize = window.iter().map(|b| b.len()).sum();
    let mut accumulator = GradAccumulator::new(params.iter().map(|(_, v)| v.clone()));
    let mut window_loss = 0.0;
    for indices in window {
        let (pixels, labels) = train.batch(indices)?;
        let logits = model.logits(&pixels)?;
        let (sum, _) = mosaic_kernels::cross_entropy_sum(&logits, &labels, 0.0)?;
        // Each micro-batch is divided by the window's total, so the parts add up to the big batch's mean.
        let loss = sum.affine(1.0 / total.max(1) as f64, 0.0)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Ok((None, value));
        }
        window_loss += value;
        accumulator.add(&loss.backward()?)?;
    }
    Ok((Some(accumulator.take(Reduction::Sum)?), window_loss))
}

/// Trains an image classifier as `recipe` says and writes its run folder.
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    check_supported(recipe, &options)?;
    let cfg = &recipe.train;
    let device = Device::Cpu;
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
        |set: &mosaic_data::image::ImageDataset| PixelSet::from_dataset(set, &processor, &device);
    let train = decode(&splits.train)?;
    let valid = splits.valid.as_ref().map(decode).transpose()?;
    let test = splits.test.as_ref().map(decode).transpose()?;
    let augmentation = match &recipe.data.augment {
        Some(section) => {
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
    let model = ImageClassifier::load(&model_dir, &labels, random, cfg.seed, &device)?;
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

    let mut files = RunFolder::create(recipe)?;
    let output = files.output.clone();
    let eval_batch = cfg.batch_size.max(1) * 2;
    let (eval_set, eval_split) = match (&test, &valid) {
        (Some(t), _) => (Some(t), "test"),
        (None, Some(v)) => (Some(v), "valid"),
        (None, None) => (None, "test"),
    };
    let before = match eval_set {
        Some(set) => {
            let e = evaluate(&model, set, &labels, eval_batch)?;
            observer.report(
                if random {
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
    let mut meta = ImageMeta {
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

    let params = model.params();
    let no_decay = no_decay_names(&params);
    let mut optimizer = recipe_optimizer(params.clone(), cfg, |name| no_decay.contains(name))?;
    let sampler = BatchSampler::new(train.len(), cfg.batch_size, cfg.seed)?;
    let accum = cfg.grad_accum.max(1);
    let total_steps = sampler.batches_per_epoch().div_ceil(accum) * cfg.epochs;
    let schedule = LrSchedule::new(cfg.schedule, cfg.lr, cfg.warmup, total_steps);
    let mut stopping =
        EarlyStopping::new(cfg.metric.clone(), cfg.mode, cfg.patience, cfg.min_delta);
    let best_dir = output.join("best");
    let mut best: Option<(f64, usize)> = None;
    let mut stopped_early = false;
    let mut interrupted = false;
    let mut last_train_loss = f64::NAN;
    let mut epochs_run = 0;
    model.set_seed(cfg.seed);
    model.set_training(true);
    observer.train_start(total_steps);
    let mut step = 0;
    'epochs: for epoch in 0..cfg.epochs {
        let augmented = match &augmentation {
            Some(a) => Some(train.augmented(a, &processor, epoch)?),
            None => None,
        };
        let epoch_set = augmented.as_ref().unwrap_or(&train);
        let order = sampler.epoch_order(epoch);
        let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).collect();
        let windows: Vec<&[&[usize]]> = batches.chunks(accum).collect();
        let (mut epoch_loss, mut epoch_images) = (0.0, 0usize);
        for (w, window) in windows.iter().enumerate() {
            let started = std::time::Instant::now();
            let (grads, window_loss) = window_gradients(&model, epoch_set, window, &params)?;
            let checked = match grads {
                Some(mut grads) => {
                    let (norm, bad) = if cfg.max_grad_norm > 0.0 {
                        let report = clip_grad_norm(&params, &mut grads, cfg.max_grad_norm)?;
                        (report.total_norm, report.non_finite)
                    } else {
                        grad_norm(&params, &grads)?
                    };
                    match bad {
                        None => Ok((grads, norm)),
                        Some(param) => Err(("gradient", Some(param))),
                    }
                }
                None => Err(("loss", None)),
            };
            let (grads, norm) = match checked {
                Ok(ok) => ok,
                Err((what, param)) if cfg.on_nonfinite == NonFinite::Skip => {
                    observer.message(&format!(
                        "warning: non-finite {what}{} at step {}; step skipped",
                        param.map(|p| format!(" in `{p}`")).unwrap_or_default(),
                        step + 1
                    ));
                    continue;
                }
                Err((what, param)) => {
                    return Err(TrainError::NonFinite {
                        what,
                        step: step + 1,
                        param,
                    });
                }
            };
            let lr = schedule.lr_at(step);
            optimizer.set_lr(lr);
            optimizer.step(&grads)?;
            step += 1;
            let images: usize = window.iter().map(|b| b.len()).sum();
            epoch_loss += window_loss * images as f64;
            epoch_images += images;
            observer.step(&StepLog {
                step,
                total_steps,
                epoch: epoch + 1,
                loss: window_loss,
                lr,
                grad_norm: norm,
                examples_per_second: images as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
            files.log(serde_json::json!({
                "type": "train", "step": step, "epoch": epoch + 1, "loss": window_loss,
                "lr": lr, "grad_norm": norm,
            }))?;
            let periodic = cfg
                .eval_every
                .is_some_and(|every| every > 0 && step.is_multiple_of(every));
            let at_epoch_end = w + 1 == windows.len() && cfg.eval_every.is_none_or(|e| e == 0);
            if let Some(valid) = &valid
                && (periodic || at_epoch_end)
            {
                let e = evaluate(&model, valid, &labels, eval_batch)?;
                model.set_training(true);
                let value = *e.metrics.get(&cfg.metric).ok_or_else(|| {
                    TrainError::Invalid(format!(
                        "train.metric: `{}` is not computed for image classification",
                        cfg.metric
                    ))
                })?;
                observer.message(&format!(
                    "epoch {} (step {step}): valid loss {:.4}, accuracy {:.4}, {} {:.4}",
                    epoch + 1,
                    e.loss,
                    e.metrics.get("accuracy").copied().unwrap_or(f64::NAN),
                    cfg.metric,
                    value
                ));
                let mut record = eval_record(&e.metrics, "valid");
                record["epoch"] = (epoch + 1).into();
                record["step"] = step.into();
                files.log(record)?;
                let decision = stopping.update(value);
                if decision == Decision::Improved {
                    best = Some((value, step));
                    let mut m = meta.clone();
                    m.epoch = epoch + 1;
                    m.step = step;
                    m.metrics = e.metrics.clone();
                    checkpoint::save(&model, &m, &model_dir, &best_dir)?;
                }
                if cfg.patience > 0 && decision == Decision::Stop {
                    stopped_early = true;
                }
            }
            // SIGINT / SIGTERM: there is no resumable state to save (no --resume yet), so stop here and finish
            // the run as if it had stopped early — checkpoints, report and plot are still written.
            if options
                .stop
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            {
                interrupted = true;
                observer.message(&format!(
                    "interrupted at step {step}: stopping and writing the run's checkpoints and report"
                ));
            }
            if stopped_early || interrupted {
                last_train_loss = epoch_loss / epoch_images.max(1) as f64;
                epochs_run = epoch + 1;
                break 'epochs;
            }
        }
        last_train_loss = epoch_loss / epoch_images.max(1) as f64;
        epochs_run = epoch + 1;
    }
    model.set_training(false);
    observer.train_end();
    meta.epoch = epochs_run;
    meta.step = step;
    checkpoint::save(&model, &meta, &model_dir, &output.join("last"))?;
    if best.is_none() {
        // No validation set: the last checkpoint is the best we know.
        checkpoint::save(&model, &meta, &model_dir, &best_dir)?;
    }
    observer.message(&format!(
        "trained {step} steps over {epochs_run} epochs{}",
        if interrupted {
            " (interrupted)"
        } else if stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    ));
    let after = match eval_set {
        Some(set) => {
            let loaded = ImageCheckpoint::open(&best_dir, &device)?;
            let e = evaluate(&loaded.model, set, &labels, eval_batch)?;
            observer.report("trained (after, best checkpoint)", &e);
            let mut record = eval_record(&e.metrics, eval_split);
            record["final"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "init": meta.init,
        "model_type": meta.model_type,
        "labels": labels,
        "image_size": [height, width],
        "augment": recipe.data.augment.is_some(),
        "train_examples": train.len(),
        "valid_examples": valid.as_ref().map(PixelSet::len),
        "test_examples": test.as_ref().map(PixelSet::len),
        "evaluated_on": eval_set.map(|_| eval_split),
        "steps": step,
        "epochs": epochs_run,
        "stopped_early": stopped_early,
        "interrupted": interrupted,
        "best": best.map(|(value, step)| serde_json::json!({ "metric": cfg.metric, "value": value, "step": step })),
        "train_loss": last_train_loss,
        "trainable_parameters": model.num_parameters(),
        "before": before.as_ref().map(report_json),
        "after": after.as_ref().map(report_json),
    });
    files.finish(&report, &cfg.metric)?;
    Ok(RunSummary {
        output,
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
