//! Causal-LM training (`task = "causal-lm"`): instruction tuning with the loss on response tokens only
//! (`method = "instruction"`), or plain LM training on text (`method = "lm"`), for GPT-2.
//!
//! [`run`] writes the same run folder as the classification pipeline: `recipe.toml`, `metrics.jsonl` (train steps
//! and per-epoch validation loss / perplexity), `report.json` (perplexity before and after), `training.svg`, and
//! `best/` and `last/` checkpoints (a Hugging Face GPT-2 folder with the tokenizer files and a `mosaic.json` saying
//! `"task": "causal-lm"`). [`evaluate_checkpoint`] is what `mosaic eval` runs on such a checkpoint.
//!
//! Instruction runs also score greedy answers to held-out instructions by exact match, before and after training
//! ([`held_out`]). `init = "random"` trains from a fresh seeded initialisation of the folder's `config.json`;
//! `train.freeze` picks the trainable blocks ([`crate::freeze::trainable_gpt2`]); resumable checkpoints under
//! `checkpoints/` (every `save_every` steps, each epoch, and on SIGINT/SIGTERM) let `--resume` continue exactly.
//!
//! With `data.packing`, several training examples share each sequence ([`data::pack_examples`]): positions restart
//! and attention stays within each example, so the loss is that of the examples alone.

pub mod data;
pub mod held_out;
pub mod loss;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;

use candle_core::{Device, Var};
use mosaic_data::{BatchSampler, Encoder};
use mosaic_models::{Gpt2, Gpt2Config, ModelSource};
use mosaic_prompt::{ChatTemplate, InstructionFormat};

pub use data::{LmBatch, LmEncoder, LmExample, LoadStats, PackedLayout, RowFormat, pack_examples};
pub use held_out::{HeldOut, HeldOutItem, HeldOutScore};
pub use loss::{LmEvaluation, evaluate, window_gradients};

use crate::clip::{clip_grad_norm, grad_norm};
use crate::early_stopping::{Decision, EarlyStopping, Mode};
use crate::error::{Result, TrainError};
use crate::metrics::exact_match::ExactMatch;
use crate::observer::{Observer, StepLog};
use crate::optim::Optimizer;
use crate::pipeline::{RunOptions, RunSummary};
use crate::recipe::{Freeze, Init, Method, Recipe};
use crate::schedule::LrSchedule;
use crate::trainer::TrainerState;

/// What a causal-LM checkpoint's `mosaic.json` says: enough to read data the way training did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LmMeta {
    /// Always `"causal-lm"`.
    pub task: String,
    /// `"instruction"` or `"lm"`.
    pub method: String,
    /// The instruction format (`alpaca`, `chatml`, `chat-template`); absent for plain LM training.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default = "default_messages_field")]
    pub messages_field: String,
    #[serde(default = "default_text_field")]
    pub text_field: String,
    pub max_length: usize,
    #[serde(default)]
    pub epoch: usize,
    #[serde(default)]
    pub step: usize,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

fn default_messages_field() -> String {
    "messages".into()
}

fn default_text_field() -> String {
    "text".into()
}

fn instruction_format(name: &str) -> Result<InstructionFormat> {
    name.parse::<InstructionFormat>()
        .map_err(|e| TrainError::Invalid(format!("data.format: {e}")))
}

/// The EOS id: the config's, else the tokenizer's `<|endoftext|>`.
fn eos_id(model: &Gpt2, encoder: &Encoder) -> Result<u32> {
    model
        .config
        .eos_token_ids
        .first()
        .copied()
        .or_else(|| encoder.tokenizer().token_to_id("<|endoftext|>"))
        .ok_or_else(|| TrainError::Invalid("the model has no eos_token_id".into()))
}

