//! `method = "contrastive"`: CLIP fine-tuning of both towers and `logit_scale` on symmetric InfoNCE.

use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_data::BatchSampler;
use mosaic_data::image::ImageProcessor;
use mosaic_models::{Clip, ModelSource};

use super::checkpoint::{ClipMeta, TASK, save_checkpoint};
use super::data::{CaptionTokenizer, PairData};
use super::info_nce::{PairEvaluation, evaluate_pairs, info_nce};
use super::run_files::RunFiles;
use super::{Selection, Stepper, fields};
use crate::error::{Result, TrainError};
use crate::observer::{Observer, StepLog};
use crate::pipeline::{RunOptions, RunSummary};
use crate::recipe::Recipe;

fn eval_record(e: &PairEvaluation, split: &str) -> serde_json::Value {
    let mut record = serde_json::json!({ "type": "eval", "split": split });
    for (k, v) in e.metrics() {
        record[k] = v.into();
    }
    record
}

fn metrics_json(e: &PairEvaluation) -> serde_json::Value {
    serde_json::to_value(e.metrics()).unwrap_or_default()
}

/// `recall@1 (image→text): 0.05 before → 0.40 after`, for each direction and cut-off.
pub fn summary_lines(before: &PairEvaluation, after: &PairEvaluation) -> Vec<String> {
    let mut lines = Vec::new();
    for &k in &before.recall.ks {
        for (arrow, b, a) in [
            (
                "image→text",
                before.recall.image_to_text_at(k),
                after.recall.image_to_text_at(k),
            ),
            (
                "text→image",
                before.recall.text_to_image_at(k),
                after.recall.text_to_image_at(k),
            ),
        ] {
            if let (Some(b), Some(a)) = (b, a) {
                lines.push(format!(
                    "recall@{k} ({arrow}): {b:.2} before → {a:.2} after"
                ));
            }
        }
    }
    lines.push(format!(
        "loss: {:.4} before → {:.4} after",
        before.loss, after.loss
    ));
    lines
}

