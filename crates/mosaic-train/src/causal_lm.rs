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

pub mod checkpoint;
pub mod data;
pub mod held_out;
pub mod loss;
pub mod report;
pub mod task;

use std::path::Path;

use candle_core::Device;
use mosaic_models::{Gpt2, Gpt2Config, ModelSource};

pub use checkpoint::{
    LmMeta, evaluate_checkpoint, exact_match_checkpoint, is_causal_lm_checkpoint, save_checkpoint,
};
pub use data::{LmBatch, LmEncoder, LmExample, LoadStats, PackedLayout, RowFormat, pack_examples};
pub use held_out::{HeldOut, HeldOutItem, HeldOutScore};
pub use loss::{LmEvaluation, evaluate};
pub use task::CausalLmTask;

use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::{Init, Method, Recipe};
use crate::run::{RunOptions, RunSummary};
use crate::run_folder::RunFolder;
use crate::trainer::{FitOutcome, Trainer};
use report::{before_record, eval_json, exact_match_json, exact_match_line, last_epoch_train_loss};

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

/// Everything a run trains and measures, loaded from the recipe.
struct Loaded {
    model_dir: std::path::PathBuf,
    model: Gpt2,
    meta: LmMeta,
    encoder: LmEncoder,
    train: Vec<LmExample>,
    valid: Option<Vec<LmExample>>,
    /// Held-out instructions (the test set, else the validation set) scored by exact match, and their split.
    held_out: Option<(&'static str, HeldOut)>,
}

/// The checkpoints' `mosaic.json` for `recipe`.
fn run_meta(recipe: &Recipe, max_length: usize) -> LmMeta {
    let instruction = recipe.method == Method::Instruction;
    LmMeta {
        task: "causal-lm".into(),
        method: if instruction { "instruction" } else { "lm" }.into(),
        format: instruction.then(|| {
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
            .unwrap_or_else(checkpoint::default_messages_field),
        text_field: recipe.data.text_field.clone(),
        max_length,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    }
}

/// Resolves the model, reads the data the way the recipe says (packing the training set when asked).
fn load(recipe: &Recipe, observer: &mut dyn Observer, device: &Device) -> Result<Loaded> {
    let source = ModelSource::parse(&recipe.model);
    observer.message(&format!("model: {}", source.spec()));
    let model_dir = source.resolve()?;
    let model = load_model(recipe, &model_dir, device)?;
    if recipe.init == Init::Random {
        observer.message(&format!(
            "init = \"random\": weights initialised from config.json with seed {}",
            recipe.train.seed
        ));
    }
    let n_positions = model.config.n_positions;
    let max_length = recipe
        .data
        .max_length
        .unwrap_or(n_positions)
        .min(n_positions);
    let meta = run_meta(recipe, max_length);
    let encoder = checkpoint::lm_encoder(&meta, &model_dir, &model)?;
    let read = |path: &Path, observer: &mut dyn Observer| -> Result<Vec<LmExample>> {
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
    let mut train = read(train_path, observer)?;
    // Several samples per sequence, positions and attention kept per sample; validation stays unpacked.
    if recipe.data.packing {
        let n = train.len();
        train = pack_examples(train, max_length)?;
        observer.message(&format!(
            "packing: {n} examples into {} sequences of at most {max_length} tokens",
            train.len()
        ));
    }
    let valid = match &recipe.data.valid {
        Some(path) => Some(read(path, observer)?),
        None => None,
    };
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
            Some((split, HeldOut::load(&encoder, path, n_positions)?))
        }
        _ => None,
    };
    Ok(Loaded {
        model_dir,
        model,
        meta,
        encoder,
        train,
        valid,
        held_out,
    })
}

/// Logs the validation loss and the held-out exact match of the untrained model (`"before": true` records).
fn log_before(
    loaded: &Loaded,
    files: &mut RunFolder,
    eval_batch: usize,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<()> {
    let pad_id = loaded.encoder.encoder.pad_id();
    if let Some(v) = &loaded.valid {
        let e = evaluate(&loaded.model, v, eval_batch, pad_id, device)?;
        observer.message(&format!(
            "before training: valid loss {:.4}, perplexity {:.2}",
            e.loss, e.perplexity
        ));
        let mut record = eval_json(&e);
        record["type"] = "eval".into();
        record["split"] = "valid".into();
        record["before"] = true.into();
        files.log(record)?;
    }
    if let Some((split, set)) = &loaded.held_out {
        let scored = set.score(&loaded.model, &loaded.encoder)?;
        observer.message(&format!(
            "before training: {split} exact_match {}",
            exact_match_line(&scored.score)
        ));
        let mut record = exact_match_json(&scored.score);
        record["type"] = "eval".into();
        record["split"] = (*split).into();
        record["before"] = true.into();
        files.log(record)?;
    }
    Ok(())
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
    let resume = crate::run::resume_point(recipe, &options, observer)?;
    let loaded = load(recipe, observer, &device)?;
    let mut files = RunFolder::create(recipe, options.collective())?;
    let eval_batch = cfg.batch_size * 2;
    if resume.is_none() {
        log_before(&loaded, &mut files, eval_batch, &device, observer)?;
    }
    let mut task = CausalLmTask {
        model: &loaded.model,
        train: &loaded.train,
        valid: loaded.valid.as_deref(),
        pad_id: loaded.encoder.encoder.pad_id(),
        eval_batch,
        device: &device,
        meta: &loaded.meta,
        model_dir: &loaded.model_dir,
    };
    let trainer = Trainer {
        config: cfg,
        peft: recipe.peft.as_ref(),
        stop: options.stop,
        collective: options.collective(),
    };
    let outcome = trainer.fit(&mut task, &mut files, resume, observer)?;
    finish(recipe, &loaded, &outcome, &mut files, &device, observer)
}

/// Evaluates the best checkpoint (validation loss, held-out exact match) and writes `report.json` and
/// `training.svg`.
fn finish(
    recipe: &Recipe,
    loaded: &Loaded,
    outcome: &FitOutcome,
    files: &mut RunFolder,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let cfg = &recipe.train;
    let eval_batch = cfg.batch_size * 2;
    let pad_id = loaded.encoder.encoder.pad_id();
    let best_dir = files.path("best");
    let best_model = checkpoint::load_model(&best_dir, cfg.seed, device)?;
    let after = match &loaded.valid {
        Some(v) => {
            let e = evaluate(&best_model, v, eval_batch, pad_id, device)?;
            observer.message(&format!(
                "after training (best checkpoint): valid loss {:.4}, perplexity {:.2}",
                e.loss, e.perplexity
            ));
            let mut record = eval_json(&e);
            record["type"] = "eval".into();
            record["split"] = "valid".into();
            record["final"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    let exact_match = match &loaded.held_out {
        Some((split, set)) => Some(held_out_report(
            split,
            set,
            &best_model,
            &loaded.encoder,
            files,
            observer,
        )?),
        None => None,
    };
    let history = files.history();
    let before = before_record(history, "valid", "perplexity").map(|r| {
        serde_json::json!({ "loss": r["loss"], "perplexity": r["perplexity"], "tokens": r["tokens"] })
    });
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "init": recipe.init,
        "format": loaded.meta.format,
        "max_length": loaded.meta.max_length,
        "train_examples": loaded.train.len(),
        "valid_examples": loaded.valid.as_ref().map(Vec::len),
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "stopped_early": outcome.stopped_early,
        "train_loss": last_epoch_train_loss(history),
        "parameters": outcome.total_parameters,
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "peft": recipe.peft.as_ref().map(|p| p.method.as_str()),
        "freeze": cfg.freeze.to_string(),
        "before": before,
        "after": after.as_ref().map(eval_json),
        "exact_match": exact_match,
    });
    files.finish(&report, "perplexity")?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}

/// Scores the best model's greedy answers on the held-out instructions, logs them, and returns the report's
/// `exact_match` section (before and after, per type, and every prediction).
fn held_out_report(
    split: &str,
    set: &HeldOut,
    model: &Gpt2,
    encoder: &LmEncoder,
    files: &mut RunFolder,
    observer: &mut dyn Observer,
) -> Result<serde_json::Value> {
    let scored = set.score(model, encoder)?;
    let before = before_record(files.history(), split, "exact_match").cloned();
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
    record["split"] = split.into();
    record["final"] = true.into();
    files.log(record)?;
    Ok(serde_json::json!({
        "split": split,
        "before": before.map(|r| serde_json::json!({
            "exact_match": r["exact_match"], "count": r["count"], "by_type": r["by_type"],
        })),
        "after": exact_match_json(&scored.score),
        "predictions": set.items.iter().zip(&scored.predictions).map(|(item, p)| serde_json::json!({
            "reference": item.reference, "prediction": p, "type": item.group,
        })).collect::<Vec<_>>(),
    }))
}
