//! `config.json` as Hugging Face writes it, for the BERT family.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::Result;
use crate::hf_config;

/// The fields of a BERT `config.json` that shape the network. Unknown fields are kept in `raw` and written back.
#[derive(Debug, Clone)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub hidden_dropout_prob: f32,
    pub attention_probs_dropout_prob: f32,
    pub classifier_dropout: Option<f32>,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    pub pad_token_id: u32,
    /// Class names in id order (`id2label`), when the config has them.
    pub labels: Vec<String>,
    pub architectures: Vec<String>,
    /// The whole JSON object as read, so saving keeps what we do not model.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawBert {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f32,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f32,
    #[serde(default)]
    classifier_dropout: Option<f32>,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_types")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_init")]
    initializer_range: f64,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f32 {
    0.1
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init() -> f64 {
    0.02
}

/// Model types that this crate can build.
pub const SUPPORTED_MODEL_TYPES: &str = "bert";

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&hf_config::read_text(path)?, path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = hf_config::malformed(path);
        let raw = hf_config::parse_object(text, path)?;
        let parsed: RawBert = hf_config::fields(raw.clone(), path)?;
        hf_config::check_model_type(path, parsed.model_type.as_deref(), SUPPORTED_MODEL_TYPES)?;
        if let Some(kind) = &parsed.position_embedding_type
            && kind != "absolute"
        {
            return Err(bad(format!(
                "key `position_embedding_type`: `{kind}` is not supported (only `absolute`)"
            )));
        }
        hf_config::require_activation("hidden_act", &parsed.hidden_act).map_err(bad)?;
        hf_config::require_positive(&[
            ("vocab_size", parsed.vocab_size),
            ("hidden_size", parsed.hidden_size),
            ("num_attention_heads", parsed.num_attention_heads),
            ("intermediate_size", parsed.intermediate_size),
            ("max_position_embeddings", parsed.max_position_embeddings),
        ])
        .map_err(bad)?;
        if !parsed
            .hidden_size
            .is_multiple_of(parsed.num_attention_heads)
        {
            return Err(bad(format!(
                "key `hidden_size` ({}) is not a multiple of `num_attention_heads` ({})",
                parsed.hidden_size, parsed.num_attention_heads
            )));
        }
        let labels = match &parsed.id2label {
            Some(map) => hf_config::labels_from_id2label(map).map_err(bad)?,
            None => Vec::new(),
        };
        Ok(BertConfig {
            vocab_size: parsed.vocab_size,
            hidden_size: parsed.hidden_size,
            num_hidden_layers: parsed.num_hidden_layers,
            num_attention_heads: parsed.num_attention_heads,
            intermediate_size: parsed.intermediate_size,
            hidden_act: parsed.hidden_act,
            hidden_dropout_prob: parsed.hidden_dropout_prob,
            attention_probs_dropout_prob: parsed.attention_probs_dropout_prob,
            classifier_dropout: parsed.classifier_dropout,
            max_position_embeddings: parsed.max_position_embeddings,
            type_vocab_size: parsed.type_vocab_size,
            layer_norm_eps: parsed.layer_norm_eps,
            initializer_range: parsed.initializer_range,
            pad_token_id: parsed.pad_token_id.unwrap_or(0),
            labels,
            architectures: parsed.architectures.unwrap_or_default(),
            raw,
        })
    }

    /// The config as JSON, with `architectures` and the label maps brought up to date.
    pub fn to_json(&self) -> serde_json::Value {
        let mut raw = self.raw.clone();
        hf_config::set_architectures_and_labels(&mut raw, &self.architectures, &self.labels);
        serde_json::Value::Object(raw)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn activation(&self) -> Activation {
        Activation::from_hf(&self.hidden_act).unwrap_or(Activation::Gelu)
    }
}

use crate::layers::Activation;
