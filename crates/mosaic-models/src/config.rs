//! `config.json` as Hugging Face writes it, for the BERT family.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};

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
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let raw = match value {
            serde_json::Value::Object(m) => m,
            _ => return Err(bad("expected a JSON object".into())),
        };
        let parsed: RawBert = serde_json::from_value(serde_json::Value::Object(raw.clone()))
            .map_err(|e| bad(e.to_string()))?;
        let model_type = parsed.model_type.clone().unwrap_or_default();
        if model_type != "bert" {
            return Err(ModelError::UnknownModelType {
                path: path.to_path_buf(),
                model_type: if model_type.is_empty() {
                    "(none: the `model_type` key is missing)".into()
                } else {
                    model_type
                },
                supported: SUPPORTED_MODEL_TYPES,
            });
        }
        if let Some(kind) = &parsed.position_embedding_type
            && kind != "absolute"
        {
            return Err(bad(format!(
                "key `position_embedding_type`: `{kind}` is not supported (only `absolute`)"
            )));
        }
        if Activation::from_hf(&parsed.hidden_act).is_none() {
            return Err(bad(format!(
                "key `hidden_act`: unknown activation `{}`",
                parsed.hidden_act
            )));
        }
        for (key, v) in [
            ("vocab_size", parsed.vocab_size),
            ("hidden_size", parsed.hidden_size),
            ("num_attention_heads", parsed.num_attention_heads),
            ("intermediate_size", parsed.intermediate_size),
            ("max_position_embeddings", parsed.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(bad(format!("key `{key}` must be positive")));
            }
        }
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
            Some(map) => {
                let mut pairs = Vec::new();
                for (k, v) in map {
                    let id: usize = k
                        .parse()
                        .map_err(|_| bad(format!("key `id2label`: `{k}` is not an integer id")))?;
                    pairs.push((id, v.clone()));
                }
                pairs.sort();
                if pairs.iter().enumerate().any(|(i, (id, _))| *id != i) {
                    return Err(bad("key `id2label`: ids are not 0..n".into()));
                }
                pairs.into_iter().map(|(_, v)| v).collect()
            }
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
        raw.insert(
            "architectures".into(),
            serde_json::json!(self.architectures),
        );
        if !self.labels.is_empty() {
            let id2label: serde_json::Map<String, serde_json::Value> = self
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
                .collect();
            let label2id: serde_json::Map<String, serde_json::Value> = self
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), serde_json::json!(i)))
                .collect();
            raw.insert("id2label".into(), serde_json::Value::Object(id2label));
            raw.insert("label2id".into(), serde_json::Value::Object(label2id));
        }
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
