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

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The adaptation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeftMethod {
    Lora,
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
    /// Which biases train: only `"none"` (PEFT's default).
    #[serde(default = "default_bias")]
    pub bias: String,
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
fn default_bias() -> String {
    "none".into()
}
