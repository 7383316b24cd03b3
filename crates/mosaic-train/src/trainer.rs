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
use crate::optim::Optimizer;
use crate::recipe::{NonFinite, TrainSection};
use crate::schedule::LrSchedule;
use crate::task_model::{TaskModel, TensorBatch};
use serde::{Deserialize, Serialize};

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

/// Where training stands: with the model weights and the optimizer state, everything an exact resume needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The epoch (0-based) and the accumulation window within it that come next.
    pub epoch: usize,
    pub window: usize,
    /// The dropout stream: (seed, draws so far).
    pub rng: (u64, u64),
    pub early_stopping: EarlyStopping,
    pub best: Option<(f64, usize)>,
    pub epoch_loss: f64,
    pub epoch_count: usize,
    pub stopped_early: bool,
    /// Every record of `metrics.jsonl` so far.
    pub history: Vec<serde_json::Value>,
}

/// Hooks the loop calls so the caller can save checkpoints, log metrics and ask it to stop.
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
    /// Save a resumable checkpoint.
    fn save_state(
        &mut self,
        _model: &TaskModel,
        _optimizer: &dyn Optimizer,
        _state: &TrainerState,
    ) -> Result<()> {
        Ok(())
    }
    /// Whether the user asked to stop (SIGINT / SIGTERM); checked after every step.
    fn interrupted(&self) -> bool {
        false
    }
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

/// A resumed run: the state and the optimizer's tensors from the checkpoint.
pub struct Resume {
    pub state: TrainerState,
    pub optimizer: Vec<(String, candle_core::Tensor)>,
}

