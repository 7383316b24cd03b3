//! `method = "coop"`: CoOp prompt tuning. Both towers stay frozen (the optimizer holds the context alone, and
//! the checkpoint's towers are the starting model's); the image features are computed once.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mosaic_models::Clip;
use mosaic_models::clip::CoopPrompt;
use mosaic_models::clip::coop::CONTEXT_NAME;
use mosaic_models::clip::zero_shot::DEFAULT_TEMPLATE;

use super::checkpoint::{ClipMeta, TASK, save_checkpoint};
use super::coop::{
    ClassEvaluation, class_logits, class_loss, class_name_ids, coop_class_embeddings,
    evaluate_logits, template_class_embeddings,
};
use super::data::ClassData;
use super::info_nce::image_features;
use super::{BaseModel, fields, finish_report, train_path};
use mosaic_models::Mode;

use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Report};
use crate::observer::Observer;
use crate::recipe::{Freeze, Recipe};
use crate::resume::Found;
use crate::run::RunSummary;
use crate::run_folder::{RunFolder, eval_record};
use crate::trainer::{BatchLoss, CheckpointInfo, EvalPoint, TrainTask, Trainer, metrics_json};

/// The default number of context vectors.
pub const DEFAULT_CONTEXT_TOKENS: usize = 4;

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

/// The classification report of `split` with the class embeddings `class_embeds`.
fn evaluate_split(
    clip: &Clip,
    split: &Split,
    class_embeds: &Tensor,
    classes: &[String],
) -> Result<ClassEvaluation> {
    evaluate_logits(
        &class_logits(clip, &split.features, class_embeds)?,
        &split.labels,
        classes,
    )
}

/// The context vectors trained on the class logits' cross-entropy; the towers stay frozen, in eval mode.
struct ContextTraining<'a> {
    clip: &'a Clip,
    prompt: &'a CoopPrompt,
    class_ids: &'a [Vec<u32>],
    classes: &'a [String],
    model_dir: &'a Path,
    train: &'a Split,
    valid: Option<&'a Split>,
    device: &'a Device,
    meta: &'a ClipMeta,
}

impl TrainTask for ContextTraining<'_> {
    fn train_len(&self) -> usize {
        self.train.labels.len()
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch.len()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let index: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
        let features = self
            .train
            .features
            .index_select(&Tensor::new(index.as_slice(), self.device)?, 0)?;
        let labels: Vec<usize> = batch.iter().map(|&i| self.train.labels[i]).collect();
        let embeds = coop_class_embeddings(self.clip, self.prompt, self.class_ids)?;
        Ok(BatchLoss::Mean {
            loss: class_loss(&class_logits(self.clip, &features, &embeds)?, &labels)?,
            count: batch.len(),
        })
    }

    fn set_training(&self, _training: bool) {
        // Frozen towers: eval mode throughout (no attention dropout), as CoOp does.
    }

    fn dropout(&self) -> &Mode {
        &self.clip.mode
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        vec![(CONTEXT_NAME.to_string(), self.prompt.context.clone())]
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        if freeze != Freeze::None {
            return Err(TrainError::Invalid(format!(
                "recipe key `train.freeze`: method \"coop\" trains only its context vectors (both towers are \
                 frozen already), so \"{freeze}\" does not apply"
            )));
        }
        Ok(self.parameters())
    }

    fn no_decay(&self, name: &str) -> bool {
        super::no_decay(name)
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        Err("method \"coop\" keeps the token embeddings frozen; FGM has nothing to perturb".into())
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let embeds = coop_class_embeddings(self.clip, self.prompt, self.class_ids)?.detach();
        let e = evaluate_split(self.clip, valid, &embeds, self.classes)?;
        let metrics = e.metrics();
        observer.message(&format!(
            "epoch {}: train loss {:.4}; valid loss {:.4}, accuracy {:.3}",
            at.epoch, at.train_loss, e.loss, metrics["accuracy"]
        ));
        Ok(Some(metrics_json(&metrics)))
    }

    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.f64_metrics();
        save_checkpoint(self.clip, Some(self.prompt), &meta, self.model_dir, dir)
    }
}

/// The class names and the image features of each labelled split (the towers are frozen: computed once).
struct ClassSplits {
    classes: Vec<String>,
    train: Split,
    valid: Option<Split>,
    test: Option<Split>,
}

