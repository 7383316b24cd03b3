//! Parameter-efficient fine-tuning for mosaic models, as Hugging Face PEFT does it and in PEFT's files.
//!
//! An adapter is a transform over a built model's named parameter tree: [`Lora::apply`] finds the projections
//! `target_modules` names in the model's [`ParamStore`](mosaic_models::ParamStore) (HF module names, PEFT's
//! matching rules), puts a [`LoraLinear`] into each one's adapter slot and registers its `A` and `B`; no model
//! file knows about it. The base weights stay untouched (the trainer freezes them, and the fused linear op then
//! skips their weight gradients). While attached, saving the model writes `adapter_config.json` and
//! `adapter_model.safetensors` as `PeftModel.save_pretrained` does; [`Lora::load`] reads such a folder, from
//! PEFT or from mosaic, and [`Lora::merge_and_unload`] folds the update into the weights for a plain HF folder.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mosaic_models::{Bert, BertTask};
//! use mosaic_peft::{AdapterConfig, Lora, LoraConfig, TargetModules};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = "../../fixtures/models/tiny-bert".as_ref();
//! let bert = Bert::from_folder(dir, Some(BertTask::Base), None, 0, &Device::Cpu)?;
//! let ids = Tensor::new(&[[2u32, 10, 4, 3]], &Device::Cpu)?;
//! let before = bert.hidden_states(&ids, None, None)?;
//!
//! let mut lora = LoraConfig::new(TargetModules::Names(vec!["query".into(), "value".into()]));
//! lora.r = 4;
//! let config = AdapterConfig { lora, base_model: None, task_type: None };
//! let adapter = Lora::apply(&bert.params, bert.mode.clone(), config, 0)?;
//! assert_eq!(adapter.targets().len(), 4); // query and value of both layers
//! // B starts at zero: the adapted model computes what the base model does.
//! let after = bert.hidden_states(&ids, None, None)?;
//! assert_eq!((after - before)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
//! # Ok(()) }
//! ```
//!
//! Prompt tuning and prefix tuning ([`PromptLearning`]) put learned keys and values in front of every attention
//! block's and shift the positions of the real tokens, as PEFT does through `past_key_values`. [`Adapter`] is any
//! of them; [`Adapter::load`] reads whichever a folder holds.
//!
//! Exports: [`Adapter`], [`AdapterTarget`], [`Lora`], [`LoraLinear`], [`LoraConfig`], [`AdapterConfig`],
//! [`PromptLearning`], [`PromptConfig`], [`PromptMethod`], [`PromptInit`], [`VirtualTokens`], [`TargetModules`],
//! [`TaskType`], [`is_adapter_folder`], [`load_model_or_adapter`], [`PeftError`].

pub mod adapter;
pub mod config;
pub mod error;
pub mod files;
pub mod lora;
pub mod prompt;
pub mod prompt_config;
pub mod target;

pub use adapter::load_model_or_adapter;
pub use adapter::{Adapter, AdapterTarget};
pub use config::{ADAPTER_CONFIG, AdapterConfig, LoraConfig, TargetModules, TaskType, peft_type};
pub use error::{PeftError, Result};
pub use files::{ADAPTER_WEIGHTS, adapter_base_model, is_adapter_folder};
pub use lora::{Lora, LoraLinear};
pub use prompt::{Gpt2VirtualTokens, PROMPT_EMBEDDINGS, PromptLearning, VirtualTokens};
pub use prompt_config::{PromptConfig, PromptInit, PromptMethod};

#[cfg(test)]
mod tests;
