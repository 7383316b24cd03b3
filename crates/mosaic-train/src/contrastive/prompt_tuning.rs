//! `method = "coop"`: CoOp prompt tuning. Both towers stay frozen (the optimizer holds the context alone, and
//! the checkpoint's towers are the starting model's); the image features are computed once.

use candle_core::{Device, Tensor};
use mosaic_data::BatchSampler;
use mosaic_data::image::ImageProcessor;
use mosaic_models::clip::CoopPrompt;
use mosaic_models::clip::coop::CONTEXT_NAME;
use mosaic_models::clip::zero_shot::DEFAULT_TEMPLATE;
use mosaic_models::{Clip, ModelSource};

use super::checkpoint::{ClipMeta, TASK, save_checkpoint};
use super::coop::{
    ClassEvaluation, class_logits, class_loss, class_name_ids, coop_class_embeddings,
    evaluate_logits, template_class_embeddings,
};
use super::data::{CaptionTokenizer, ClassData};
use super::info_nce::image_features;
use super::run_files::RunFiles;
use super::{Selection, Stepper, fields};
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Report};
use crate::observer::{Observer, StepLog};
use crate::pipeline::{RunOptions, RunSummary};
use crate::recipe::Recipe;

/// The default number of context vectors.
pub const DEFAULT_CONTEXT_TOKENS: usize = 4;

fn eval_record(e: &ClassEvaluation, split: &str) -> serde_json::Value {
    let mut record = serde_json::json!({ "type": "eval", "split": split });
    for (k, v) in e.metrics() {
        record[k] = v.into();
    }
    record
}

fn as_evaluation(e: &ClassEvaluation) -> Evaluation {
    Evaluation {
        loss: e.loss,
        metrics: e.metrics(),
        report: Report::Classification(e.report.clone()),
        predictions: Vec::new(),
    }
}

/// Image features and class ids of a labelled split.
struct Split {
    features: Tensor,
    labels: Vec<usize>,
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
    // Frozen towers: eval mode throughout (no attention dropout), as CoOp does.
    clip.set_training(false);
    let tokenizer = CaptionTokenizer::load(&model_dir, &clip)?;
    let processor =
        ImageProcessor::from_folder(&model_dir).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let fields = fields(recipe);
    let eval_batch = cfg.batch_size.max(1) * 2;
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let train_data = ClassData::load(train_path, &fields, None, &processor, &device)?;
    let classes = train_data.classes.clone();
    let split = |data: ClassData| -> Result<Split> {
        Ok(Split {
            features: image_features(&clip, &data.pixels, eval_batch)?,
            labels: data.labels,
        })
    };
    let load = |path: &std::path::Path| -> Result<Split> {
        split(ClassData::load(
            path,
            &fields,
            Some(&classes),
            &processor,
            &device,
        )?)
    };
    let train = split(train_data)?;
    let valid = recipe.data.valid.as_deref().map(load).transpose()?;
    let test = recipe.data.test.as_deref().map(load).transpose()?;
    let (final_split, final_data) = match (&test, &valid) {
        (Some(t), _) => ("test", Some(t)),
        (None, Some(v)) => ("valid", Some(v)),
        _ => ("train", Some(&train)),
    };
    observer.message(&format!(
        "data: {} classes ({}), {} training images, {} validation, {} test",
        classes.len(),
        classes.join(", "),
        train.labels.len(),
        valid.as_ref().map_or(0, |s| s.labels.len()),
        test.as_ref().map_or(0, |s| s.labels.len())
    ));

