//! The training loop: seeded batch order, gradient accumulation normalised by counted targets, optional FGM
//! adversarial steps on the word embeddings, global-norm clipping, scheduled AdamW/SGD, evaluation every epoch
//! (or every N steps) with early stopping, and a callback whenever the validation metric improves.

use candle_core::Device;
use candle_core::backprop::GradStore;
use mosaic_data::{Batch, BatchSampler, Collator, EncodedDataset, IGNORE_INDEX};

use crate::clip::{GradAccumulator, Reduction, clip_grad_norm, grad_norm};
use crate::early_stopping::{Decision, EarlyStopping};
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, evaluate};
use crate::freeze::trainable;
use crate::observer::{Observer, StepLog};
use crate::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use crate::recipe::{OptimizerKind, TrainSection};
use crate::schedule::LrSchedule;
use crate::task_model::{TaskModel, TensorBatch};

/// What happened during [`Trainer::fit`].
#[derive(Debug, Clone, Default)]
pub struct FitOutcome {
    pub steps: usize,
    pub epochs: usize,
    pub stopped_early: bool,
    /// The best validation value of the recipe's metric and the step it was reached at.
    pub best: Option<(f64, usize)>,
    /// Mean training loss of the last epoch.
    pub last_train_loss: f64,
}

/// Hooks the loop calls so the caller can save checkpoints and log metrics.
pub trait FitHooks {
    /// The validation metric improved: save the best checkpoint.
    fn improved(
        &mut self,
        model: &TaskModel,
        evaluation: &Evaluation,
        epoch: usize,
        step: usize,
    ) -> Result<()>;
    /// One line of the metrics log (`metrics.jsonl`).
    fn log(&mut self, record: serde_json::Value) -> Result<()>;
}

/// Runs training for one model.
pub struct Trainer<'a> {
    pub model: &'a TaskModel,
    pub config: &'a TrainSection,
    pub collator: Collator,
    pub device: Device,
}

fn counted(batch: &Batch) -> usize {
    batch.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
}

