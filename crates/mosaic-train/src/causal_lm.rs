//! Causal-LM training (`task = "causal-lm"`): instruction tuning with the loss on response tokens only
//! (`method = "instruction"`), or plain LM training on text (`method = "lm"`), for GPT-2.
//!
//! [`run`] writes the same run folder as the classification pipeline: `recipe.toml`, `metrics.jsonl` (train steps
//! and per-epoch validation loss / perplexity), `report.json` (perplexity before and after), and `best/` and `last/`
//! checkpoints (a Hugging Face GPT-2 folder with the tokenizer files and a `mosaic.json` saying `"task":
//! "causal-lm"`). [`evaluate_checkpoint`] is what `mosaic eval` runs on such a checkpoint.
//!
//! `data.packing = true` packs several training examples into each `max_length` sequence ([`pack_examples`]):
//! positions restart per example and attention never crosses examples (segment ids in the attention kernel).

pub mod data;
pub mod loss;

use std::io::Write;
use std::path::Path;

use candle_core::{Device, Var};
use mosaic_data::{BatchSampler, Encoder};
use mosaic_models::{Gpt2, ModelSource};
use mosaic_prompt::{ChatTemplate, InstructionFormat};

pub use data::{LmBatch, LmEncoder, LmExample, LoadStats, PackedLayout, RowFormat, pack_examples};
pub use loss::{LmEvaluation, evaluate, window_gradients};

use crate::clip::{clip_grad_norm, grad_norm};
use crate::error::{Result, TrainError};
use crate::observer::{Observer, StepLog};
use crate::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use crate::pipeline::{RunOptions, RunSummary};
use crate::recipe::{Freeze, Method, OptimizerKind, Recipe};
use crate::schedule::LrSchedule;

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