    let mut files = RunFiles::create(recipe)?;
    let template = recipe
        .prompt
        .template
        .clone()
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
    // Before: zero-shot with the hand-written template.
    let zero_shot = template_class_embeddings(&clip, &tokenizer, &classes, &template, &device)?;
    let before = match final_data {
        Some(d) => {
            let e = evaluate_logits(
                &class_logits(&clip, &d.features, &zero_shot)?,
                &d.labels,
                &classes,
            )?;
            observer.message(&format!(
                "zero-shot with \"{template}\" ({final_split}): accuracy {:.3}, loss {:.4}",
                e.metrics()["accuracy"],
                e.loss
            ));
            let mut record = eval_record(&e, final_split);
            record["before"] = true.into();
            record["template"] = template.clone().into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    if let Some(e) = &before {
        observer.report(
            &format!("zero-shot, \"{template}\" (before, {final_split})"),
            &as_evaluation(e),
        );
    }

    let n_ctx = recipe
        .prompt
        .context_tokens
        .unwrap_or(DEFAULT_CONTEXT_TOKENS);
    let prompt = CoopPrompt::random(n_ctx, &clip, cfg.seed, &device)?;
    let class_ids = class_name_ids(&tokenizer, &classes)?;
    let params = vec![(CONTEXT_NAME.to_string(), prompt.context.clone())];
    let trainable = prompt.context.elem_count();
    let frozen: usize = clip.params.all().iter().map(|(_, v)| v.elem_count()).sum();
    observer.message(&format!(
        "trainable parameters: {trainable} ({n_ctx} context vectors x {}); frozen: {frozen} (both towers)",
        clip.config.text.encoder.hidden_size
    ));
    let sampler = BatchSampler::new(train.labels.len(), cfg.batch_size, cfg.seed)?;
    let total_steps = sampler.batches_per_epoch() * cfg.epochs;
    let mut stepper = Stepper::new(params, cfg, total_steps)?;
    let mut selection = Selection::new(cfg);
    let mut meta = ClipMeta {
        task: TASK.into(),
        method: "coop".into(),
        fields: fields.clone(),
        classes: Some(classes.clone()),
        context_tokens: Some(n_ctx),
        template: Some(template.clone()),
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let best_dir = files.path("best");
    let mut saved_best = false;
    let mut last_train_loss = f64::NAN;
    let evaluate = |s: &Split| -> Result<ClassEvaluation> {
        let embeds = coop_class_embeddings(&clip, &prompt, &class_ids)?.detach();
        evaluate_logits(
            &class_logits(&clip, &s.features, &embeds)?,
            &s.labels,
            &classes,
        )
    };
    observer.train_start(total_steps);
    for epoch in 0..cfg.epochs {
        let order = sampler.epoch_order(epoch);
        let (mut loss_sum, mut counted) = (0.0, 0usize);
        for batch in order.chunks(cfg.batch_size) {
            let started = std::time::Instant::now();
            let index: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
            let features = train
                .features
                .index_select(&Tensor::new(index.as_slice(), &device)?, 0)?;
            let labels: Vec<usize> = batch.iter().map(|&i| train.labels[i]).collect();
            let embeds = coop_class_embeddings(&clip, &prompt, &class_ids)?;
            let loss = class_loss(&class_logits(&clip, &features, &embeds)?, &labels)?;
            let Some(done) = stepper.apply(&loss, observer)? else {
                continue;
            };
            let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            loss_sum += value * batch.len() as f64;
            counted += batch.len();
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
                "grad_norm": done.grad_norm, "examples": batch.len(),
            }))?;
        }
        last_train_loss = loss_sum / counted.max(1) as f64;
        meta.epoch = epoch + 1;
        meta.step = stepper.step;
        if let Some(v) = &valid {
            let e = evaluate(v)?;
            let metrics = e.metrics();
            let value = selection.value(&metrics)?;
            observer.message(&format!(
                "epoch {}: train loss {:.4}; valid loss {:.4}, accuracy {:.3}",
                epoch + 1,
                last_train_loss,
                e.loss,
                metrics["accuracy"]
            ));
            let mut record = eval_record(&e, "valid");
            record["epoch"] = (epoch + 1).into();
            record["step"] = stepper.step.into();
            files.log(record)?;
            if selection.improved(value) {
                let mut m = meta.clone();
                m.metrics = metrics;
                save_checkpoint(&clip, Some(&prompt), &m, &model_dir, &best_dir)?;
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
    save_checkpoint(&clip, Some(&prompt), &meta, &model_dir, &files.path("last"))?;
    if !saved_best {
        save_checkpoint(&clip, Some(&prompt), &meta, &model_dir, &best_dir)?;
    }
    let after = match final_data {
        Some(d) => {
            let best = CoopPrompt::load(&best_dir.join(super::CONTEXT_FILE), &device)?;
            let embeds = coop_class_embeddings(&clip, &best, &class_ids)?.detach();
            let e = evaluate_logits(
                &class_logits(&clip, &d.features, &embeds)?,
                &d.labels,
                &classes,
            )?;
            let mut record = eval_record(&e, final_split);
            record["final"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    if let Some(e) = &after {
        observer.report(&format!("CoOp (after, {final_split})"), &as_evaluation(e));
    }
    if let (Some(b), Some(a)) = (&before, &after) {
        observer.message(&format!(
            "accuracy ({final_split}): {:.2} zero-shot with \"{template}\" → {:.2} CoOp ({n_ctx} context vectors)",
            b.metrics()["accuracy"],
            a.metrics()["accuracy"]
        ));
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
        "classes": classes,
        "context_tokens": n_ctx,
        "template": template,
        "train_examples": train.labels.len(),
        "valid_examples": valid.as_ref().map(|s| s.labels.len()),
        "test_examples": test.as_ref().map(|s| s.labels.len()),
        "steps": stepper.step,
        "train_loss": last_train_loss,
        "trainable_parameters": trainable,
        "frozen_parameters": frozen,
        "metric": selection.metric(),
        "best_valid": selection.best(),
        "evaluated_on": final_split,
        "before": before.as_ref().map(|e| serde_json::to_value(e.metrics()).unwrap_or_default()),
        "after": after.as_ref().map(|e| serde_json::to_value(e.metrics()).unwrap_or_default()),
        "before_report": before.as_ref().map(|e| e.report.to_json()),
        "after_report": after.as_ref().map(|e| e.report.to_json()),
    });
    files.finish(&report, selection.metric())?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: before.as_ref().map(as_evaluation),
        after: after.as_ref().map(as_evaluation),
        best_checkpoint: Some(best_dir),
    })
}
