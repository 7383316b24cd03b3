//! `[peft]` in a run: what a task offers an adapter ([`Adaptable`]), attaching LoRA to it before training, and
//! loading a checkpoint folder that holds an adapter rather than a whole model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mosaic_models::{Mode, ParamStore};
use mosaic_peft::{
    Adapter, AdapterConfig, AdapterTarget, Lora, LoraConfig, PromptConfig, PromptInit,
    PromptLearning, PromptMethod, TargetModules, TaskType, VirtualTokens,
};

use crate::error::{Result, TrainError};
use crate::recipe::{PeftMethod, PeftSection, PromptInitKind, Words};

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
    /// The base model folder, written as `base_model_name_or_path` (its `tokenizer.json` tokenizes a prompt
    /// tuning init text).
    pub base_model: PathBuf,
    /// A causal LM that runs prompt tuning's virtual tokens (none: an encoder takes them in its input).
    pub virtual_tokens: Option<Arc<dyn VirtualTokens>>,
    /// Why this task cannot use prompt tuning, when it cannot.
    pub prompt_tuning_refusal: Option<&'static str>,
}

impl Adaptable {
    fn target(&self) -> AdapterTarget {
        AdapterTarget {
            params: self.params.clone(),
            mode: self.mode.clone(),
            virtual_tokens: self.virtual_tokens.clone(),
        }
    }
}

/// PEFT's default LoRA targets per model type.
pub const BERT_TARGETS: &[&str] = &["query", "value"];
pub const GPT2_TARGETS: &[&str] = &["c_attn"];
pub const CLIP_TARGETS: &[&str] = &["q_proj", "v_proj"];

/// Attaches the recipe's adapter to `model`: a fresh one (seeded with `seed`) or, with `peft.adapter`, a saved
/// one to continue training.
pub fn attach(model: &Adaptable, peft: &PeftSection, seed: u64) -> Result<Adapter> {
    if let Some(dir) = &peft.adapter {
        let mut adapter = Adapter::load(&model.target(), dir)?;
        // Saved for this run's base model, wherever the adapter was made.
        adapter.set_base_model(absolute(&model.base_model));
        return Ok(adapter);
    }
    let invalid = |e: mosaic_peft::PeftError| TrainError::Invalid(format!("[peft]: {e}"));
    match peft.method {
        PeftMethod::Lora => Ok(Adapter::Lora(
            Lora::apply(
                &model.params,
                model.mode.clone(),
                lora_config(model, peft),
                seed,
            )
            .map_err(invalid)?,
        )),
        PeftMethod::PromptTuning | PeftMethod::PrefixTuning => {
            let (num_layers, num_attention_heads, token_dim) =
                PromptLearning::model_sizes(&model.params).map_err(invalid)?;
            let method = match peft.method {
                PeftMethod::PrefixTuning => PromptMethod::PrefixTuning {
                    prefix_projection: peft.prefix_projection,
                    encoder_hidden_size: peft.encoder_hidden_size.unwrap_or(token_dim),
                },
                _ => PromptMethod::PromptTuning {
                    init: match (&peft.init, &peft.init_text) {
                        (PromptInitKind::Text, Some(text)) => PromptInit::Text(text.clone()),
                        _ => PromptInit::Random,
                    },
                },
            };
            let init_ids = match &method {
                PromptMethod::PromptTuning {
                    init: PromptInit::Text(text),
                } => Some(init_text_ids(&model.base_model, text)?),
                _ => None,
            };
            let config = PromptConfig {
                method,
                num_virtual_tokens: peft.num_virtual_tokens,
                num_layers,
                num_attention_heads,
                token_dim,
                base_model: Some(absolute(&model.base_model)),
                task_type: model.task_type,
                modules_to_save: peft
                    .modules_to_save
                    .clone()
                    .unwrap_or_else(|| model.heads.iter().map(|s| s.to_string()).collect()),
            };
            if let (PeftMethod::PromptTuning, Some(why)) =
                (peft.method, model.prompt_tuning_refusal)
            {
                return Err(TrainError::Invalid(format!(
                    "[peft] method = \"prompt-tuning\": {why}"
                )));
            }
            Ok(Adapter::Prompt(
                PromptLearning::apply(
                    &model.params,
                    model.mode.clone(),
                    config,
                    model.virtual_tokens.clone(),
                    init_ids.as_deref(),
                    seed,
                )
                .map_err(invalid)?,
            ))
        }
    }
}

fn lora_config(model: &Adaptable, peft: &PeftSection) -> AdapterConfig {
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
    AdapterConfig {
        lora: LoraConfig {
            r: peft.r,
            alpha: peft.alpha,
            dropout: peft.dropout as f32,
            target_modules,
            modules_to_save,
            use_rslora: peft.use_rslora,
            use_dora: peft.use_dora,
        },
        base_model: Some(absolute(&model.base_model)),
        task_type: model.task_type,
    }
}

/// The token ids of a prompt tuning init text, as PEFT tokenizes it (`tokenizer(text)["input_ids"]`).
fn init_text_ids(model_dir: &Path, text: &str) -> Result<Vec<u32>> {
    let encoder = mosaic_data::Encoder::from_file(model_dir.join("tokenizer.json"))?;
    let encoding = encoder
        .tokenizer()
        .encode(text, true)
        .map_err(|e| TrainError::Invalid(format!("peft.init_text: cannot tokenize: {e}")))?;
    Ok(encoding.get_ids().to_vec())
}

fn absolute(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// Loads a checkpoint's model for evaluation or prediction: the folder's own weights, or its base model with the
/// adapter it holds (a LoRA one merged).
pub fn load_checkpoint_model<M>(
    dir: &Path,
    load: impl FnOnce(&Path) -> Result<M>,
    target: impl Fn(&M) -> Result<AdapterTarget>,
) -> Result<M> {
    if !mosaic_peft::is_adapter_folder(dir) {
        return load(dir);
    }
    let model = load(&mosaic_peft::adapter_base_model(dir)?)?;
    // A checkpoint is loaded to evaluate or predict: a LoRA update is folded into the weights (the forward
    // then costs what the base model's does); prompt learning stays attached through the model's slots.
    match Adapter::load(&target(&model)?, dir)? {
        Adapter::Lora(lora) => lora.merge_and_unload()?,
        Adapter::Prompt(_) => {}
    }
    Ok(model)
}

/// Applies `adapter` (`--adapter`) to a model loaded from the checkpoint `dir`, which must not hold one already.
pub fn apply_extra(dir: &Path, adapter: &Path, target: &AdapterTarget) -> Result<Adapter> {
    if mosaic_peft::is_adapter_folder(dir) {
        return Err(TrainError::Invalid(format!(
            "{}: this checkpoint already holds an adapter; --adapter goes with a checkpoint of a whole model",
            dir.display()
        )));
    }
    Adapter::load(target, adapter)
        .map_err(|e| TrainError::Invalid(format!("--adapter {}: {e}", adapter.display())))
}