/// The encoder for `meta`'s data, on the model in `model_dir`.
fn lm_encoder(meta: &LmMeta, model_dir: &Path, model: &Gpt2) -> Result<LmEncoder> {
    let encoder = Encoder::from_file(model_dir.join("tokenizer.json"))?;
    let format = match meta.format.as_deref() {
        Some(name) if meta.method == "instruction" => {
            let template: ChatTemplate = instruction_format(name)?
                .template(Some(model_dir))
                .map_err(|e| TrainError::Invalid(format!("data.format: {e}")))?;
            RowFormat::Instruction {
                template: Box::new(template),
                messages_field: meta.messages_field.clone(),
            }
        }
        _ => RowFormat::Text {
            text_field: meta.text_field.clone(),
        },
    };
    let eos_id = eos_id(model, &encoder)?;
    Ok(LmEncoder {
        encoder,
        format,
        eos_id,
        max_length: meta.max_length,
    })
}

/// Saves a checkpoint folder atomically (written beside it, then renamed over it).
fn save_checkpoint(model: &Gpt2, meta: &LmMeta, model_dir: &Path, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::file(&tmp, e))?;
    }
    model.save(&tmp)?;
    mosaic_models::folder::copy_tokenizer_files(model_dir, &tmp)?;
    let json =
        serde_json::to_string_pretty(meta).map_err(|e| TrainError::Invalid(e.to_string()))?;
    mosaic_models::folder::write_atomic(&tmp.join("mosaic.json"), json.as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::file(dir, e))
}

/// Whether `dir` holds a causal-LM checkpoint (its `mosaic.json` says `"task": "causal-lm"`).
pub fn is_causal_lm_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("mosaic.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["task"] == "causal-lm")
}

