//! Visual instruction tuning, LLaVA style (`task = "visual-instruction"`): a CLIP vision tower, a projector and a
//! GPT-2 trained on conversations about images in LLaVA's two stages — `stage = "align"` (the projector alone, on
//! caption pairs, both towers frozen) and `stage = "instruct"` (the projector and the language model, or LoRA on
//! the language model with `[peft] method = "lora"` and the projector trained whole beside it; the vision tower
//! frozen unless `unfreeze_vision_tower`).
//!
//! `model` is a LLaVA folder, or with `vision_model = "<CLIP folder>"` a GPT-2 folder joined with that CLIP's
//! vision tower through a new `projector` ("mlp2x_gelu" or "linear"): the assembled model is written to the run's
//! `base/` (a whole LLaVA folder with its processor files: the tokenizer with `<image>`, LLaVA-1.5's chat
//! template, CLIP's image processor), which is where its adapters point.
//!
//! [`run`] writes the usual run folder: `metrics.jsonl`, `report.json` with the validation loss and, on the test
//! set (else the validation set), VQA accuracy overall and per question type and caption BLEU-4 / CIDEr-D before
//! and after training, `training.svg`, and `best/` / `last/` LLaVA checkpoints.

pub mod checkpoint;
pub mod data;
pub mod evaluate;
pub mod processor;
pub mod task;

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_models::llava::ProjectorKind;
use mosaic_models::{Llava, ModelSource};

pub use checkpoint::{VisualMeta, build_from_parts, is_llava_folder, load_model, processor_dir};
pub use data::{VisualBatch, VisualData, VisualEncoder, VisualExample};
pub use evaluate::{AnswerScores, VisualLoss, evaluate_loss, score_answers};
pub use processor::{CHATML_LLAVA_TEMPLATE, IMAGE_TOKEN, LLAVA_CHAT_TEMPLATE, LlavaProcessor};
pub use task::VisualInstructionTask;

use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::{Recipe, Stage};
use crate::run::{RunOptions, RunSummary};
use crate::run_folder::{RunFolder, held_out_record};
use crate::trainer::Trainer;

/// New tokens a generated answer or caption may have (a small BPE spells a 13-word caption in ~35 tokens).
pub const MAX_ANSWER_TOKENS: usize = 48;