impl Trainer<'_> {
    /// Trains on `train`, evaluating on `valid` when given; `resume` continues a checkpointed run exactly.
    pub fn fit(
        &self,
        train: &EncodedDataset,
        valid: Option<&EncodedDataset>,
        observer: &mut dyn Observer,
        hooks: &mut dyn FitHooks,
        resume: Option<Resume>,
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
        let mut optimizer = crate::recipe_optimizer::recipe_optimizer(
            params.clone(),
            cfg,
            crate::optim::default_no_decay,
        )?;
        let sampler = BatchSampler::new(train.len(), cfg.batch_size, cfg.seed)?;
        let accum = cfg.grad_accum.max(1);
        let steps_per_epoch = sampler.batches_per_epoch().div_ceil(accum);
        let total_steps = steps_per_epoch * cfg.epochs;
        let schedule = LrSchedule::new(cfg.schedule, cfg.lr, cfg.warmup, total_steps);
        let embeddings = self
            .model
            .bert
            .params
            .all()
            .into_iter()
            .find(|(n, _)| n.ends_with("embeddings.word_embeddings.weight"))
            .map(|(_, v)| v);

        let mut state = match resume {
            Some(resume) => {
                optimizer.load_state(&resume.optimizer)?;
                let (seed, counter) = resume.state.rng;
                self.model.bert.mode.set_rng_state(seed, counter);
                resume.state
            }
            None => {
                self.model.bert.mode.set_seed(cfg.seed);
                TrainerState {
                    step: 0,
                    epoch: 0,
                    window: 0,
                    rng: self.model.bert.mode.rng_state(),
                    early_stopping: EarlyStopping::new(
                        cfg.metric.clone(),
                        cfg.mode,
                        cfg.patience,
                        cfg.min_delta,
                    ),
                    best: None,
                    epoch_loss: 0.0,
                    epoch_count: 0,
                    stopped_early: false,
                    history: Vec::new(),
                }
            }
        };
        self.model.bert.set_training(true);
        observer.train_start(total_steps);
        let mut outcome = FitOutcome::default();
        'epochs: while state.epoch < cfg.epochs && !state.stopped_early {
            let epoch = state.epoch;
            let order = sampler.epoch_order(epoch);
            let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).collect();
            let windows: Vec<&[&[usize]]> = batches.chunks(accum).collect();
            while state.window < windows.len() {
                let window = windows[state.window];
                state.window += 1;
                let started = std::time::Instant::now();
                let collated = window
                    .iter()
                    .map(|idx| {
                        self.collator
                            .collate(idx.iter().map(|&i| &train.examples[i]))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let total: usize = collated.iter().map(counted).sum();
                let Some((grads, window_loss)) = self.window_gradients(
                    &collated,
                    total,
                    &params,
                    embeddings.as_ref(),
                    state.step,
                )?
                else {
                    observer.message(&format!(
                        "warning: non-finite loss at step {}; step skipped",
                        state.step + 1
                    ));
                    continue;
                };
                let mut grads = grads;
                let (norm, bad) = if cfg.max_grad_norm > 0.0 {
                    let report = clip_grad_norm(&params, &mut grads, cfg.max_grad_norm)?;
                    (report.total_norm, report.non_finite)
                } else {
                    grad_norm(&params, &grads)?
                };
                if let Some(param) = bad {
                    if cfg.on_nonfinite == NonFinite::Skip {
                        observer.message(&format!(
                            "warning: non-finite gradient in `{param}` at step {}; step skipped",
                            state.step + 1
                        ));
                        continue;
                    }
                    return Err(TrainError::NonFinite {
                        what: "gradient",
                        step: state.step + 1,
                        param: Some(param),
                    });
                }
                let lr = schedule.lr_at(state.step);
                optimizer.set_lr(lr);
                optimizer.step(&grads)?;
                state.step += 1;
                state.epoch_loss += window_loss * total as f64;
                state.epoch_count += total;
                let examples: usize = collated.iter().map(|b| b.batch_size).sum();
                observer.step(&StepLog {
                    step: state.step,
                    total_steps,
                    epoch: epoch + 1,
                    loss: window_loss,
                    lr,
                    grad_norm: norm,
                    examples_per_second: examples as f64
                        / started.elapsed().as_secs_f64().max(1e-9),
                });
                let record = serde_json::json!({
                    "type": "train", "step": state.step, "epoch": epoch + 1, "loss": window_loss,
                    "lr": lr, "grad_norm": norm,
                });
                hooks.log(record.clone())?;
                state.history.push(record);
                let step = state.step;
                if let (Some(every), Some(valid)) = (cfg.eval_every, valid)
                    && every > 0
                    && step.is_multiple_of(every)
                    && self.validate(valid, epoch + 1, &mut state, observer, hooks)?
                {
                    state.stopped_early = true;
                }
                let end_of_epoch = state.window == windows.len();
                if end_of_epoch {
                    outcome.last_train_loss = state.epoch_loss / state.epoch_count.max(1) as f64;
                    if let Some(valid) = valid
                        && cfg.eval_every.is_none_or(|e| e == 0)
                        && self.validate(valid, epoch + 1, &mut state, observer, hooks)?
                    {
                        state.stopped_early = true;
                    }
                    state.epoch += 1;
                    state.window = 0;
                    state.epoch_loss = 0.0;
                    state.epoch_count = 0;
                }
                let periodic = cfg.save_every > 0 && step.is_multiple_of(cfg.save_every);
                let interrupted = hooks.interrupted();
                if periodic || end_of_epoch || interrupted || state.stopped_early {
                    state.rng = self.model.bert.mode.rng_state();
                    hooks.save_state(self.model, optimizer.as_ref(), &state)?;
                }
                if interrupted {
                    self.model.bert.set_training(false);
                    observer.train_end();
                    return Err(TrainError::Interrupted { step });
                }
                if state.stopped_early {
                    break 'epochs;
                }
                if end_of_epoch {
                    break;
                }
            }
            if state.window >= windows.len() {
                state.epoch += 1;
                state.window = 0;
            }
        }
        outcome.steps = state.step;
        outcome.epochs = state.epoch.min(cfg.epochs);
        outcome.best = state.best;
        outcome.stopped_early = state.stopped_early;
        self.model.bert.set_training(false);
        observer.train_end();
        Ok(outcome)
    }

    /// The summed gradients of one accumulation window (loss normalised by the window's counted targets), and its
    /// loss; `None` when the loss is not finite and the recipe says to skip such steps.
    fn window_gradients(
        &self,
        collated: &[Batch],
        total: usize,
        params: &[(String, candle_core::Var)],
        embeddings: Option<&candle_core::Var>,
        step: usize,
    ) -> Result<Option<(GradStore, f64)>> {
        let mut acc = GradAccumulator::new(params.iter().map(|(_, v)| v.clone()));
        let mut window_loss = 0.0;
        for batch in collated {
            let tensors = TensorBatch::new(batch, &self.device)?;
            let (loss, _) = self.model.loss_sum(&tensors)?;
            let loss = loss.affine(1.0 / total.max(1) as f64, 0.0)?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                if self.config.on_nonfinite == NonFinite::Skip {
                    return Ok(None);
                }
                return Err(TrainError::NonFinite {
                    what: "loss",
                    step: step + 1,
                    param: None,
                });
            }
            window_loss += value;
            let grads = loss.backward()?;
            acc.add(&grads)?;
            if let (Some(eps), Some(emb)) = (self.config.fgm_epsilon, embeddings) {
                self.adversarial_step(&tensors, emb, &grads, eps, total, &mut acc)?;
            }
        }
        Ok(Some((acc.take(Reduction::Sum)?, window_loss)))
    }

    /// Evaluates on the validation set; returns whether early stopping says stop.
    fn validate(
        &self,
        valid: &EncodedDataset,
        epoch: usize,
        state: &mut TrainerState,
        observer: &mut dyn Observer,
        hooks: &mut dyn FitHooks,
    ) -> Result<bool> {
        let step = state.step;
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
        hooks.log(record.clone())?;
        state.history.push(record);
        let decision = state.early_stopping.update(value);
        if decision == Decision::Improved {
            state.best = Some((value, step));
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