/// Loads the recipe's splits and computes their image features.
fn load_splits(
    recipe: &Recipe,
    base: &BaseModel,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<ClassSplits> {
    let clip = &base.clip;
    let fields = fields(recipe);
    let eval_batch = recipe.train.batch_size.max(1) * 2;
    let train_data = ClassData::load(train_path(recipe)?, &fields, None, &base.processor, device)?;
    let classes = train_data.classes.clone();
    let split = |data: ClassData| -> Result<Split> {
        Ok(Split {
            features: image_features(clip, &data.pixels, eval_batch)?,
            labels: data.labels,
        })
    };
    let load = |path: &Path| -> Result<Split> {
        split(ClassData::load(
            path,
            &fields,
            Some(&classes),
            &base.processor,
            device,
        )?)
    };
    let train = split(train_data)?;
    let valid = recipe.data.valid.as_deref().map(load).transpose()?;
    let test = recipe.data.test.as_deref().map(load).transpose()?;
    observer.message(&format!(
        "data: {} classes ({}), {} training images, {} validation, {} test",
        classes.len(),
        classes.join(", "),
        train.labels.len(),
        valid.as_ref().map_or(0, |s| s.labels.len()),
        test.as_ref().map_or(0, |s| s.labels.len())
    ));

    Ok(ClassSplits {
        classes,
        train,
        valid,
        test,
    })
}

/// Trains `base` as `recipe` says (the caller checked the options).
pub fn run(
    recipe: &Recipe,
    base: &BaseModel,
    device: &Device,
    trainer: &Trainer<'_>,
    resume: Option<Found>,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let (cfg, clip, tokenizer) = (&recipe.train, &base.clip, &base.tokenizer);
    // Frozen towers: eval mode throughout (no attention dropout), as CoOp does.
    clip.set_training(false);
    let fields = fields(recipe);
    let ClassSplits {
        classes,
        train,
        valid,
        test,
    } = load_splits(recipe, base, device, observer)?;
    let (final_split, final_data) = match (&test, &valid) {
        (Some(t), _) => ("test", Some(t)),
        (None, Some(v)) => ("valid", Some(v)),
        _ => ("train", Some(&train)),
    };
    let mut files = RunFolder::create(recipe, trainer.collective)?;
    let template = recipe
        .prompt
        .template
        .clone()
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
    // Before: zero-shot with the hand-written template.
    let zero_shot = template_class_embeddings(clip, tokenizer, &classes, &template, device)?;
    let before = match final_data {
        Some(d) => {
            let e = evaluate_split(clip, d, &zero_shot, &classes)?;
            observer.message(&format!(
                "zero-shot with \"{template}\" ({final_split}): accuracy {:.3}, loss {:.4}",
                e.metrics()["accuracy"],
                e.loss
            ));
            if resume.is_none() {
                let mut record = eval_record(&e.metrics(), final_split);
                record["before"] = true.into();
                record["template"] = template.clone().into();
                files.log(record)?;
            }
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
    let prompt = CoopPrompt::random(n_ctx, clip, cfg.seed, device)?;
    let class_ids = class_name_ids(tokenizer, &classes)?;
    let frozen: usize = clip.params.all().iter().map(|(_, v)| v.elem_count()).sum();
    observer.message(&format!(
        "{n_ctx} context vectors x {} train; frozen: {frozen} (both towers)",
        clip.config.text.encoder.hidden_size
    ));
    let meta = ClipMeta {
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
    let mut task = ContextTraining {
        clip,
        prompt: &prompt,
        class_ids: &class_ids,
        classes: &classes,
        model_dir: &base.dir,
        train: &train,
        valid: valid.as_ref(),
        device,
        meta: &meta,
    };
    let outcome = trainer.fit(&mut task, &mut files, resume, observer)?;
    let best_dir = files.path("best");
    let after = match final_data {
        Some(d) => {
            let best = CoopPrompt::load(&best_dir.join(super::CONTEXT_FILE), device)?;
            let embeds = coop_class_embeddings(clip, &best, &class_ids)?.detach();
            let e = evaluate_split(clip, d, &embeds, &classes)?;
            let mut record = eval_record(&e.metrics(), final_split);
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
    let report = serde_json::json!({
        "classes": classes,
        "context_tokens": n_ctx,
        "template": template,
        "train_examples": train.labels.len(),
        "valid_examples": valid.as_ref().map(|s| s.labels.len()),
        "test_examples": test.as_ref().map(|s| s.labels.len()),
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "peft": recipe.peft.as_ref().map(|p| p.method.as_str()),
        "frozen_parameters": frozen,
        "evaluated_on": final_split,
        "before": before.as_ref().map(|e| serde_json::to_value(e.metrics()).unwrap_or_default()),
        "after": after.as_ref().map(|e| serde_json::to_value(e.metrics()).unwrap_or_default()),
        "before_report": before.as_ref().map(|e| e.report.to_json()),
        "after_report": after.as_ref().map(|e| e.report.to_json()),
    });
    finish_report(recipe, &outcome, report, &files)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: before.as_ref().map(as_evaluation),
        after: after.as_ref().map(as_evaluation),
        best_checkpoint: Some(best_dir),
    })
}