/// Everything a run trains and measures.
struct Loaded {
    model_dir: PathBuf,
    model: Llava,
    processor: LlavaProcessor,
    meta: VisualMeta,
    train: VisualData,
    valid: Option<VisualData>,
    /// The set whose answers are scored (test, else valid), and its name.
    held_out: Option<(&'static str, VisualData)>,
}

/// The LLaVA folder the run starts from: the recipe's model, or the one it builds from parts into `base/` (also
/// what text-to-image starts from).
pub(crate) fn model_folder(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    device: &Device,
) -> Result<PathBuf> {
    let language = ModelSource::parse(&recipe.model).resolve()?;
    let Some(vision) = &recipe.vision_model else {
        observer.message(&format!("model: {}", language.display()));
        return Ok(language);
    };
    let vision = ModelSource::parse(vision).resolve()?;
    let projector = match recipe.projector.as_deref() {
        None | Some("mlp2x_gelu") => ProjectorKind::Mlp,
        Some("linear") => ProjectorKind::Linear,
        Some(other) => {
            return Err(TrainError::Invalid(format!(
                "recipe key `projector`: expected \"mlp2x_gelu\" or \"linear\", got `{other}`"
            )));
        }
    };
    let base = recipe.output.join("base");
    build_from_parts(
        &vision,
        &language,
        projector,
        recipe.train.seed,
        &base,
        device,
    )?;
    observer.message(&format!(
        "model: LLaVA from parts — vision tower of {}, language model {}, new {} projector (seed {}) → {}",
        vision.display(),
        language.display(),
        recipe.projector.as_deref().unwrap_or("mlp2x_gelu"),
        recipe.train.seed,
        base.display()
    ));
    Ok(base)
}

fn load(recipe: &Recipe, observer: &mut dyn Observer, device: &Device) -> Result<Loaded> {
    let model_dir = model_folder(recipe, observer, device)?;
    let model = Llava::from_folder(&model_dir, recipe.train.seed, device)?;
    let processor = LlavaProcessor::from_folder(&model_dir, &model)?;
    let context = model.config.text.n_positions;
    let max_length = recipe.data.max_length.unwrap_or(context).min(context);
    let image_field = recipe
        .data
        .image_field
        .clone()
        .unwrap_or_else(|| "image".into());
    let stage = recipe.stage.unwrap_or(Stage::Instruct);
    let meta = VisualMeta {
        task: "visual-instruction".into(),
        stage: stage.as_str().into(),
        image_field: image_field.clone(),
        max_length,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let encoder = VisualEncoder {
        processor: &processor,
        image_field: &image_field,
        max_length,
    };
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let train = encoder.load(train_path, device)?;
    let valid = recipe
        .data
        .valid
        .as_ref()
        .map(|p| encoder.load(p, device))
        .transpose()?;
    let held_out = match (&recipe.data.test, &recipe.data.valid) {
        (Some(test), _) => Some(("test", encoder.load(test, device)?)),
        (None, Some(valid)) => Some(("valid", encoder.load(valid, device)?)),
        _ => None,
    };
    observer.message(&format!(
        "data: {} training conversations over {} images; {} image tokens each",
        train.examples.len(),
        train.image_paths.len(),
        processor.image_tokens
    ));
    Ok(Loaded {
        model_dir,
        model,
        processor,
        meta,
        train,
        valid,
        held_out,
    })
}

/// Scores the held-out answers of `model`, logs them as an eval record, and returns them.
fn score_held_out(
    loaded: &Loaded,
    model: &Llava,
    processor: &LlavaProcessor,
    files: &mut RunFolder,
    batch: usize,
    when: &str,
    observer: &mut dyn Observer,
) -> Result<Option<AnswerScores>> {
    let Some((split, set)) = &loaded.held_out else {
        return Ok(None);
    };
    let scores = score_answers(model, processor, set, batch, MAX_ANSWER_TOKENS)?;
    observer.message(&format!("{when}: {split} {}", scores.line()));
    files.log(held_out_record(scores.json(), split, when))?;
    Ok(Some(scores))
}

/// Trains a LLaVA as `recipe` says and writes its run folder (see the module docs).
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
    let pad_id = loaded.processor.encoder.pad_id();
    let mut before = None;
    if resume.is_none() {
        if let Some(valid) = &loaded.valid {
            let e = evaluate_loss(&loaded.model, valid, eval_batch, pad_id)?;
            observer.message(&format!(
                "before training: valid loss {:.4}, perplexity {:.2}",
                e.loss, e.perplexity
            ));
            let mut record = serde_json::to_value(e).unwrap_or_default();
            record["type"] = "eval".into();
            record["split"] = "valid".into();
            record["before"] = true.into();
            files.log(record)?;
        }
        before = score_held_out(
            &loaded,
            &loaded.model,
            &loaded.processor,
            &mut files,
            eval_batch,
            "before training",
            observer,
        )?;
    }
    let stage = recipe.stage.unwrap_or(Stage::Instruct);
    let mut task = VisualInstructionTask {
        model: &loaded.model,
        stage,
        unfreeze_vision_tower: recipe.unfreeze_vision_tower,
        train: &loaded.train,
        valid: loaded.valid.as_ref(),
        pad_id,
        eval_batch,
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

    let best_dir = files.path("best");
    let best = load_model(&best_dir, cfg.seed, &device)?;
    let after_loss = match &loaded.valid {
        Some(valid) => {
            let e = evaluate_loss(&best, valid, eval_batch, pad_id)?;
            observer.message(&format!(
                "after training (best checkpoint): valid loss {:.4}, perplexity {:.2}",
                e.loss, e.perplexity
            ));
            Some(e)
        }
        None => None,
    };
    let after = score_held_out(
        &loaded,
        &best,
        &loaded.processor,
        &mut files,
        eval_batch,
        "after training (best checkpoint)",
        observer,
    )?;
    let history = files.history();
    let before_loss = crate::causal_lm::report::before_record(history, "valid", "perplexity")
        .map(|r| serde_json::json!({ "loss": r["loss"], "perplexity": r["perplexity"] }));
    let held_out_split = loaded.held_out.as_ref().map(|(s, _)| *s);
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "vision_model": recipe.vision_model,
        "task": recipe.task,
        "stage": stage.as_str(),
        "train_examples": loaded.train.examples.len(),
        "valid_examples": loaded.valid.as_ref().map(|v| v.examples.len()),
        "image_tokens": loaded.processor.image_tokens,
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "stopped_early": outcome.stopped_early,
        "train_loss": crate::causal_lm::report::last_epoch_train_loss(history),
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "peft": recipe.peft.as_ref().map(|p| p.method.as_str()),
        "valid_loss": { "before": before_loss, "after": after_loss },
        "answers": held_out_split.map(|split| serde_json::json!({
            "split": split,
            "before": before.as_ref().map(AnswerScores::json),
            "after": after.as_ref().map(AnswerScores::json),
            "predictions": loaded.held_out.as_ref().map(|(_, set)| set.examples.iter()
                .zip(after.as_ref().map(|a| a.predictions.as_slice()).unwrap_or_default())
                .map(|(e, p)| serde_json::json!({
                    "id": e.id, "type": e.question_type, "reference": e.answer, "prediction": p,
                }))
                .collect::<Vec<_>>()),
        })),
    });
    files.finish(&report, "perplexity")?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}

/// The processor of a LLaVA checkpoint or folder (an adapter checkpoint's from its base model).
pub fn processor_for(dir: &Path, model: &Llava) -> Result<LlavaProcessor> {
    LlavaProcessor::from_folder(&processor_dir(dir)?, model)
}

/// Loss and answer scores (VQA accuracy, caption BLEU-4 / CIDEr-D) of a LLaVA checkpoint or folder on a data
/// file read as training reads it (`mosaic eval`).
pub fn evaluate_checkpoint(
    dir: &Path,
    data: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<(VisualLoss, AnswerScores)> {
    let model = load_model(dir, 0, device)?;
    let processor = processor_for(dir, &model)?;
    let meta: Option<VisualMeta> = std::fs::read_to_string(dir.join("mosaic.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let context = model.config.text.n_positions;
    let encoder = VisualEncoder {
        processor: &processor,
        image_field: meta.as_ref().map_or("image", |m| m.image_field.as_str()),
        max_length: meta.as_ref().map_or(context, |m| m.max_length),
    };
    let set = encoder.load(data, device)?;
    let pad = processor.encoder.pad_id();
    let loss = evaluate_loss(&model, &set, batch_size, pad)?;
    let answers = score_answers(&model, &processor, &set, batch_size, MAX_ANSWER_TOKENS)?;
    Ok((loss, answers))
}
