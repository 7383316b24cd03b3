//! Text → image (`task = "text-to-image"`): a small convolutional decoder `G(T)` learns to draw a scene from the
//! text embedding `T` of its caption — the mean over the caption's tokens of a LLaVA language model's final
//! hidden state — trained with the mean squared error against the real image, alone or jointly with the LLaVA's
//! captioning cross-entropy and a contrastive alignment of image and text (`[loss] image = 1.0, caption = 0.5,
//! contrastive = 0.1`; no `[loss]`: the image objective alone). It is NOT a diffusion model: a regression
//! decoder draws the average of what a caption could show, so its pictures are blurry.
//!
//! `model` is a LLaVA folder (e.g. a visual-instruction run's `best/`), or with `vision_model = "<CLIP folder>"`
//! a GPT-2 folder assembled with that CLIP's vision tower and a new `projector` into a LLaVA in the run's `base/`,
//! exactly as visual-instruction does. Data: the visual-instruction conversation rows (the scene set's
//! `captions-*.json`); an example's caption is its first reply.
//!
//! What trains: the decoder (when the image objective is on); the projector when the caption or contrastive
//! objective is on, or with `freeze_towers = false`; the language model only with `freeze_towers = false`
//! (default true); the vision tower never.
//!
//! [`run`] writes the usual run folder: `metrics.jsonl` (with `loss_<objective>` per step), `report.json` with
//! the test (else valid) image MSE — and caption loss when that objective is on — before and after training,
//! `training.svg`, `samples.png` (generated above real images for the first 8 held-out captions, listed in
//! report.json in grid order), and `best/` / `last/` checkpoints (see [`checkpoint`]).

pub mod checkpoint;
pub mod data;
pub mod model;
pub mod samples;
pub mod task;

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_models::image_decoder::DecoderConfig;

pub use checkpoint::{
    LoadedTextToImage, TASK, TextToImageMeta, is_text_to_image_checkpoint, load_checkpoint,
    read_meta,
};
pub use data::{CaptionReader, CaptionSet};
pub use model::{DECODER_CHANNELS, DECODER_FILE, TextToImageModel};
pub use samples::{Imagined, imagine, write_samples};
pub use task::{Objectives, TextToImageEvaluation, TextToImageTask, Trains, evaluate};

use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::{FreezeTowers, Recipe};
use crate::run::{RunOptions, RunSummary};
use crate::run_folder::{RunFolder, held_out_record};
use crate::trainer::Trainer;
use crate::visual_instruction::{LlavaProcessor, is_llava_folder, load_model, processor_dir};

