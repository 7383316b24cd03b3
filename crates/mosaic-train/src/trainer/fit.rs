//! [`Trainer::fit`]: the loop itself — epochs of accumulation windows, validation and checkpoints at their
//! times, interrupts, and `best/` / `last/` at the end.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Var;
use mosaic_data::BatchSampler;

use super::state::{FitOutcome, TrainerState};
use super::task::{CheckpointInfo, EvalPoint, StepStats, TrainTask};
use super::window::WindowPlan;
use crate::collective::{Collective, GradientBuckets, ReduceStats};
use crate::early_stopping::Decision;
use crate::error::{Result, TrainError};
use crate::observer::{Observer, StepLog};
use crate::optim::Optimizer;
use crate::recipe::{Freeze, NonFinite, PeftSection, TrainSection};
use crate::resume::Found;
use crate::run_folder::RunFolder;
use crate::schedule::LrSchedule;

/// Runs training for one task.
pub struct Trainer<'a> {
    pub config: &'a TrainSection,
    /// Train an adapter (`[peft]`) instead of the parameters `train.freeze` leaves.
    pub peft: Option<&'a PeftSection>,
    /// Set (e.g. by a SIGINT/SIGTERM handler) to save a checkpoint and stop after the current step.
    pub stop: Option<&'a AtomicBool>,
    /// The ranks of a data-parallel run ([`SINGLE_PROCESS`](crate::collective::SINGLE_PROCESS) alone): each
    /// trains on its shard of every epoch, gradients are all-reduced once a step, rank 0 alone writes.
    pub collective: &'a dyn Collective,
}

/// What the loop works with, built once from the recipe and the task.
struct Setup {
    all: Vec<(String, Var)>,
    params: Vec<(String, Var)>,
    optimizer: Box<dyn Optimizer>,
    schedule: LrSchedule,
    sampler: BatchSampler,
    fgm: Option<(Var, f64)>,
    total_steps: usize,
    /// The adapter `[peft]` attached (kept for the run; its slots and the store hold it in the model).
    adapter: Option<mosaic_peft::Adapter>,
    /// Marks the parameters that do not train as frozen for the length of the run, so that no forward pass
    /// records their gradients (the fused linear op then skips the weight-gradient GEMM).
    _frozen: FrozenMarks,
}

/// Frozen marks (`mosaic_models::grad_mode::set_frozen`), removed again on drop.
struct FrozenMarks(Vec<Var>);

impl FrozenMarks {
    /// Every var of `all` that is not in `trainable` (by identity) and is not `keep`.
    fn new(all: &[(String, Var)], trainable: &[(String, Var)], keep: Option<&Var>) -> Self {
        let train: std::collections::HashSet<_> = trainable.iter().map(|(_, v)| v.id()).collect();
        let frozen: Vec<Var> = all
            .iter()
            .filter(|(_, v)| !train.contains(&v.id()) && keep.is_none_or(|k| k.id() != v.id()))
            .map(|(_, v)| v.clone())
            .collect();
        for v in &frozen {
            mosaic_models::grad_mode::set_frozen(v, true);
        }
        FrozenMarks(frozen)
    }
}

impl Drop for FrozenMarks {
    fn drop(&mut self) {
        for v in &self.0 {
            mosaic_models::grad_mode::set_frozen(v, false);
        }
    }
}

/// What one window did.
enum WindowDone {
    /// An optimizer step was taken; what its gradients' all-reduce moved.
    Stepped(ReduceStats),
    /// The loss or a gradient was not finite and `on_nonfinite = "skip"`.
    Skipped,
}

