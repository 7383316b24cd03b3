//! Prompt tuning's and prefix tuning's settings, as PEFT's `PromptTuningConfig` / `PrefixTuningConfig` write them
//! into `adapter_config.json`.

use serde_json::{Value, json};

use crate::config::TaskType;

/// How prompt tuning's virtual tokens start.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInit {
    /// N(0, 1), as `nn.Embedding` initialises (PEFT's `RANDOM`).
    Random,
    /// The token embeddings of this text, repeated or cut to the number of virtual tokens (PEFT's `TEXT`).
    Text(String),
}

/// Which prompt-learning method, with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptMethod {
    /// Learned input embeddings put in front of the tokens.
    PromptTuning { init: PromptInit },
    /// Learned keys and values put in front of every layer's; optionally reparameterised through an MLP in
    /// training (`prefix_projection`, hidden width `encoder_hidden_size`).
    PrefixTuning {
        prefix_projection: bool,
        encoder_hidden_size: usize,
    },
}

/// A prompt-learning adapter's settings; the model's sizes (`num_layers`, heads, `token_dim`) are part of it, as
/// PEFT records them.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptConfig {
    pub method: PromptMethod,
    pub num_virtual_tokens: usize,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub token_dim: usize,
    pub base_model: Option<String>,
    pub task_type: Option<TaskType>,
    /// Heads trained and saved whole beside the virtual tokens (a classifier).
    pub modules_to_save: Vec<String>,
}

impl PromptConfig {
    pub fn peft_type(&self) -> &'static str {
        match self.method {
            PromptMethod::PromptTuning { .. } => "PROMPT_TUNING",
            PromptMethod::PrefixTuning { .. } => "PREFIX_TUNING",
        }
    }

    /// Reads PEFT's JSON of a `PROMPT_TUNING` or `PREFIX_TUNING` adapter.
    pub(crate) fn from_json(v: &Value) -> Result<Self, String> {
        let uint = |key: &str| -> Result<usize, String> {
            v.get(key)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| format!("`{key}` must be a positive integer"))
        };
        let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("");
        let method = match peft_type {
            "PROMPT_TUNING" => {
                let init = match v.get("prompt_tuning_init").and_then(Value::as_str) {
                    Some("TEXT") => PromptInit::Text(
                        v.get("prompt_tuning_init_text")
                            .and_then(Value::as_str)
                            .ok_or("prompt_tuning_init TEXT needs `prompt_tuning_init_text`")?
                            .to_string(),
                    ),
                    None | Some("RANDOM") => PromptInit::Random,
                    Some(other) => {
                        return Err(format!("prompt_tuning_init `{other}` is not supported"));
                    }
                };
                PromptMethod::PromptTuning { init }
            }
            "PREFIX_TUNING" => PromptMethod::PrefixTuning {
                prefix_projection: v
                    .get("prefix_projection")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                encoder_hidden_size: v
                    .get("encoder_hidden_size")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize,
            },
            other => {
                return Err(format!(
                    "peft_type `{other}` is not a prompt-learning method"
                ));
            }
        };
        match v.get("num_transformer_submodules").and_then(Value::as_u64) {
            None | Some(1) => {}
            Some(n) => {
                return Err(format!(
                    "num_transformer_submodules = {n}: only decoder-only or encoder-only models (1) are supported"
                ));
            }
        }
        let task_type = match v.get("task_type").and_then(Value::as_str) {
            None => None,
            Some(s) => Some(
                TaskType::from_peft(s)
                    .ok_or_else(|| format!("task_type `{s}` is not supported"))?,
            ),
        };
        let mut modules_to_save: Vec<String> = match v.get("modules_to_save") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        // PEFT lists its task heads twice.
        modules_to_save.dedup();
        let mut seen = Vec::new();
        modules_to_save.retain(|m| {
            let new = !seen.contains(m);
            seen.push(m.clone());
            new
        });
        Ok(PromptConfig {
            modules_to_save,
            method,
            num_virtual_tokens: uint("num_virtual_tokens")?,
            num_layers: uint("num_layers")?,
            num_attention_heads: uint("num_attention_heads")?,
            token_dim: uint("token_dim")?,
            base_model: v
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
            task_type,
        })
    }

    /// The JSON PEFT reads back, with only keys PEFT's own config writes.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "base_model_name_or_path": self.base_model,
            "inference_mode": true,
            "modules_to_save": if self.modules_to_save.is_empty() {
                Value::Null
            } else {
                json!(self.modules_to_save)
            },
            "num_attention_heads": self.num_attention_heads,
            "num_layers": self.num_layers,
            "num_transformer_submodules": 1,
            "num_virtual_tokens": self.num_virtual_tokens,
            "peft_type": self.peft_type(),
            "revision": null,
            "task_type": self.task_type.map(TaskType::as_peft),
            "token_dim": self.token_dim,
        });
        match &self.method {
            PromptMethod::PromptTuning { init } => {
                let (kind, text) = match init {
                    PromptInit::Random => ("RANDOM", Value::Null),
                    PromptInit::Text(t) => ("TEXT", json!(t)),
                };
                v["prompt_tuning_init"] = json!(kind);
                v["prompt_tuning_init_text"] = text;
                v["tokenizer_name_or_path"] = match init {
                    PromptInit::Random => Value::Null,
                    PromptInit::Text(_) => json!(self.base_model),
                };
            }
            PromptMethod::PrefixTuning {
                prefix_projection,
                encoder_hidden_size,
            } => {
                v["prefix_projection"] = json!(prefix_projection);
                v["encoder_hidden_size"] = json!(encoder_hidden_size);
            }
        }
        v
    }
}