/// What a run reads and trains.
struct Loaded {
    model_dir: PathBuf,
    model: TextToImageModel,
    train: CaptionSet,
    valid: Option<CaptionSet>,
    /// The set the report measures (test, else valid), and its name.
    held_out: Option<(&'static str, CaptionSet)>,
    meta: TextToImageMeta,
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The side of the images: the LLaVA processor's output when square, else the vision tower's input size.
fn image_size(processor: &LlavaProcessor, fallback: usize) -> usize {
    match processor.image.config.output_size() {
        Some((h, w)) if h == w => h,
        _ => fallback,
    }
}

fn load(recipe: &Recipe, observer: &mut dyn Observer, device: &Device) -> Result<Loaded> {
    if recipe.vision_model.is_none() {
        let dir = mosaic_models::ModelSource::parse(&recipe.model).resolve()?;
        let base = mosaic_peft::adapter_base_model(&dir).unwrap_or_else(|_| dir.clone());
        if !is_llava_folder(&dir) && !is_llava_folder(&base) {
            return Err(TrainError::Invalid(format!(
                "recipe key `model`: {} is not a LLaVA folder; give a LLaVA (e.g. a visual-instruction run's \
                 best/), or a GPT-2 folder with `vision_model` = a CLIP folder to assemble one",
                dir.display()
            )));
        }
    }
    let model_dir = absolute(&crate::visual_instruction::model_folder(
        recipe, observer, device,
    )?);
    let llava = load_model(&model_dir, recipe.train.seed, device)?;
    let processor = LlavaProcessor::from_folder(&processor_dir(&model_dir)?, &llava)?;
    let context = llava.config.text.n_positions;
    let max_length = recipe.data.max_length.unwrap_or(context).min(context);
    let size = image_size(&processor, llava.config.vision.image_size);
    let width = llava.config.text.n_embd;
    let decoder = DecoderConfig::for_image(width, DECODER_CHANNELS, size)?;
    let pad_id = processor.encoder.pad_id();
    let model = TextToImageModel::new(llava, &decoder, pad_id, recipe.train.seed)?;
    let image_field = recipe
        .data
        .image_field
        .clone()
        .unwrap_or_else(|| "image".into());
    let reader = CaptionReader {
        processor: &processor,
        image_field: &image_field,
        max_length,
        image_size: size,
    };
    let train_path = recipe
        .data
        .train
        .as_ref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))?;
    let train = reader.load(train_path, device)?;
    let valid = recipe
        .data
        .valid
        .as_ref()
        .map(|p| reader.load(p, device))
        .transpose()?;
    let held_out = match (&recipe.data.test, &recipe.data.valid) {
        (Some(test), _) => Some(("test", reader.load(test, device)?)),
        (None, Some(valid)) => Some(("valid", reader.load(valid, device)?)),
        _ => None,
    };
    observer.message(&format!(
        "data: {} training captions over {} images; decoder: {width}-wide text embedding → {}×{} start map of \
         {DECODER_CHANNELS} channels → {size}×{size} RGB",
        train.len(),
        train.visual.image_paths.len(),
        decoder.start_size,
        decoder.start_size,
    ));
    let objectives = recipe
        .objective_weights()
        .into_iter()
        .map(|(n, w)| (n.to_string(), w))
        .collect();
    let meta = TextToImageMeta {
        task: TASK.into(),
        llava_model: None,
        decoder,
        image_size: size,
        objectives,
        image_field,
        max_length,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    Ok(Loaded {
        model_dir,
        model,
        train,
        valid,
        held_out,
        meta,
    })
}

/// Measures the held-out set, logs it as an eval record (`before` or `final`), and returns it.
fn measure(
    model: &TextToImageModel,
    loaded: &Loaded,
    objectives: &Objectives,
    batch: usize,
    files: &mut RunFolder,
    when: &str,
    observer: &mut dyn Observer,
) -> Result<Option<TextToImageEvaluation>> {
    let Some((split, set)) = &loaded.held_out else {
        return Ok(None);
    };
    let e = evaluate(model, set, objectives, batch)?;
    observer.message(&format!("{when}: {split} {}", e.line()));
    files.log(held_out_record(
        serde_json::Value::Object(e.metrics()),
        split,
        when,
    ))?;
    Ok(Some(e))
}

/// Trains the text → image decoder as `recipe` says and writes its run folder (see the module docs).
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    let cfg = &recipe.train;
    let device = Device::Cpu;
    let resume = crate::run::resume_point(recipe, &options, observer)?;
    let mut loaded = load(recipe, observer, &device)?;
    let objectives = Objectives::from_weights(&recipe.objective_weights());
    let freeze = recipe.freeze_towers.unwrap_or(FreezeTowers::Both);
    // The vision tower never trains here: `false` and `"image"` both mean "the language model trains".
    if freeze == FreezeTowers::Text {
        return Err(TrainError::Invalid(
            "recipe key `freeze_towers`: \"text\" would train the vision tower, which text-to-image never trains; \
             use true, or false / \"image\" to train the language model"
                .into(),
        ));
    }
    let freeze_towers = freeze.text_frozen();
    let trains = Trains::new(&objectives, freeze_towers);
    if !trains.llava() {
        loaded.meta.llava_model = Some(loaded.model_dir.display().to_string());
    }
    observer.message(&format!(
        "objectives: {}; trains: {}",
        objectives.describe(),
        trains.describe()
    ));
    let mut files = RunFolder::create(recipe, options.collective())?;
    let eval_batch = cfg.batch_size.max(1) * 2;
    let before = match resume {
        None => measure(
            &loaded.model,
            &loaded,
            &objectives,
            eval_batch,
            &mut files,
            "before training",
            observer,
        )?,
        Some(_) => None,
    };
    let train_text = if trains.language {
        None
    } else {
        Some(task::set_text_embeddings(
            &loaded.model,
            &loaded.train,
            eval_batch,
        )?)
    };
    let mut task = TextToImageTask {
        model: &loaded.model,
        objectives,
        trains,
        train: &loaded.train,
        train_text,
        valid: loaded.valid.as_ref(),
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
    let best = load_checkpoint(&best_dir, &device)?;
    let after = measure(
        &best.model,
        &loaded,
        &objectives,
        eval_batch,
        &mut files,
        "after training (best checkpoint)",
        observer,
    )?;
    let samples = match &loaded.held_out {
        Some((split, set)) if files.writes() => {
            let path = files.path("samples.png");
            let captions = write_samples(&best.model, set, &path)?;
            observer.message(&format!(
                "samples: {} (generated above real, the first {} {split} captions)",
                path.display(),
                captions.len()
            ));
            Some(serde_json::json!({ "file": "samples.png", "split": split, "captions": captions }))
        }
        _ => None,
    };
    let figures = |f: fn(&TextToImageEvaluation) -> Option<f64>| {
        serde_json::json!({
            "before": before.as_ref().and_then(f),
            "after": after.as_ref().and_then(f),
        })
    };
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "vision_model": recipe.vision_model,
        "task": recipe.task,
        "note": "a small convolutional decoder trained with mean squared error, not a diffusion model: its images are blurry averages",
        "objectives": loaded.meta.objectives,
        "freeze_towers": freeze_towers,
        "trains": trains.describe(),
        "train_examples": loaded.train.len(),
        "valid_examples": loaded.valid.as_ref().map(CaptionSet::len),
        "evaluated_on": loaded.held_out.as_ref().map(|(s, _)| *s),
        "image_size": loaded.meta.image_size,
        "decoder": loaded.meta.decoder,
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "stopped_early": outcome.stopped_early,
        "train_loss": outcome.last_train_loss,
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "image_mse": figures(|e| Some(e.image_mse)),
        "caption_loss": (objectives.caption > 0.0).then(|| figures(|e| e.caption_loss)),
        "contrastive_loss": (objectives.contrastive > 0.0).then(|| figures(|e| e.contrastive_loss)),
        "before": before.as_ref().map(TextToImageEvaluation::metrics),
        "after": after.as_ref().map(TextToImageEvaluation::metrics),
        "samples": samples,
    });
    files.finish(&report, &cfg.metric)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}