impl Trainer<'_> {
    /// Trains `task`, logging into `run`; `resume` continues a checkpointed run exactly. Saves `last/`, and
    /// `best/` too when no validation chose one.
    pub fn fit(
        &self,
        task: &mut dyn TrainTask,
        run: &mut RunFolder,
        resume: Option<Found>,
        observer: &mut dyn Observer,
    ) -> Result<FitOutcome> {
        let cfg = self.config;
        let mut setup = self.setup(task)?;
        let mut state = self.initial_state(task, &mut setup, run, resume)?;
        let mut outcome = FitOutcome {
            last_train_loss: f64::NAN,
            trainable_parameters: count(&setup.params),
            total_parameters: count(&setup.all),
            ..FitOutcome::default()
        };
        observer.message(&format!(
            "trainable parameters: {} of {} ({:.2}%){}",
            outcome.trainable_parameters,
            outcome.total_parameters,
            100.0 * outcome.trainable_parameters as f64 / outcome.total_parameters.max(1) as f64,
            match &setup.adapter {
                Some(adapter) => format!(" ({})", adapter.describe()),
                None if cfg.freeze == Freeze::None => String::new(),
                None => format!(" (train.freeze = \"{}\")", cfg.freeze),
            }
        ));
        let accum = cfg.grad_accum.max(1);
        let world = self.collective.world_size();
        if world > 1 {
            observer.message(&format!(
                "data parallel: {world} ranks ({}) × train.batch_size {} × train.grad_accum {accum} = a global \
                 batch of {}",
                self.collective.backend(),
                cfg.batch_size,
                world * cfg.batch_size * accum
            ));
            let extra = crate::collective::shard::padding(task.train_len(), world);
            if extra > 0 {
                observer.message(&format!(
                    "warning: {} training examples do not split evenly over {world} ranks; each epoch repeats {extra} \
                     of them so that every rank takes as many steps (as DistributedSampler pads)",
                    task.train_len()
                ));
            }
        }
        task.set_training(true);
        observer.train_start(setup.total_steps);
        // Wall time of the optimizer windows alone (forward, backward, step), for the log line below; it stays
        // out of report.json so that a resumed run reports what an uninterrupted one does.
        let mut step_seconds = 0.0f64;
        let mut reduced = ReduceStats::default();
        let first_step = state.step;
        let rank = self.collective.rank();
        'epochs: while state.epoch < cfg.epochs && !state.stopped_early {
            let epoch = state.epoch;
            task.start_epoch(epoch)?;
            let order =
                crate::collective::shard_order(&setup.sampler.epoch_order(epoch), rank, world);
            let batches: Vec<&[usize]> = order
                .chunks(cfg.batch_size)
                .filter(|b| b.len() >= task.min_batch())
                .collect();
            let windows: Vec<&[&[usize]]> = batches.chunks(accum).collect();
            while state.window < windows.len() {
                let window = windows[state.window];
                state.window += 1;
                let started = std::time::Instant::now();
                let done = self.window(task, &mut setup, &mut state, run, observer, window)?;
                step_seconds += started.elapsed().as_secs_f64();
                if let WindowDone::Stepped(stats) = done {
                    reduced.bytes += stats.bytes;
                    reduced.calls += stats.calls;
                    reduced.seconds += stats.seconds;
                }
                let step = state.step;
                let stepped = matches!(done, WindowDone::Stepped(_));
                if stepped
                    && let Some(every) = cfg.eval_every.filter(|&e| e > 0)
                    && step.is_multiple_of(every)
                {
                    self.validate(task, &mut state, run, observer)?;
                }
                let end_of_epoch = state.window == windows.len();
                if end_of_epoch {
                    outcome.last_train_loss = state.epoch_loss / state.epoch_count.max(1) as f64;
                    if cfg.eval_every.is_none_or(|e| e == 0) {
                        self.validate(task, &mut state, run, observer)?;
                    }
                    state.epoch += 1;
                    state.window = 0;
                    state.epoch_loss = 0.0;
                    state.epoch_count = 0;
                }
                let periodic = stepped && cfg.save_every > 0 && step.is_multiple_of(cfg.save_every);
                let interrupted = self.interrupted()?;
                if periodic || end_of_epoch || interrupted || state.stopped_early {
                    self.save_state(task, &setup, &mut state, run)?;
                }
                if interrupted {
                    task.set_training(false);
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
            if windows.is_empty() {
                state.epoch += 1;
                state.window = 0;
            }
        }
        task.set_training(false);
        observer.train_end();
        outcome.steps = state.step;
        if world > 1 {
            let steps = state.step.saturating_sub(first_step).max(1) as f64;
            observer.message(&format!(
                "data parallel: {world} ranks ({}); all-reduced {} a step in {} bucket(s), {:.4} s a step",
                self.collective.backend(),
                human_bytes(reduced.bytes as f64 / steps),
                // Less the presence vote; nothing when no step ran (a resume of a finished run).
                ((reduced.calls as f64 / steps).round() as usize).saturating_sub(1),
                reduced.seconds / steps,
            ));
        }
        outcome.epochs = state.epoch.min(cfg.epochs);
        outcome.best = state.best;
        outcome.stopped_early = state.stopped_early;
        let timed = outcome.steps.saturating_sub(first_step).max(1);
        observer.message(&format!(
            "trained {} steps over {} epochs ({:.3} s a step){}",
            outcome.steps,
            outcome.epochs,
            step_seconds / timed as f64,
            if outcome.stopped_early {
                format!(
                    " (stopped early: {} did not improve for {} evaluations)",
                    cfg.metric, cfg.patience
                )
            } else {
                String::new()
            }
        ));
        let info = CheckpointInfo {
            epoch: outcome.epochs,
            step: outcome.steps,
            metrics: Default::default(),
        };
        if run.writes() {
            task.save_checkpoint(&run.path("last"), &info)?;
            if outcome.best.is_none() {
                // No validation set: the last checkpoint is the best we know.
                task.save_checkpoint(&run.path("best"), &info)?;
            }
        }
        // The other ranks may read `best/` next (the held-out evaluation): wait until rank 0 has written it.
        self.collective.barrier()?;
        Ok(outcome)
    }

    /// The parameters, optimizer, schedule and sampler; refuses features the task cannot do, naming the key.
    fn setup(&self, task: &dyn TrainTask) -> Result<Setup> {
        let cfg = self.config;
        if task.train_len() == 0 {
            return Err(TrainError::Invalid("the training set is empty".into()));
        }
        let accum = cfg.grad_accum.max(1);
        if accum > 1
            && let Some(why) = task.accumulation_refusal()
        {
            return Err(TrainError::Invalid(format!(
                "recipe key `train.grad_accum`: {why}"
            )));
        }
        let fgm = match cfg.fgm_epsilon {
            Some(epsilon) => Some((
                task.fgm_embeddings().map_err(|why| {
                    TrainError::Invalid(format!("recipe key `train.fgm_epsilon`: {why}"))
                })?,
                epsilon,
            )),
            None => None,
        };
        let (params, adapter) = match self.peft {
            Some(peft) => {
                let model = task
                    .adaptable()
                    .map_err(|why| TrainError::Invalid(format!("[peft]: {why}")))?;
                let adapter = crate::adapters::attach(&model, peft, cfg.seed)?;
                (adapter.trainable(), Some(adapter))
            }
            None => (task.trainable(cfg.freeze)?, None),
        };
        // After attaching: the adapter's parameters are the model's too (resumable checkpoints restore them).
        let all = task.parameters();
        let optimizer =
            crate::recipe_optimizer::recipe_optimizer(params.clone(), cfg, |n| task.no_decay(n))?;
        // FGM perturbs the embeddings along their gradient, so they keep recording one even when frozen.
        let frozen = FrozenMarks::new(&all, &params, fgm.as_ref().map(|(v, _)| v));
        let sampler = BatchSampler::new(task.train_len(), cfg.batch_size, cfg.seed)?;
        let world = self.collective.world_size();
        let shard_len = task.train_len().div_ceil(world);
        let total_steps = steps_per_epoch(shard_len, cfg.batch_size, task.min_batch())
            .div_ceil(accum)
            * cfg.epochs;
        let schedule = LrSchedule::new(cfg.schedule, cfg.lr, cfg.warmup, total_steps);
        Ok(Setup {
            all,
            params,
            optimizer,
            schedule,
            sampler,
            fgm,
            total_steps,
            adapter,
            _frozen: frozen,
        })
    }

    /// A fresh state (dropout seeded with `train.seed`), or the checkpoint's with its weights, buffers,
    /// optimizer moments and dropout stream restored and `metrics.jsonl` rewritten as it stood.
    fn initial_state(
        &self,
        task: &dyn TrainTask,
        setup: &mut Setup,
        run: &mut RunFolder,
        resume: Option<Found>,
    ) -> Result<TrainerState> {
        let (rank, world) = (self.collective.rank(), self.collective.world_size());
        let Some(found) = resume else {
            let mut state = TrainerState::new(self.config, (0, 0), run.history().to_vec());
            state.world_size = world;
            // Rank 0's stream is the one a checkpoint records; each other rank's follows from it.
            task.dropout().set_seed(self.config.seed);
            state.rng = task.dropout().rng_state();
            task.dropout()
                .set_seed(crate::collective::rank_seed(self.config.seed, rank));
            return Ok(state);
        };
        if found.state.world_size != world {
            return Err(TrainError::Invalid(format!(
                "{}: the run was checkpointed by {} rank(s) and would resume with {world}; the batch order and \
                 dropout streams follow the world size, so resume it with the same number of processes",
                found.dir.display(),
                found.state.world_size
            )));
        }
        crate::resume::restore_params(&setup.all, &found.weights)?;
        if let Some(adapter) = &setup.adapter {
            adapter.refresh()?;
        }
        task.restore_buffers(&found.weights)?;
        setup.optimizer.load_state(&found.optimizer)?;
        let (seed, counter) = found.state.rng;
        task.dropout()
            .set_rng_state(crate::collective::rank_seed(seed, rank), counter);
        run.restore(&found.state.history)?;
        Ok(found.state)
    }

    /// One accumulation window: gradients, the non-finite rule, the optimizer step and its log record.
    fn window(
        &self,
        task: &dyn TrainTask,
        setup: &mut Setup,
        state: &mut TrainerState,
        run: &mut RunFolder,
        observer: &mut dyn Observer,
        window: &[&[usize]],
    ) -> Result<WindowDone> {
        let cfg = self.config;
        let started = std::time::Instant::now();
        let plan = WindowPlan {
            params: &setup.params,
            fgm: setup.fgm.as_ref().map(|(v, e)| (v, *e)),
            max_grad_norm: cfg.max_grad_norm,
            collective: self.collective,
            buckets: GradientBuckets::default(),
        };
        let done = match plan.run(task, window)? {
            Ok(done) => done,
            Err(bad) if cfg.on_nonfinite == NonFinite::Skip => {
                observer.message(&format!(
                    "warning: non-finite {}{} at step {}; step skipped",
                    bad.what,
                    bad.param.map(|p| format!(" in `{p}`")).unwrap_or_default(),
                    state.step + 1
                ));
                return Ok(WindowDone::Skipped);
            }
            Err(bad) => {
                return Err(TrainError::NonFinite {
                    what: bad.what,
                    step: state.step + 1,
                    param: bad.param,
                });
            }
        };
        let lr = setup.schedule.lr_at(state.step);
        setup.optimizer.set_lr(lr);
        setup.optimizer.step(&done.grads)?;
        let reduced = done.reduced;
        // A prefix computed from the parameters (projected, or prompt tuning's) follows their new values.
        if let Some(adapter) = &setup.adapter {
            adapter.refresh()?;
        }
        state.step += 1;
        state.epoch_loss += done.loss * done.counted as f64;
        state.epoch_count += done.counted;
        let extra = task.after_step(&StepStats {
            counted: done.counted,
            examples: done.examples,
        })?;
        observer.step(&StepLog {
            step: state.step,
            total_steps: setup.total_steps,
            epoch: state.epoch + 1,
            loss: done.loss,
            lr,
            grad_norm: done.grad_norm,
            examples_per_second: done.examples as f64 / started.elapsed().as_secs_f64().max(1e-9),
        });
        let mut record = serde_json::json!({
            "type": "train", "step": state.step, "epoch": state.epoch + 1, "loss": done.loss,
            "lr": lr, "grad_norm": done.grad_norm,
        });
        for (name, value) in &done.objectives {
            record[format!("loss_{name}")] = (*value).into();
        }
        for (key, value) in extra {
            record[key] = value;
        }
        // Bytes, not seconds: the log stays identical between a run and its exact resume.
        if self.collective.world_size() > 1 {
            record["allreduce_bytes"] = reduced.bytes.into();
        }
        run.log(record)?;
        Ok(WindowDone::Stepped(reduced))
    }

    /// Evaluates on the validation set (when the task has one), logs it, saves `best/` when the recipe's metric
    /// improved, and sets `stopped_early` when early stopping says stop.
    fn validate(
        &self,
        task: &dyn TrainTask,
        state: &mut TrainerState,
        run: &mut RunFolder,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let cfg = self.config;
        let at = EvalPoint {
            epoch: state.epoch + 1,
            step: state.step,
            train_loss: state.epoch_loss / state.epoch_count.max(1) as f64,
        };
        task.set_training(false);
        // Evaluation records no graph (`torch.no_grad()`). With several ranks, rank 0 evaluates and sends the
        // metrics, so that every rank takes the same early-stopping decision.
        let metrics = if self.collective.rank() == 0 {
            mosaic_models::no_grad(|| task.validate(observer, &at))
        } else {
            Ok(None)
        };
        task.set_training(true);
        let Some(metrics) = self.share_metrics(metrics?)? else {
            return Ok(());
        };
        // A NaN metric arrives as JSON null: measured, but never an improvement.
        let value = metrics
            .get(&cfg.metric)
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .ok_or_else(|| {
                TrainError::Invalid(format!(
                    "recipe key `train.metric`: `{}` is not measured by this task (it measures {})",
                    cfg.metric,
                    metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
        let mut record = serde_json::json!({
            "type": "eval", "split": "valid", "epoch": at.epoch, "step": at.step,
        });
        for (k, v) in &metrics {
            record[k] = v.clone();
        }
        run.log(record)?;
        let decision = state.early_stopping.update(value);
        if decision == Decision::Improved {
            state.best = Some((value, at.step));
            let info = CheckpointInfo {
                epoch: at.epoch,
                step: at.step,
                metrics,
            };
            if run.writes() {
                task.save_checkpoint(&run.path("best"), &info)?;
            }
        }
        if cfg.patience > 0 && decision == Decision::Stop {
            state.stopped_early = true;
        }
        Ok(())
    }

    /// Writes a resumable checkpoint of `state` under `checkpoints/`.
    fn save_state(
        &self,
        task: &dyn TrainTask,
        setup: &Setup,
        state: &mut TrainerState,
        run: &RunFolder,
    ) -> Result<()> {
        if !run.writes() {
            return Ok(());
        }
        // Rank 0's stream (the recipe's seed): each rank derives its own from it on resume.
        state.rng = task.dropout().rng_state();
        state.history = run.history().to_vec();
        crate::resume::save(
            &run.path("checkpoints"),
            &setup.all,
            &task.buffers()?,
            setup.optimizer.as_ref(),
            state,
            self.config.save_total_limit,
        )
    }
}

impl Trainer<'_> {
    /// Whether to stop after this step: a signal on any rank stops them all at the same step.
    fn interrupted(&self) -> Result<bool> {
        let here = self.stop.is_some_and(|s| s.load(Ordering::Relaxed));
        if self.collective.world_size() <= 1 {
            return Ok(here);
        }
        let mut any = [f64::from(u8::from(here))];
        self.collective.all_reduce_sum_f64(&mut any)?;
        Ok(any[0] > 0.0)
    }

    /// Rank 0's validation metrics on every rank (JSON; `None` when the task has no validation set).
    fn share_metrics(
        &self,
        metrics: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        if self.collective.world_size() <= 1 {
            return Ok(metrics);
        }
        let mut bytes =
            serde_json::to_vec(&metrics).map_err(|e| TrainError::Collective(e.to_string()))?;
        self.collective.broadcast(&mut bytes, 0)?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Collective(e.to_string()))
    }
}

/// `bytes` as B, KiB or MiB.
fn human_bytes(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

/// Numbers held by `params`.
fn count(params: &[(String, Var)]) -> usize {
    params.iter().map(|(_, v)| v.elem_count()).sum()
}

/// Batches of an epoch: the last one is dropped when it is shorter than `min_batch`.
fn steps_per_epoch(len: usize, batch_size: usize, min_batch: usize) -> usize {
    let batch_size = batch_size.max(1);
    let full = len / batch_size;
    let rest = len % batch_size;
    full + usize::from(rest > 0 && rest >= min_batch)
}