/// Trains as `recipe` says (the caller checked the options).
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    _options: RunOptions<'_>,
) -> Result<RunSummary> {
    let cfg = &recipe.train;
    let device = Device::Cpu;
    let source = ModelSource::parse(&recipe.model);
    observer.message(&format!("model: {}", source.spec()));
    let model_dir = source.resolve()?;
    let clip = Clip::from_folder(&model_dir, cfg.seed, &device)?;
    let tokenizer = CaptionTokenizer::load(&model_dir, &clip)?;
    let processor =
        ImageProcessor::from_folder(&model_dir).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let fields = fields(recipe);
    let load = |path: &Path, observer: &mut dyn Observer| -> Result<PairData> {
        let data = PairData::load(path, &fields, &processor, &tokenizer, &device)?;
        if data.truncated > 0 {
            observer.message(&format!(
                "warning: {}: {} captions cut to the model's {} text positions",
                path.display(),
                data.truncated,
                clip.config.text.max_position_embeddings
            ));
        }
        Ok(data)
    };
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let train = load(train_path, observer)?;
    if train.len() < 2 {
        return Err(TrainError::file(
            train_path,
            "contrastive training needs at least 2 image-caption pairs",
        ));
    }
    let valid = match &recipe.data.valid {
        Some(p) => Some(load(p, observer)?),
        None => None,
    };
    let test = match &recipe.data.test {
        Some(p) => Some(load(p, observer)?),
        None => None,
    };
    // Before / after on the test pairs when given, else on the validation pairs.
    let (final_split, final_data) = match (&test, &valid) {
        (Some(t), _) => ("test", Some(t)),
        (None, Some(v)) => ("valid", Some(v)),
        _ => ("none", None),
    };
    observer.message(&format!(
        "data: {} training pairs, {} validation, {} test",
        train.len(),
        valid.as_ref().map_or(0, PairData::len),
        test.as_ref().map_or(0, PairData::len)
    ));

    let mut files = RunFiles::create(recipe)?;
    let eval_batch = cfg.batch_size.max(1) * 2;
    clip.set_training(false);
    let before = match final_data {
        Some(d) => {
            let e = evaluate_pairs(&clip, d, &tokenizer, eval_batch, &device)?;
            observer.message(&format!(
                "before training ({final_split}): loss {:.4}, recall@1 {:.3} (image→text {:.3}, text→image {:.3})",
                e.loss,
                e.metrics()["recall_at_1"],
                e.recall.image_to_text[0],
                e.recall.text_to_image[0]
            ));
            let mut record = eval_record(&e, final_split);
            record["before"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };

    let params = clip.params.all();
    let trainable: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    observer.message(&format!(
        "trainable parameters: {trainable} (both towers, projections, logit_scale)"
    ));
    // The last batch of an epoch is dropped when it would hold a single pair (no negative to contrast with).
    let sampler = BatchSampler::new(train.len(), cfg.batch_size, cfg.seed)?;
    let batches_per_epoch = sampler
        .epoch_order(0)
        .chunks(cfg.batch_size)
        .filter(|c| c.len() > 1)
        .count();
    let total_steps = batches_per_epoch * cfg.epochs;
    let mut stepper = Stepper::new(params.clone(), cfg, total_steps)?;
    let mut selection = Selection::new(cfg);
    let mut meta = ClipMeta {
        task: TASK.into(),
        method: "contrastive".into(),
        fields: fields.clone(),
        classes: None,
        context_tokens: None,
        template: None,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let best_dir = files.path("best");
    let mut saved_best = false;
    let mut last_train_loss = f64::NAN;
    clip.mode.set_seed(cfg.seed);
    observer.train_start(total_steps);
    for epoch in 0..cfg.epochs {
        clip.set_training(true);
        let order = sampler.epoch_order(epoch);
        let (mut loss_sum, mut counted) = (0.0, 0usize);
        for batch in order.chunks(cfg.batch_size).filter(|c| c.len() > 1) {
            let started = std::time::Instant::now();
            let index: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
            let index = Tensor::new(index.as_slice(), &device)?;
            let pixels = train.pixels.index_select(&index, 0)?;
            let rows: Vec<&[u32]> = batch
                .iter()
                .map(|&i| train.captions[i].as_slice())
                .collect();
            let (ids, mask) = tokenizer.batch(&rows, &device)?;
            let loss = info_nce(&clip, &pixels, &ids, &mask)?;
            let Some(done) = stepper.apply(&loss, observer)? else {
                continue;
            };
            // CLIP's rule: the temperature may not make logits larger than 100 x cosine.
            clip.clamp_logit_scale()?;
            let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            loss_sum += value * batch.len() as f64;
            counted += batch.len();
            let scale = clip
                .logit_scale
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            observer.step(&StepLog {
                step: stepper.step,
                total_steps,
                epoch: epoch + 1,
                loss: value,
                lr: done.lr,
                grad_norm: done.grad_norm,
                examples_per_second: batch.len() as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
            files.log(serde_json::json!({
                "type": "train", "step": stepper.step, "epoch": epoch + 1, "loss": value, "lr": done.lr,
                "grad_norm": done.grad_norm, "logit_scale": scale, "examples": batch.len(),
            }))?;
        }
        last_train_loss = loss_sum / counted.max(1) as f64;
        meta.epoch = epoch + 1;
        meta.step = stepper.step;
        clip.set_training(false);
        if let Some(v) = &valid {
            let e = evaluate_pairs(&clip, v, &tokenizer, eval_batch, &device)?;
            let metrics = e.metrics();
            let value = selection.value(&metrics)?;
            observer.message(&format!(
                "epoch {}: train loss {:.4}; valid loss {:.4}, recall@1 {:.3} (image→text {:.3}, text→image {:.3}), recall@5 {:.3}",
                epoch + 1,
                last_train_loss,
                e.loss,
                metrics["recall_at_1"],
                e.recall.image_to_text[0],
                e.recall.text_to_image[0],
                metrics["recall_at_5"]
            ));
            let mut record = eval_record(&e, "valid");
            record["epoch"] = (epoch + 1).into();
            record["step"] = stepper.step.into();
            files.log(record)?;
            if selection.improved(value) {
                let mut m = meta.clone();
                m.metrics = metrics;
                save_checkpoint(&clip, None, &m, &model_dir, &best_dir)?;
                saved_best = true;
            }
            if selection.should_stop() {
                observer.message(&format!(
                    "early stopping: {} did not improve for {} evaluations",
                    selection.metric(),
                    cfg.patience
                ));
                break;
            }
        }
    }
    observer.train_end();
    save_checkpoint(&clip, None, &meta, &model_dir, &files.path("last"))?;
    if !saved_best {
        // No validation set: the last checkpoint is the best we know.
        save_checkpoint(&clip, None, &meta, &model_dir, &best_dir)?;
    }
    let after = match final_data {
        Some(d) => {
            let best = Clip::from_folder(&best_dir, cfg.seed, &device)?;
            best.set_training(false);
            let e = evaluate_pairs(&best, d, &tokenizer, eval_batch, &device)?;
            let mut record = eval_record(&e, final_split);
            record["final"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    if let (Some(b), Some(a)) = (&before, &after) {
        observer.message(&format!("{final_split} split, best checkpoint:"));
        for line in summary_lines(b, a) {
            observer.message(&format!("  {line}"));
        }
    }
    observer.message(&format!(
        "evaluate later with: mosaic eval --checkpoint {} --data FILE.jsonl",
        best_dir.display()
    ));
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "train_examples": train.len(),
        "valid_examples": valid.as_ref().map(PairData::len),
        "test_examples": test.as_ref().map(PairData::len),
        "steps": stepper.step,
        "train_loss": last_train_loss,
        "trainable_parameters": trainable,
        "logit_scale": clip.logit_scale.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
        "metric": selection.metric(),
        "best_valid": selection.best(),
        "evaluated_on": final_split,
        "before": before.as_ref().map(metrics_json),
        "after": after.as_ref().map(metrics_json),
    });
    files.finish(&report, selection.metric())?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}
