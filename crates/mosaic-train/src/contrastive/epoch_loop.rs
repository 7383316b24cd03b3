//! The training loop both image-text methods share: epochs of optimizer steps (each reported to the observer and
//! logged in `metrics.jsonl`), validation after each epoch choosing the `best/` checkpoint, early stopping, and
//! the `last/` checkpoint at the end. What a method trains and measures comes from its [`EpochMethod`].

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Tensor, Var};
use mosaic_data::BatchSampler;

use super::checkpoint::ClipMeta;
use super::{Selection, Stepper};
use crate::error::Result;
use crate::observer::{Observer, StepLog};
use crate::recipe::{Recipe, TrainSection};
use crate::run_folder::{RunFolder, eval_record};

/// What differs between the methods inside the loop.
pub trait EpochMethod {
    /// Dropout on (`true`, for an epoch's steps) or off (`false`, for validation).
    fn set_training(&self, training: bool);

    /// The loss of one batch of training examples (by index), differentiable in the trained parameters.
    fn batch_loss(&self, batch: &[usize]) -> Result<Tensor>;

    /// Runs after each applied optimizer step; returns extra fields for that step's `metrics.jsonl` record.
    fn after_step(&self) -> Result<Vec<(&'static str, serde_json::Value)>>;

    /// The validation metrics and how the epoch's message describes them (`loss 0.1234, accuracy 0.500`);
    /// `None` without a validation set.
    fn validate(&self) -> Result<Option<(BTreeMap<String, f64>, String)>>;

    /// Writes a checkpoint folder.
    fn save(&self, meta: &ClipMeta, dir: &Path) -> Result<()>;
}

/// The state of a run's training: the batches, the optimizer, the checkpoint selection and the checkpoints'
/// `mosaic.json`.
pub struct EpochLoop<'a> {
    cfg: &'a TrainSection,
    sampler: BatchSampler,
    min_batch: usize,
    /// Optimizer steps over the whole run.
    pub total_steps: usize,
    pub stepper: Stepper,
    pub selection: Selection,
    /// The checkpoints' `mosaic.json` (epoch and step kept current).
    pub meta: ClipMeta,
    /// The last epoch's mean training loss (NaN before the first epoch).
    pub train_loss: f64,
}

impl<'a> EpochLoop<'a> {
    /// A loop over `train_len` examples training `params` as `cfg` says. Batches shorter than `min_batch` are
    /// skipped (InfoNCE needs at least one negative: a last batch of one pair is dropped).
    pub fn new(
        cfg: &'a TrainSection,
        train_len: usize,
        min_batch: usize,
        params: Vec<(String, Var)>,
        meta: ClipMeta,
    ) -> Result<Self> {
        let sampler = BatchSampler::new(train_len, cfg.batch_size, cfg.seed)?;
        let batches_per_epoch = sampler
            .epoch_order(0)
            .chunks(cfg.batch_size)
            .filter(|c| c.len() >= min_batch)
            .count();
        let total_steps = batches_per_epoch * cfg.epochs;
        Ok(EpochLoop {
            cfg,
            stepper: Stepper::new(params, cfg, total_steps)?,
            selection: Selection::new(cfg),
            sampler,
            min_batch,
            total_steps,
            meta,
            train_loss: f64::NAN,
        })
    }

    /// Trains for `train.epochs` (or until early stopping), then saves `last/`, and `best/` too when no
    /// validation chose one.
    pub fn run<M: EpochMethod>(
        &mut self,
        method: &M,
        files: &mut RunFolder,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let cfg = self.cfg;
        let best_dir = files.path("best");
        let mut saved_best = false;
        observer.train_start(self.total_steps);
        for epoch in 0..cfg.epochs {
            method.set_training(true);
            let order = self.sampler.epoch_order(epoch);
            let (mut loss_sum, mut counted) = (0.0, 0usize);
            for batch in order
                .chunks(cfg.batch_size)
                .filter(|c| c.len() >= self.min_batch)
            {
                let started = std::time::Instant::now();
                let loss = method.batch_loss(batch)?;
                let Some(done) = self.stepper.apply(&loss, observer)? else {
                    continue;
                };
                let extra = method.after_step()?;
                let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                loss_sum += value * batch.len() as f64;
                counted += batch.len();
                observer.step(&StepLog {
                    step: self.stepper.step,
                    total_steps: self.total_steps,
                    epoch: epoch + 1,
                    loss: value,
                    lr: done.lr,
                    grad_norm: done.grad_norm,
                    examples_per_second: batch.len() as f64
                        / started.elapsed().as_secs_f64().max(1e-9),
                });
                let mut record = serde_json::json!({
                    "type": "train", "step": self.stepper.step, "epoch": epoch + 1, "loss": value,
                    "lr": done.lr, "grad_norm": done.grad_norm, "examples": batch.len(),
                });
                for (key, v) in extra {
                    record[key] = v;
                }
                files.log(record)?;
            }
            self.train_loss = loss_sum / counted.max(1) as f64;
            self.meta.epoch = epoch + 1;
            self.meta.step = self.stepper.step;
            method.set_training(false);
            let Some((metrics, described)) = method.validate()? else {
                continue;
            };
            let value = self.selection.value(&metrics)?;
            observer.message(&format!(
                "epoch {}: train loss {:.4}; valid {described}",
                epoch + 1,
                self.train_loss
            ));
            let mut record = eval_record(&metrics, "valid");
            record["epoch"] = (epoch + 1).into();
            record["step"] = self.stepper.step.into();
            files.log(record)?;
            if self.selection.improved(value) {
                let mut m = self.meta.clone();
                m.metrics = metrics;
                method.save(&m, &best_dir)?;
                saved_best = true;
            }
            if self.selection.should_stop() {
                observer.message(&format!(
                    "early stopping: {} did not improve for {} evaluations",
                    self.selection.metric(),
                    cfg.patience
                ));
                break;
            }
        }
        observer.train_end();
        method.save(&self.meta, &files.path("last"))?;
        if !saved_best {
            // No validation set: the last checkpoint is the best we know.
            method.save(&self.meta, &best_dir)?;
        }
        Ok(())
    }

    /// Writes `report.json` — `method_report`'s fields
    /// plus what every run reports (recipe name, model, task, method, steps, training loss, the selection metric
    /// and its best validation value) — and `training.svg`.
    pub fn finish(
        &self,
        recipe: &Recipe,
        method_report: serde_json::Value,
        files: &RunFolder,
    ) -> Result<()> {
        let mut report = serde_json::json!({
            "name": recipe.name,
            "model": recipe.model,
            "task": recipe.task,
            "method": recipe.method,
            "steps": self.stepper.step,
            "train_loss": self.train_loss,
            "metric": self.selection.metric(),
            "best_valid": self.selection.best(),
        });
        if let serde_json::Value::Object(fields) = method_report {
            for (key, value) in fields {
                report[key] = value;
            }
        }
        files.finish(&report, self.selection.metric())
    }
}
