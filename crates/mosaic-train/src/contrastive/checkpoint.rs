//! CLIP checkpoints of `image-text-contrastive` runs, and what `mosaic eval` does with them.
//!
//! Both methods save a whole Hugging Face CLIP folder — `config.json`, `model.safetensors`, the tokenizer files
//! and `preprocessor_config.json` — plus `mosaic.json` ([`ClipMeta`]). A CoOp checkpoint's towers are the
//! model it started from, unchanged; it adds [`CONTEXT_FILE`]: a safetensors file holding one f32 tensor
//! `prompt_learner.ctx` of shape `(context_tokens, text hidden size)` (CoOp's own name), the learned vectors that
//! go between `[SOS]` and each class name (`mosaic_models::clip::CoopPrompt::save` / `load`). The class names,
//! in class-id order, are in `mosaic.json`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use mosaic_data::image::ImageProcessor;
use mosaic_models::Clip;
use mosaic_models::clip::CoopPrompt;

use super::coop::{class_logits, class_name_ids, coop_class_embeddings, evaluate_logits};
use super::data::{CaptionTokenizer, ClassData, Fields, PairData};
use super::info_nce::{evaluate_pairs, image_features};
use crate::error::{Result, TrainError};
use crate::metrics::ClassificationReport;
use crate::metrics::retrieval::RetrievalRecall;

/// The `task` of these checkpoints' `mosaic.json`.
pub const TASK: &str = "image-text-contrastive";

/// The CoOp context file in a checkpoint folder.
pub const CONTEXT_FILE: &str = "coop_context.safetensors";

/// What a checkpoint's `mosaic.json` says.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipMeta {
    /// Always [`TASK`].
    pub task: String,
    /// `"contrastive"` or `"coop"`.
    pub method: String,
    #[serde(flatten)]
    pub fields: Fields,
    /// CoOp: the class names in class-id order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// CoOp: the number of context vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<usize>,
    /// CoOp: the hand-written template the run compared against (zero-shot, before training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default)]
    pub epoch: usize,
    #[serde(default)]
    pub step: usize,
    /// The validation metrics of this checkpoint.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// Writes a checkpoint folder atomically (built beside it, then swapped in).
pub fn save_checkpoint(
    clip: &Clip,
    prompt: Option<&CoopPrompt>,
    meta: &ClipMeta,
    model_dir: &Path,
    dir: &Path,
) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        clip.save(staging)?;
        mosaic_models::folder::copy_tokenizer_files(model_dir, staging)?;
        if let Some(prompt) = prompt {
            prompt.save(&staging.join(CONTEXT_FILE))?;
        }
        let json =
            serde_json::to_string_pretty(meta).map_err(|e| TrainError::Invalid(e.to_string()))?;
        mosaic_models::folder::write_atomic(&staging.join("mosaic.json"), json.as_bytes())?;
        Ok(())
    })
}

/// Reads a checkpoint's `mosaic.json`.
pub fn read_meta(dir: &Path) -> Result<ClipMeta> {
    let path = dir.join("mosaic.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::file(&path, e))
}

/// Whether `dir` holds an image-text checkpoint (its `mosaic.json` says `"task": "image-text-contrastive"`).
pub fn is_contrastive_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("mosaic.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["task"] == TASK)
}

/// What [`evaluate_checkpoint`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointEvaluation {
    /// `"contrastive"` or `"coop"`.
    pub method: String,
    /// Contrastive: `loss` and the recalls; CoOp: `loss`, `accuracy`, F1 / precision / recall averages.
    pub metrics: BTreeMap<String, f64>,
    /// Contrastive: recall@1/5 in both directions.
    pub retrieval: Option<RetrievalRecall>,
    /// CoOp: the classification report.
    pub report: Option<ClassificationReport>,
    /// The number of pairs (contrastive) or images (CoOp) evaluated.
    pub examples: usize,
}

/// The CLIP of a model or checkpoint folder: its own weights, or its base model with the adapter it holds.
pub fn load_clip(dir: &Path, seed: u64, device: &Device) -> Result<Clip> {
    crate::adapters::load_checkpoint_model(
        dir,
        |d| Ok(Clip::from_folder(d, seed, device)?),
        |c| Ok(mosaic_peft::AdapterTarget::new(&c.params, c.mode.clone())),
    )
}

/// Evaluates a checkpoint on a JSONL/CSV file read with the checkpoint's fields: loss and retrieval recall of
/// image-caption pairs (contrastive), or the classification report of labelled images with the learned
/// context (CoOp; labels must be among the checkpoint's classes).
pub fn evaluate_checkpoint(
    dir: &Path,
    data: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<CheckpointEvaluation> {
    let meta = read_meta(dir)?;
    let clip = load_clip(dir, 0, device)?;
    clip.set_training(false);
    let tokenizer = CaptionTokenizer::load(dir, &clip)?;
    let processor =
        ImageProcessor::from_folder(dir).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let batch_size = batch_size.max(1);
    match meta.method.as_str() {
        "contrastive" => {
            let pairs = PairData::load(data, &meta.fields, &processor, &tokenizer, device)?;
            let e = evaluate_pairs(&clip, &pairs, &tokenizer, batch_size, device)?;
            Ok(CheckpointEvaluation {
                method: meta.method.clone(),
                metrics: e.metrics(),
                retrieval: Some(e.recall),
                report: None,
                examples: pairs.len(),
            })
        }
        "coop" => {
            let classes = meta.classes.as_deref().ok_or_else(|| {
                TrainError::file(dir.join("mosaic.json"), "a CoOp checkpoint needs `classes`")
            })?;
            let prompt = CoopPrompt::load(&dir.join(CONTEXT_FILE), device)?;
            let images = ClassData::load(data, &meta.fields, Some(classes), &processor, device)?;
            let class_ids = class_name_ids(&tokenizer, classes)?;
            let features = image_features(&clip, &images.pixels, batch_size)?;
            let embeds = coop_class_embeddings(&clip, &prompt, &class_ids)?.detach();
            let logits = class_logits(&clip, &features, &embeds)?;
            let e = evaluate_logits(&logits, &images.labels, classes)?;
            Ok(CheckpointEvaluation {
                method: meta.method.clone(),
                metrics: e.metrics(),
                retrieval: None,
                report: Some(e.report),
                examples: images.len(),
            })
        }
        other => Err(TrainError::file(
            dir.join("mosaic.json"),
            format!("unknown method `{other}` (expected \"contrastive\" or \"coop\")"),
        )),
    }
}
