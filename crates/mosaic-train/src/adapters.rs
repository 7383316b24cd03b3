//! `[peft]` in a run: what a task offers an adapter ([`Adaptable`]), attaching LoRA to it before training, and
//! loading a checkpoint folder that holds an adapter rather than a whole model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mosaic_models::{Mode, ParamStore};
use mosaic_peft::{AdapterConfig, Lora, LoraConfig, TargetModules, TaskType};

use crate::error::{Result, TrainError};
use crate::recipe::{PeftSection, Words};

/// The part of a task's model an adapter wraps.
pub struct Adaptable {
    pub params: ParamStore,
    pub mode: Arc<Mode>,
    /// The PEFT task class Python loads the adapter into (`SEQ_CLS` → `PeftModelForSequenceClassification`).
    pub task_type: Option<TaskType>,
    /// `target_modules` when the recipe gives none: PEFT's default for the model type.
    pub default_targets: &'static [&'static str],
    /// The heads a new run trains whole beside the adapter (`modules_to_save` when the recipe gives none).
    pub heads: &'static [&'static str],
    /// The base model folder, written as `base_model_name_or_path`.
    pub base_model: PathBuf,
}

/// PEFT's default LoRA targets per model type.
pub const BERT_TARGETS: &[&str] = &["query", "value"];
pub const GPT2_TARGETS: &[&str] = &["c_attn"];
pub const CLIP_TARGETS: &[&str] = &["q_proj", "v_proj"];

/// Attaches the recipe's adapter to `model`: a fresh LoRA (seeded with `seed`) or, with `peft.adapter`, a saved
/// one to continue training.
pub fn attach(model: &Adaptable, peft: &PeftSection, seed: u64) -> Result<Lora> {
    if let Some(dir) = &peft.adapter {
        return Ok(Lora::load(&model.params, model.mode.clone(), dir)?);
    }
    let target_modules = match &peft.target_modules {
        None => TargetModules::Names(
            model
                .default_targets
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        Some(Words::One(s)) if s == "all-linear" => TargetModules::AllLinear,
        Some(Words::One(pattern)) => TargetModules::Regex(pattern.clone()),
        Some(Words::Many(names)) => TargetModules::Names(names.clone()),
    };
    let modules_to_save = peft
        .modules_to_save
        .clone()
        .unwrap_or_else(|| model.heads.iter().map(|s| s.to_string()).collect());
    let lora = LoraConfig {
        r: peft.r,
        alpha: peft.alpha,
        dropout: peft.dropout as f32,
        target_modules,
        modules_to_save,
        use_rslora: peft.use_rslora,
    };
    let config = AdapterConfig {
        lora,
        base_model: Some(absolute(&model.base_model)),
        task_type: model.task_type,
    };
    Lora::apply(&model.params, model.mode.clone(), config, seed)
        .map_err(|e| TrainError::Invalid(format!("[peft]: {e}")))
}

fn absolute(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// Loads a checkpoint's model: the folder's own weights, or its base model with the adapter it holds.
pub fn load_checkpoint_model<M>(
    dir: &Path,
    load: impl FnOnce(&Path) -> mosaic_models::Result<M>,
    parts: impl Fn(&M) -> (&ParamStore, Arc<Mode>),
) -> Result<M> {
    let (model, adapter) = mosaic_peft::load_model_or_adapter(dir, load, parts)?;
    // The adapter stays attached through the model's slots and store; nothing else needs its handle.
    drop(adapter);
    Ok(model)
}
