//! Any adapter mosaic runs — LoRA, prompt tuning, prefix tuning — behind one type, and loading whichever one a
//! folder holds.

use std::path::Path;
use std::sync::Arc;

use candle_core::Var;
use mosaic_models::dropout::Mode;
use mosaic_models::{Gpt2, ParamStore};

use crate::config::{ADAPTER_CONFIG, peft_type};
use crate::error::{PeftError, Result};
use crate::files::{adapter_base_model, is_adapter_folder};
use crate::lora::Lora;
use crate::prompt::{Gpt2VirtualTokens, PromptLearning, VirtualTokens};

/// What an adapter attaches to: a model's parameter store, its train/eval switch, and for prompt tuning the
/// causal LM that runs the virtual tokens.
#[derive(Clone)]
pub struct AdapterTarget {
    pub params: ParamStore,
    pub mode: Arc<Mode>,
    pub virtual_tokens: Option<Arc<dyn VirtualTokens>>,
}

impl AdapterTarget {
    /// Any model: LoRA and prefix tuning.
    pub fn new(params: &ParamStore, mode: Arc<Mode>) -> Self {
        AdapterTarget {
            params: params.clone(),
            mode,
            virtual_tokens: None,
        }
    }

    /// GPT-2: every method.
    pub fn gpt2(model: &Gpt2) -> Self {
        AdapterTarget {
            params: model.params.clone(),
            mode: model.mode.clone(),
            virtual_tokens: Some(Gpt2VirtualTokens::shared(model)),
        }
    }
}

/// An attached adapter.
#[derive(Debug)]
pub enum Adapter {
    Lora(Lora),
    Prompt(PromptLearning),
}

impl Adapter {
    /// Applies the adapter saved in `dir`, whichever method it is.
    pub fn load(target: &AdapterTarget, dir: &Path) -> Result<Self> {
        match peft_type(dir)?.as_str() {
            "LORA" => Ok(Adapter::Lora(Lora::load(
                &target.params,
                target.mode.clone(),
                dir,
            )?)),
            "PROMPT_TUNING" | "PREFIX_TUNING" => Ok(Adapter::Prompt(PromptLearning::load(
                &target.params,
                target.mode.clone(),
                dir,
                target.virtual_tokens.clone(),
            )?)),
            other => Err(PeftError::file(
                dir.join(ADAPTER_CONFIG),
                format!(
                    "peft_type `{other}` is not supported by mosaic (supported: LORA, PROMPT_TUNING, PREFIX_TUNING)"
                ),
            )),
        }
    }

    /// Records `base` as the base model the adapter is saved for (a continued adapter saved by another
    /// machine names a path that may not exist here).
    pub fn set_base_model(&mut self, base: String) {
        match self {
            Adapter::Lora(l) => l.set_base_model(base),
            Adapter::Prompt(p) => p.set_base_model(base),
        }
    }

    /// The parameters that train.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        match self {
            Adapter::Lora(l) => l.trainable(),
            Adapter::Prompt(p) => p.trainable(),
        }
    }

    /// Brings what the forward pass reads up to date with the parameters (after an optimizer step).
    pub fn refresh(&self) -> Result<()> {
        match self {
            Adapter::Lora(_) => Ok(()),
            Adapter::Prompt(p) => p.refresh(),
        }
    }

    /// One line for logs: `LoRA r = 8 on 12 projections`.
    pub fn describe(&self) -> String {
        match self {
            Adapter::Lora(l) => format!(
                "LoRA r = {} on {} projections",
                l.config().lora.r,
                l.targets().len()
            ),
            Adapter::Prompt(p) => format!(
                "{}, {} virtual tokens",
                match p.config().method {
                    crate::prompt_config::PromptMethod::PromptTuning { .. } => "prompt tuning",
                    crate::prompt_config::PromptMethod::PrefixTuning { .. } => "prefix tuning",
                },
                p.config().num_virtual_tokens
            ),
        }
    }

    /// Folds a LoRA update into the weights and detaches it; prompt learning has nothing to fold (an error).
    pub fn merge_and_unload(self) -> Result<()> {
        match self {
            Adapter::Lora(l) => l.merge_and_unload(),
            Adapter::Prompt(_) => Err(PeftError::Invalid(
                "prompt and prefix tuning have no weights to merge: use the adapter as it is"
                    .into(),
            )),
        }
    }
}

/// Loads `dir` as a whole model, or — when it is an adapter folder — its base model (`base_model_name_or_path`
/// of its config: a folder or a hub id) with the adapter applied. `load` builds the model from a folder, `target`
/// says where an adapter attaches.
pub fn load_model_or_adapter<M>(
    dir: &Path,
    load: impl FnOnce(&Path) -> mosaic_models::Result<M>,
    target: impl Fn(&M) -> AdapterTarget,
) -> Result<(M, Option<Adapter>)> {
    if !is_adapter_folder(dir) {
        return Ok((load(dir)?, None));
    }
    let base_dir = adapter_base_model(dir)?;
    let model = load(&base_dir)?;
    let adapter = Adapter::load(&target(&model), dir)?;
    Ok((model, Some(adapter)))
}