impl Trainer<'_> {
    /// Trains on `train`, evaluating on `valid` when given.
    pub fn fit(
        &self,
        train: &EncodedDataset,
        valid: Option<&EncodedDataset>,
        observer: &mut dyn Observer,
        hooks: &mut dyn FitHooks,
    ) -> Result<FitOutcome> {
        let cfg = self.config;
        if train.is_empty() {
            return Err(TrainError::Invalid("the training set is empty".into()));
        }
        let params = trainable(
            self.model.bert.params.all(),
            cfg.freeze,
            self.model.bert.encoder.num_layers(),
        )?;
        let mut optimizer: Box<dyn Optimizer> = match cfg.optimizer {
            OptimizerKind::Adamw => Box::new(AdamW::new(
                params.clone(),
                AdamWConfig {
                    lr: cfg.lr,
                    weight_decay: cfg.weight_decay,
                    ..AdamWConfig::default()
                },
            )?),
            OptimizerKind::Sgd => Box::new(Sgd::new(
                params.clone(),
                SgdConfig {
                    lr: cfg.lr,
                    momentum: cfg.momentum,
                    dampening: 0.0,
                    nesterov: false,
                    weight_decay: cfg.weight_decay,
                },
            )?),
        };
        let sampler = BatchSampler::new(train.len(), cfg.batch_size, cfg.seed)?;
        let accum = cfg.grad_accum.max(1);
        let steps_per_epoch = sampler.batches_per_epoch().div_ceil(accum);
        let total_steps = steps_per_epoch * cfg.epochs;
        let schedule = LrSchedule::new(cfg.schedule, cfg.lr, cfg.warmup, total_steps);
        let mut early =
            EarlyStopping::new(cfg.metric.clone(), cfg.mode, cfg.patience, cfg.min_delta);
        let embeddings = self
            .model
            .bert
            .params
            .all()
            .into_iter()
            .find(|(n, _)| n.ends_with("embeddings.word_embeddings.weight"))
            .map(|(_, v)| v);

        self.model.bert.mode.set_seed(cfg.seed);
        self.model.bert.set_training(true);
        observer.train_start(total_steps);
        let mut outcome = FitOutcome::default();
        let mut step = 0usize;
        'epochs: for epoch in 0..cfg.epochs {
            let order = sampler.epoch_order(epoch);
            let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).collect();
            let (mut epoch_loss, mut epoch_count) = (0.0, 0usize);
            for window in batches.chunks(accum) {
                let started = std::time::Instant::now();
                let collated = window
                    .iter()
                    .map(|idx| {
                        self.collator
                            .collate(idx.iter().map(|&i| &train.examples[i]))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let total: usize = collated.iter().map(counted).sum();
                let mut acc = GradAccumulator::new(params.iter().map(|(_, v)| v.clone()));
                let mut window_loss = 0.0;
                for batch in &collated {
                    let tensors = TensorBatch::new(batch, &self.device)?;
                    let (loss, _) = self.model.loss_sum(&tensors)?;
                    let loss = loss.affine(1.0 / total.max(1) as f64, 0.0)?;
                    let value = loss.to_scalar::<f32>()? as f64;
                    if !value.is_finite() {
                        return Err(TrainError::NonFinite {
                            what: "loss",
                            step: step + 1,
                            param: None,
                        });
                    }
                    window_loss += value;
                    let grads = loss.backward()?;
                    acc.add(&grads)?;
                    if let (Some(eps), Some(emb)) = (cfg.fgm_epsilon, &embeddings) {
                        self.adversarial_step(&tensors, emb, &grads, eps, total, &mut acc)?;
                    }
                }
                let mut grads: GradStore = acc.take(Reduction::Sum)?;
                let (norm, bad) = if cfg.max_grad_norm > 0.0 {
                    let report = clip_grad_norm(&params, &mut grads, cfg.max_grad_norm)?;
                    (report.total_norm, report.non_finite)
                } else {
                    grad_norm(&params, &grads)?
                };
                if let Some(param) = bad {
                    return Err(TrainError::NonFinite {
                        what: "gradient",
                        step: step + 1,
                        param: Some(param),
                    });
                }
                let lr = schedule.lr_at(step);
                optimizer.set_lr(lr);
                optimizer.step(&grads)?;
                step += 1;
                epoch_loss += window_loss * total as f64;
                epoch_count += total;
                let examples: usize = collated.iter().map(|b| b.batch_size).sum();
                let log = StepLog {
                    step,
                    total_steps,
                    epoch: epoch + 1,
                    loss: window_loss,
                    lr,
                    grad_norm: norm,
                    examples_per_second: examples as f64
                        / started.elapsed().as_secs_f64().max(1e-9),
                };
                observer.step(&log);
                hooks.log(serde_json::json!({
                    "type": "train", "step": step, "epoch": epoch + 1, "loss": window_loss,
                    "lr": lr, "grad_norm": norm,
                }))?;
                if let (Some(every), Some(valid)) = (cfg.eval_every, valid)
                    && every > 0
                    && step.is_multiple_of(every)
                    && self.validate(
                        valid,
                        epoch + 1,
                        step,
                        &mut early,
                        &mut outcome,
                        observer,
                        hooks,
                    )?
                {
                    outcome.stopped_early = true;
                    break 'epochs;
                }
            }
            outcome.epochs = epoch + 1;
            outcome.last_train_loss = epoch_loss / epoch_count.max(1) as f64;
            if let Some(valid) = valid
                && cfg.eval_every.is_none_or(|e| e == 0)
                && self.validate(
                    valid,
                    epoch + 1,
                    step,
                    &mut early,
                    &mut outcome,
                    observer,
                    hooks,
                )?
            {
                outcome.stopped_early = true;
                break;
            }
        }
        outcome.steps = step;
        self.model.bert.set_training(false);
        observer.train_end();
        Ok(outcome)
    }

    /// Evaluates on the validation set; returns whether early stopping says stop.
    #[allow(clippy::too_many_arguments)]
    fn validate(
        &self,
        valid: &EncodedDataset,
        epoch: usize,
        step: usize,
        early: &mut EarlyStopping,
        outcome: &mut FitOutcome,
        observer: &mut dyn Observer,
        hooks: &mut dyn FitHooks,
    ) -> Result<bool> {
        let evaluation = evaluate(
            self.model,
            valid,
            &self.collator,
            self.config.batch_size * 2,
            &self.device,
        )?;
        self.model.bert.set_training(true);
        let metric = &self.config.metric;
        let value = *evaluation.metrics.get(metric).ok_or_else(|| {
            TrainError::Invalid(format!(
                "train.metric: `{metric}` is not computed for this task"
            ))
        })?;
        observer.report(
            &format!("validation, epoch {epoch} (step {step})"),
            &evaluation,
        );
        let mut record =
            serde_json::json!({ "type": "eval", "split": "valid", "epoch": epoch, "step": step });
        for (k, v) in &evaluation.metrics {
            record[k] = serde_json::json!(v);
        }
        hooks.log(record)?;
        let decision = early.update(value);
        if decision == Decision::Improved {
            outcome.best = Some((value, step));
            hooks.improved(self.model, &evaluation, epoch, step)?;
        }
        Ok(self.config.patience > 0 && decision == Decision::Stop)
    }

    /// FGM (Miyato et al.): add ε·g/‖g‖ to the word embeddings, accumulate the gradient of the loss there, restore.
    fn adversarial_step(
        &self,
        tensors: &TensorBatch,
        embeddings: &candle_core::Var,
        grads: &GradStore,
        epsilon: f64,
        total: usize,
        acc: &mut GradAccumulator,
    ) -> Result<()> {
        let Some(g) = grads.get(embeddings.as_tensor()) else {
            return Ok(());
        };
        let norm = g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
        if !(norm.is_finite() && norm > 0.0) {
            return Ok(());
        }
        let original = embeddings.as_tensor().copy()?;
        embeddings.set(&original.add(&g.affine(epsilon / norm, 0.0)?)?)?;
        let adversarial = (|| -> Result<GradStore> {
            let (loss, _) = self.model.loss_sum(tensors)?;
            Ok(loss.affine(1.0 / total.max(1) as f64, 0.0)?.backward()?)
        })();
        embeddings.set(&original)?;
        acc.add(&adversarial?)?;
        Ok(())
    }
}
