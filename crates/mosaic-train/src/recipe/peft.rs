//! `[peft]`: train an adapter instead of the whole model (PEFT's LoRA), or continue one.
//!
//! ```toml
//! [peft]
//! method = "lora"
//! r = 8
//! alpha = 16
//! dropout = 0.05
//! target_modules = ["query", "value"]   # or a regular expression matching whole module names, or "all-linear"
//! modules_to_save = ["classifier"]      # default: the new task head, as PEFT adds it
//! use_rslora = false
//! adapter = "runs/earlier/best"         # start from a saved adapter (PEFT's or mosaic's)
//! ```
//!
//! or `method = "prompt-tuning"` (`num_virtual_tokens`, `init = "random" | "text"`, `init_text`; causal LMs) or
//! `method = "prefix-tuning"` (`num_virtual_tokens`, `prefix_projection`, `encoder_hidden_size`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The adaptation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeftMethod {
    Lora,
    PromptTuning,
    PrefixTuning,
}

impl PeftMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PeftMethod::Lora => "lora",
            PeftMethod::PromptTuning => "prompt-tuning",
            PeftMethod::PrefixTuning => "prefix-tuning",
        }
    }
}

/// How prompt tuning's virtual tokens start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptInitKind {
    Random,
    Text,
}

/// A name, a pattern, or a list of names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Words {
    One(String),
    Many(Vec<String>),
}

/// `[peft]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeftSection {
    pub method: PeftMethod,
    /// LoRA's rank. Default 8.
    #[serde(default = "default_r")]
    pub r: usize,
    /// LoRA's `lora_alpha`; the update is scaled by `alpha / r`. Default 8 (PEFT's).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout on the adapter's input in training. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Which projections get an adapter: names (a module whose name is one, or ends with `.` + one), one
    /// regular expression matched against whole module names, or `"all-linear"`. Default: PEFT's choice for
    /// the model type (BERT and ViT `query`, `value`; GPT-2 `c_attn`; CLIP `q_proj`, `v_proj`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_modules: Option<Words>,
    /// Modules trained and saved whole beside the adapter. Default: the task's new head (PEFT's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_to_save: Option<Vec<String>>,
    /// rsLoRA: scale by `alpha / √r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA: a learned magnitude per output beside the LoRA direction update.
    #[serde(default)]
    pub use_dora: bool,
    /// Which biases train: only `"none"` (PEFT's default).
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Prompt and prefix tuning: the number of virtual tokens. Default 20.
    #[serde(default = "default_virtual_tokens")]
    pub num_virtual_tokens: usize,
    /// Prompt tuning: `"random"` (default) or `"text"` (the token embeddings of `init_text`).
    #[serde(default = "default_init")]
    pub init: PromptInitKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_text: Option<String>,
    /// Prefix tuning: train the prefix through PEFT's two-layer MLP (saved projected).
    #[serde(default)]
    pub prefix_projection: bool,
    /// The MLP's hidden width. Default: the model's width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_hidden_size: Option<usize>,
    /// A saved adapter folder to start from instead of a fresh adapter; its own settings apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn default_virtual_tokens() -> usize {
    20
}
fn default_init() -> PromptInitKind {
    PromptInitKind::Random
}
fn default_bias() -> String {
    "none".into()
}