/// Loss and perplexity of a causal-LM checkpoint on a JSONL file read the way training read its data.
pub fn evaluate_checkpoint(
    dir: &Path,
    data: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<LmEvaluation> {
    let meta_path = dir.join("mosaic.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| TrainError::file(&meta_path, e))?;
    let meta: LmMeta = serde_json::from_str(&text).map_err(|e| TrainError::file(&meta_path, e))?;
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

/// Trains a causal LM as `recipe` says and writes its run folder. Resuming is not supported yet.
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    if options.resume {
        return Err(TrainError::Invalid(
            "--resume is not supported for causal-lm recipes yet".into(),
        ));
    }
    if recipe.train.freeze != Freeze::None {
        return Err(TrainError::Invalid(
            "recipe key `train.freeze`: freezing is not supported for causal-lm recipes yet".into(),
        ));
    }
    let cfg = &recipe.train;
    let device = Device::Cpu;
    let source = ModelSource::parse(&recipe.model);
    observer.message(&format!("model: {}", source.spec()));
    let model_dir = source.resolve()?;
    let model = Gpt2::from_folder(&model_dir, cfg.seed, &device)?;
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

    let output = recipe.output.clone();
    std::fs::create_dir_all(&output).map_err(|e| TrainError::file(&output, e))?;
    mosaic_models::folder::write_atomic(
        &output.join("recipe.toml"),
        recipe.to_toml_string().as_bytes(),
    )?;
    let metrics_path = output.join("metrics.jsonl");
    let mut metrics =
        std::fs::File::create(&metrics_path).map_err(|e| TrainError::file(&metrics_path, e))?;
    let eval_batch = cfg.batch_size * 2;
    let before = match &valid {
        Some(v) => {
            let e = evaluate(&model, v, eval_batch, pad_id, &device)?;
            observer.message(&format!(
                "before training: valid loss {:.4}, perplexity {:.2}",
                e.loss, e.perplexity
            ));
            Some(e)
        }
        None => None,
    };

    let params: Vec<(String, Var)> = model.params.all();
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
    let total_steps = sampler.batches_per_epoch().div_ceil(accum) * cfg.epochs;
    let schedule = LrSchedule::new(cfg.schedule, cfg.lr, cfg.warmup, total_steps);
    model.mode.set_seed(cfg.seed);
    model.set_training(true);
    observer.train_start(total_steps);
    let mut step = 0;
    let mut best: Option<f64> = None;
    let mut last_train_loss = f64::NAN;
    for epoch in 0..cfg.epochs {
        let order = sampler.epoch_order(epoch);
        let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).collect();
        let (mut epoch_loss, mut epoch_tokens) = (0.0, 0usize);
        for window in batches.chunks(accum) {
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
            if !window_loss.is_finite() || bad.is_some() {
                if cfg.on_nonfinite == crate::recipe::NonFinite::Skip {
                    observer.message(&format!(
                        "warning: non-finite loss or gradient at step {}; step skipped",
                        step + 1
                    ));
                    continue;
                }
                return Err(TrainError::NonFinite {
                    what: if window_loss.is_finite() {
                        "gradient"
                    } else {
                        "loss"
                    },
                    step: step + 1,
                    param: bad,
                });
            }
            let lr = schedule.lr_at(step);
            optimizer.set_lr(lr);
            optimizer.step(&grads)?;
            step += 1;
            let tokens: usize = collated.iter().map(|b| b.counted).sum();
            epoch_loss += window_loss * tokens as f64;
            epoch_tokens += tokens;
            let examples: usize = window.iter().map(|w| w.len()).sum();
            observer.step(&StepLog {
                step,
                total_steps,
                epoch: epoch + 1,
                loss: window_loss,
                lr,
                grad_norm: norm,
                examples_per_second: examples as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
            log(
                &mut metrics,
                &metrics_path,
                &serde_json::json!({
                    "type": "train", "step": step, "epoch": epoch + 1, "loss": window_loss,
                    "lr": lr, "grad_norm": norm, "tokens": tokens,
                }),
            )?;
        }
        last_train_loss = epoch_loss / epoch_tokens.max(1) as f64;
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
            log(&mut metrics, &metrics_path, &record)?;
            if best.is_none_or(|b| e.loss < b) {
                best = Some(e.loss);
                let mut m = meta.clone();
                m.metrics = eval_json(&e).as_object().cloned().unwrap_or_default();
                save_checkpoint(&model, &m, &model_dir, &output.join("best"))?;
            }
        }
    }
    model.set_training(false);
    observer.train_end();
    save_checkpoint(&model, &meta, &model_dir, &output.join("last"))?;
    let best_dir = output.join("best");
    if best.is_none() {
        // No validation set: the last checkpoint is the best we know.
        save_checkpoint(&model, &meta, &model_dir, &best_dir)?;
    }
    let after = match &valid {
        Some(v) => {
            let best_model = Gpt2::from_folder(&best_dir, cfg.seed, &device)?;
            let e = evaluate(&best_model, v, eval_batch, pad_id, &device)?;
            observer.message(&format!(
                "after training (best checkpoint): valid loss {:.4}, perplexity {:.2}",
                e.loss, e.perplexity
            ));
            let mut record = eval_json(&e);
            record["type"] = "eval".into();
            record["split"] = "valid".into();
            record["final"] = true.into();
            log(&mut metrics, &metrics_path, &record)?;
            Some(e)
        }
        None => None,
    };
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "format": meta.format,
        "max_length": max_length,
        "train_examples": train.len(),
        "valid_examples": valid.as_ref().map(Vec::len),
        "steps": step,
        "train_loss": last_train_loss,
        "trainable_parameters": model.params.num_elements(),
        "before": before.as_ref().map(eval_json),
        "after": after.as_ref().map(eval_json),
    });
    let text =
        serde_json::to_string_pretty(&report).map_err(|e| TrainError::Invalid(e.to_string()))?;
    mosaic_models::folder::write_atomic(&output.join("report.json"), text.as_bytes())?;
    Ok(RunSummary {
        output,
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}