fn read_meta(dir: &Path) -> Result<LmMeta> {
    let meta_path = dir.join("mosaic.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| TrainError::file(&meta_path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::file(&meta_path, e))
}

/// Exact match of a causal-LM checkpoint's greedy answers to the instructions of a JSONL file (per `type` too);
/// `None` for a checkpoint trained on plain text, which has no answers to compare.
pub fn exact_match_checkpoint(
    dir: &Path,
    data: &Path,
    device: &Device,
) -> Result<Option<HeldOutScore>> {
    let meta = read_meta(dir)?;
    if meta.method != "instruction" {
        return Ok(None);
    }
    let model = Gpt2::from_folder(dir, 0, device)?;
    let encoder = lm_encoder(&meta, dir, &model)?;
    let held_out = HeldOut::load(&encoder, data, model.config.n_positions)?;
    held_out.score(&model, &encoder).map(Some)
}

/// Loss and perplexity of a causal-LM checkpoint on a JSONL file read the way training read its data.
pub fn evaluate_checkpoint(
    dir: &Path,
    data: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<LmEvaluation> {
    let meta = read_meta(dir)?;
    let model = Gpt2::from_folder(dir, 0, device)?;
    let encoder = lm_encoder(&meta, dir, &model)?;
    let (examples, _) = encoder.load(data)?;
    let pad = encoder.encoder.pad_id();
    evaluate(&model, &examples, batch_size, pad, device)
}

fn log(file: &mut std::fs::File, path: &Path, record: &serde_json::Value) -> Result<()> {
    writeln!(file, "{record}").map_err(|e| TrainError::file(path, e))
}

fn eval_json(e: &LmEvaluation) -> serde_json::Value {
    serde_json::json!({ "loss": e.loss, "perplexity": e.perplexity, "tokens": e.tokens })
}

/// Where `metrics.jsonl` lines go: the file, and the run's history (saved in every resumable checkpoint, so a
/// resumed run rewrites the log exactly as it stood).
struct RunLog {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl RunLog {
    fn write(&mut self, state: &mut TrainerState, record: serde_json::Value) -> Result<()> {
        log(&mut self.file, &self.path, &record)?;
        state.history.push(record);
        Ok(())
    }
}

/// The model to train: the folder's weights, or (`init = "random"`) a fresh seeded initialisation from its
/// `config.json`.
fn load_model(recipe: &Recipe, model_dir: &Path, device: &Device) -> Result<Gpt2> {
    let seed = recipe.train.seed;
    if recipe.init == Init::Random {
        let config = Gpt2Config::read(&model_dir.join("config.json"))?;
        Ok(Gpt2::new(config, seed, device)?)
    } else {
        Ok(Gpt2::from_folder(model_dir, seed, device)?)
    }
}

fn exact_match_json(score: &ExactMatch) -> serde_json::Value {
    let by_type: serde_json::Map<String, serde_json::Value> = score
        .by_group
        .iter()
        .map(|(g, s)| {
            (
                g.clone(),
                serde_json::json!({ "exact_match": s.exact_match, "count": s.count }),
            )
        })
        .collect();
    serde_json::json!({ "exact_match": score.exact_match, "count": score.count, "by_type": by_type })
}

/// `exact_match: 0.0300 (math 0.1000, …)` for the console.
fn exact_match_line(score: &ExactMatch) -> String {
    let mut line = format!("{:.4}", score.exact_match);
    if !score.by_group.is_empty() {
        let parts: Vec<String> = score
            .by_group
            .iter()
            .map(|(g, s)| format!("{g} {:.4}", s.exact_match))
            .collect();
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    line
}

/// The record of `history` marked `"before": true` on `split` (written before training started).
fn before_record<'a>(
    history: &'a [serde_json::Value],
    split: &str,
    key: &str,
) -> Option<&'a serde_json::Value> {
    history
        .iter()
        .find(|r| r["before"] == true && r["split"] == split && r.get(key).is_some())
}

/// The mean training loss of the last epoch in `history` (token-weighted, as the loop sums it).
fn last_epoch_train_loss(history: &[serde_json::Value]) -> f64 {
    let train: Vec<&serde_json::Value> = history.iter().filter(|r| r["type"] == "train").collect();
    let Some(last_epoch) = train.last().and_then(|r| r["epoch"].as_u64()) else {
        return f64::NAN;
    };
    let (mut sum, mut tokens) = (0.0, 0usize);
    for r in train
        .iter()
        .filter(|r| r["epoch"].as_u64() == Some(last_epoch))
    {
        let n = r["tokens"].as_u64().unwrap_or(0) as usize;
        sum += r["loss"].as_f64().unwrap_or(f64::NAN) * n as f64;
        tokens += n;
    }
    sum / tokens.max(1) as f64
}

/// Trains a causal LM as `recipe` says and writes its run folder; with `options.resume`, continues from the last
/// resumable checkpoint exactly (the run ends as an uninterrupted one would), and with `options.stop` set, saves
/// one and stops after the current step.
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    let cfg = &recipe.train;
    let device = Device::Cpu;
    let output = recipe.output.clone();
    let checkpoints = output.join("checkpoints");
    let found = if options.resume {
        let found = crate::resume::load_latest(&checkpoints)?;
        observer.message(&format!(
            "resuming from {} (step {})",
            found.dir.display(),
            found.state.step
        ));
        Some(found)
    } else {
        None
    };
    let source = ModelSource::parse(&recipe.model);
    observer.message(&format!("model: {}", source.spec()));
    let model_dir = source.resolve()?;
    let model = load_model(recipe, &model_dir, &device)?;
    if recipe.init == Init::Random && found.is_none() {
        observer.message(&format!(
            "init = \"random\": weights initialised from config.json with seed {}",
            cfg.seed
        ));
    }
    let max_length = recipe
        .data
        .max_length
        .unwrap_or(model.config.n_positions)
        .min(model.config.n_positions);
    let method = if recipe.method == Method::Lm {
        "lm"
    } else {
        "instruction"
    };
    let mut meta = LmMeta {
        task: "causal-lm".into(),
        method: method.into(),
        format: (recipe.method == Method::Instruction).then(|| {
            recipe
                .data
                .format
                .clone()
                .unwrap_or_else(|| "alpaca".into())
        }),
        messages_field: recipe
            .data
            .messages_field
            .clone()
            .unwrap_or_else(default_messages_field),
        text_field: recipe.data.text_field.clone(),
        max_length,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let encoder = lm_encoder(&meta, &model_dir, &model)?;
    let pad_id = encoder.encoder.pad_id();
    let load = |path: &Path, observer: &mut dyn Observer| -> Result<Vec<LmExample>> {
        let (examples, stats) = encoder.load(path)?;
        if stats.truncated > 0 {
            observer.message(&format!(
                "warning: {}: {} examples truncated to {max_length} tokens",
                path.display(),
                stats.truncated
            ));
        }
        if stats.dropped > 0 {
            observer.message(&format!(
                "warning: {}: {} examples dropped (no response token left within {max_length} tokens)",
                path.display(),
                stats.dropped
            ));
        }
        Ok(examples)
    };
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let train = load(train_path, observer)?;
    // Several samples per sequence, positions and attention kept per sample; validation stays unpacked.
    let train = if recipe.data.packing {
        let n = train.len();
        let packed = pack_examples(train, max_length)?;
        observer.message(&format!(
            "packing: {n} examples into {} sequences of at most {max_length} tokens",
            packed.len()
        ));
        packed
    } else {
        train
    };
    let valid = match &recipe.data.valid {
        Some(path) => Some(load(path, observer)?),
        None => None,
    };
    // Instruction runs also generate answers to held-out instructions (the test set, else the validation set)
    // and score them by exact match, before and after training.
    let held_out = match (
        recipe.method,
        recipe.data.test.as_ref().or(recipe.data.valid.as_ref()),
    ) {
        (Method::Instruction, Some(path)) => {
            let split = if recipe.data.test.is_some() {
                "test"
            } else {
                "valid"
            };
            Some((
                split,
                HeldOut::load(&encoder, path, model.config.n_positions)?,
            ))
        }
        _ => None,
    };

    std::fs::create_dir_all(&output).map_err(|e| TrainError::file(&output, e))?;
    mosaic_models::folder::write_atomic(
        &output.join("recipe.toml"),
        recipe.to_toml_string().as_bytes(),
    )?;
    let metrics_path = output.join("metrics.jsonl");
    let mut run_log = RunLog {
        file: std::fs::File::create(&metrics_path)
            .map_err(|e| TrainError::file(&metrics_path, e))?,
        path: metrics_path,
    };
    let eval_batch = cfg.batch_size * 2;

    let all_params: Vec<(String, Var)> = model.params.all();
    let total_parameters: usize = all_params.iter().map(|(_, v)| v.elem_count()).sum();
    let params = crate::freeze::trainable_gpt2(
        all_params.clone(),
        cfg.freeze,
        model.transformer.num_layers(),
        model.config.tie_word_embeddings,
    )?;
    let trainable_parameters: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    observer.message(&format!(
        "trainable parameters: {trainable_parameters} of {total_parameters}{}",
        if cfg.freeze == Freeze::None {
            String::new()
        } else {
            format!(" (train.freeze = \"{}\")", cfg.freeze)
        }
    ));
    let mut optimizer = crate::recipe_optimizer::recipe_optimizer(
        params.clone(),
        cfg,
        crate::optim::default_no_decay,
    )?;

    let mut state = match found {
        Some(found) => {
            // The weights, optimizer moments and dropout stream as they were, and the log up to that step.
            crate::resume::restore_params(&all_params, &found.weights)?;
            optimizer.load_state(&found.optimizer)?;
            let (seed, counter) = found.state.rng;
            model.mode.set_rng_state(seed, counter);
            for record in &found.state.history {
                log(&mut run_log.file, &run_log.path, record)?;
            }
            found.state
        }
        None => {
            let mut state = TrainerState {
                step: 0,
                epoch: 0,
                window: 0,
                rng: (cfg.seed, 0),
                early_stopping: EarlyStopping::new("loss", Mode::Min, cfg.patience, cfg.min_delta),
                best: None,
                epoch_loss: 0.0,
                epoch_count: 0,
                stopped_early: false,
                history: Vec::new(),
            };
            if let Some(v) = &valid {
                let e = evaluate(&model, v, eval_batch, pad_id, &device)?;
                observer.message(&format!(
                    "before training: valid loss {:.4}, perplexity {:.2}",
                    e.loss, e.perplexity
                ));
                let mut record = eval_json(&e);
                record["type"] = "eval".into();
                record["split"] = "valid".into();
                record["before"] = true.into();
                run_log.write(&mut state, record)?;
            }
            if let Some((split, set)) = &held_out {
                let scored = set.score(&model, &encoder)?;
                observer.message(&format!(
                    "before training: {split} exact_match {}",
                    exact_match_line(&scored.score)
                ));
                let mut record = exact_match_json(&scored.score);
                record["type"] = "eval".into();
                record["split"] = (*split).into();
                record["before"] = true.into();
                run_log.write(&mut state, record)?;
            }
            model.mode.set_seed(cfg.seed);
            state.rng = model.mode.rng_state();
            state
        }
    };

    let sampler = BatchSampler::new(train.len(), cfg.batch_size, cfg.seed)?;
    let accum = cfg.grad_accum.max(1);
    let total_steps = sampler.batches_per_epoch().div_ceil(accum) * cfg.epochs;
    let schedule = LrSchedule::new(cfg.schedule, cfg.lr, cfg.warmup, total_steps);
    model.set_training(true);
    observer.train_start(total_steps);
    while state.epoch < cfg.epochs && !state.stopped_early {
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
                .map(|idx| LmBatch::collate(idx.iter().map(|&i| &train[i]), pad_id, &device))
                .collect::<Result<Vec<_>>>()?;
            let (mut grads, window_loss) = window_gradients(&model, &collated, &params)?;
            let (norm, bad) = if cfg.max_grad_norm > 0.0 {
                let report = clip_grad_norm(&params, &mut grads, cfg.max_grad_norm)?;
                (report.total_norm, report.non_finite)
            } else {
                grad_norm(&params, &grads)?
            };
            let finite = window_loss.is_finite() && bad.is_none();
            if !finite && cfg.on_nonfinite != crate::recipe::NonFinite::Skip {
                return Err(TrainError::NonFinite {
                    what: if window_loss.is_finite() {
                        "gradient"
                    } else {
                        "loss"
                    },
                    step: state.step + 1,
                    param: bad,
                });
            }
            if finite {
                let lr = schedule.lr_at(state.step);
                optimizer.set_lr(lr);
                optimizer.step(&grads)?;
                state.step += 1;
                let tokens: usize = collated.iter().map(|b| b.counted).sum();
                let examples: usize = window.iter().map(|w| w.len()).sum();
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
                    "lr": lr, "grad_norm": norm, "tokens": tokens,
                });
                run_log.write(&mut state, record)?;
            } else {
                observer.message(&format!(
                    "warning: non-finite loss or gradient at step {}; step skipped",
                    state.step + 1
                ));
            }
            let step = state.step;
            let end_of_epoch = state.window == windows.len();
            if end_of_epoch {
                meta.epoch = epoch + 1;
                meta.step = step;
                if let Some(v) = &valid {
                    let e = evaluate(&model, v, eval_batch, pad_id, &device)?;
                    observer.message(&format!(
                        "epoch {}: valid loss {:.4}, perplexity {:.2}",
                        epoch + 1,
                        e.loss,
                        e.perplexity
                    ));
                    let mut record = eval_json(&e);
                    record["type"] = "eval".into();
                    record["split"] = "valid".into();
                    record["epoch"] = (epoch + 1).into();
                    record["step"] = step.into();
                    run_log.write(&mut state, record)?;
                    match state.early_stopping.update(e.loss) {
                        Decision::Improved => {
                            state.best = Some((e.loss, step));
                            let mut m = meta.clone();
                            m.metrics = eval_json(&e).as_object().cloned().unwrap_or_default();
                            save_checkpoint(&model, &m, &model_dir, &output.join("best"))?;
                        }
                        Decision::Stop if cfg.patience > 0 => state.stopped_early = true,
                        _ => {}
                    }
                }
                state.epoch += 1;
                state.window = 0;
            }
            let periodic = finite && cfg.save_every > 0 && step.is_multiple_of(cfg.save_every);
            let interrupted = options.stop.is_some_and(|s| s.load(Ordering::Relaxed));
            if periodic || end_of_epoch || interrupted {
                state.rng = model.mode.rng_state();
                crate::resume::save_params(
                    &checkpoints,
                    &all_params,
                    optimizer.as_ref(),
                    &state,
                    cfg.save_total_limit,
                )?;
            }
            if interrupted {
                model.set_training(false);
                observer.train_end();
                return Err(TrainError::Interrupted { step });
            }
            if end_of_epoch {
                break;
            }
        }
    }
    model.set_training(false);
    observer.train_end();
    if state.stopped_early {
        observer.message(&format!(
            "stopped early after epoch {} (valid loss did not improve for {} epochs)",
            state.epoch, cfg.patience
        ));
    }
    meta.epoch = state.epoch;
    meta.step = state.step;
    save_checkpoint(&model, &meta, &model_dir, &output.join("last"))?;
    let best_dir = output.join("best");
    if state.best.is_none() {
        // No validation set: the last checkpoint is the best we know.
        save_checkpoint(&model, &meta, &model_dir, &best_dir)?;
    }
    let best_model = Gpt2::from_folder(&best_dir, cfg.seed, &device)?;
    let mut history = state.history.clone();
    let mut final_log = |record: serde_json::Value, history: &mut Vec<serde_json::Value>| {
        history.push(record.clone());
        log(&mut run_log.file, &run_log.path, &record)
    };
    let after = match &valid {
        Some(v) => {
            let e = evaluate(&best_model, v, eval_batch, pad_id, &device)?;
            observer.message(&format!(
                "after training (best checkpoint): valid loss {:.4}, perplexity {:.2}",
                e.loss, e.perplexity
            ));
            let mut record = eval_json(&e);
            record["type"] = "eval".into();
            record["split"] = "valid".into();
            record["final"] = true.into();
            final_log(record, &mut history)?;
            Some(e)
        }
        None => None,
    };
    let mut exact_match = None;
    if let Some((split, set)) = &held_out {
        let scored = set.score(&best_model, &encoder)?;
        let before = before_record(&history, split, "exact_match").cloned();
        let before_value = before.as_ref().and_then(|r| r["exact_match"].as_f64());
        let before_by_type = before.as_ref().map(|r| r["by_type"].clone());
        observer.message(&format!(
            "exact_match: {} → {:.4} after ({split}, {} examples)",
            before_value.map_or("?".to_string(), |b| format!("{b:.4} before")),
            scored.score.exact_match,
            scored.score.count
        ));
        for (group, s) in &scored.score.by_group {
            let b = before_by_type
                .as_ref()
                .and_then(|t| t[group.as_str()]["exact_match"].as_f64());
            observer.message(&format!(
                "  {group}: {} → {:.4} after ({} examples)",
                b.map_or("?".to_string(), |b| format!("{b:.4} before")),
                s.exact_match,
                s.count
            ));
        }
        let mut record = exact_match_json(&scored.score);
        record["type"] = "eval".into();
        record["split"] = (*split).into();
        record["final"] = true.into();
        final_log(record, &mut history)?;
        exact_match = Some(serde_json::json!({
            "split": split,
            "before": before.map(|r| serde_json::json!({
                "exact_match": r["exact_match"], "count": r["count"], "by_type": r["by_type"],
            })),
            "after": exact_match_json(&scored.score),
            "predictions": set.items.iter().zip(&scored.predictions).map(|(item, p)| serde_json::json!({
                "reference": item.reference, "prediction": p, "type": item.group,
            })).collect::<Vec<_>>(),
        }));
    }
    let before = before_record(&history, "valid", "perplexity").map(|r| {
        serde_json::json!({ "loss": r["loss"], "perplexity": r["perplexity"], "tokens": r["tokens"] })
    });
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "init": recipe.init,
        "format": meta.format,
        "max_length": max_length,
        "train_examples": train.len(),
        "valid_examples": valid.as_ref().map(Vec::len),
        "steps": state.step,
        "epochs": state.epoch,
        "stopped_early": state.stopped_early,
        "train_loss": last_epoch_train_loss(&history),
        "parameters": total_parameters,
        "trainable_parameters": trainable_parameters,
        "freeze": cfg.freeze.to_string(),
        "before": before,
        "after": after.as_ref().map(eval_json),
        "exact_match": exact_match,
    });
    let text =
        serde_json::to_string_pretty(&report).map_err(|e| TrainError::Invalid(e.to_string()))?;
    mosaic_models::folder::write_atomic(&output.join("report.json"), text.as_bytes())?;
    crate::plot::write_training_plot(&history, "perplexity", &output.join("training.svg"))?;
    Ok(RunSummary {
        output,
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}
