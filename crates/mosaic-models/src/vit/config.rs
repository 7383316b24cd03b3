//! `config.json` of a ViT (`model_type: "vit"`), as Hugging Face writes it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::layers::Activation;

/// The fields of a ViT `config.json` that shape the network. Unknown fields are kept in `raw` and written back.
#[derive(Debug, Clone)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub hidden_dropout_prob: f32,
    pub attention_probs_dropout_prob: f32,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
    /// Width of the pooler's dense layer (`pooler_output_size`, default `hidden_size`).
    pub pooler_output_size: usize,
    /// The pooler's activation (`pooler_act`, default tanh).
    pub pooler_act: String,
    /// Class names in id order (`id2label`), when the config has them.
    pub labels: Vec<String>,
    pub architectures: Vec<String>,
    /// The whole JSON object as read, so saving keeps what we do not model.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawVit {
    model_type: Option<String>,
    #[serde(default = "d_hidden")]
    hidden_size: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_layers")]
    num_attention_heads: usize,
    #[serde(default = "d_inter")]
    intermediate_size: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default)]
    hidden_dropout_prob: f32,
    #[serde(default)]
    attention_probs_dropout_prob: f32,
    #[serde(default = "d_init")]
    initializer_range: f64,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
    #[serde(default = "d_image")]
    image_size: serde_json::Value,
    #[serde(default = "d_patch")]
    patch_size: serde_json::Value,
    #[serde(default = "d_channels")]
    num_channels: usize,
    #[serde(default = "d_true")]
    qkv_bias: bool,
    #[serde(default)]
    pooler_output_size: Option<usize>,
    #[serde(default)]
    pooler_act: Option<String>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
}

fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_init() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-12
}
fn d_image() -> serde_json::Value {
    224.into()
}
fn d_patch() -> serde_json::Value {
    16.into()
}
fn d_channels() -> usize {
    3
}
fn d_true() -> bool {
    true
}

/// A square side given as `N` or `[N, N]`.
fn square(v: &serde_json::Value, key: &str) -> std::result::Result<usize, String> {
    let side = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
        _ => None,
    };
    side.filter(|s| *s > 0)
        .map(|s| s as usize)
        .ok_or_else(|| format!("key `{key}`: expected a positive integer (square), got {v}"))
}

/// `id2label` as a list in id order.
pub(crate) fn labels_from_id2label(
    map: &BTreeMap<String, String>,
) -> std::result::Result<Vec<String>, String> {
    let mut pairs = Vec::new();
    for (k, v) in map {
        let id: usize = k
            .parse()
            .map_err(|_| format!("key `id2label`: `{k}` is not an integer id"))?;
        pairs.push((id, v.clone()));
    }
    pairs.sort();
    if pairs.iter().enumerate().any(|(i, (id, _))| *id != i) {
        return Err("key `id2label`: ids are not 0..n".into());
    }
    Ok(pairs.into_iter().map(|(_, v)| v).collect())
}

/// `id2label` and `label2id` for `labels`.
pub(crate) fn label_maps(labels: &[String]) -> (serde_json::Value, serde_json::Value) {
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), serde_json::json!(i)))
        .collect();
    (id2label.into(), label2id.into())
}

impl VitConfig {
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

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(raw) = value else {
            return Err(bad("expected a JSON object".into()));
        };
        let parsed: RawVit = serde_json::from_value(serde_json::Value::Object(raw.clone()))
            .map_err(|e| bad(e.to_string()))?;
        let model_type = parsed.model_type.clone().unwrap_or_default();
        if model_type != "vit" {
            return Err(ModelError::UnknownModelType {
                path: path.to_path_buf(),
                model_type: if model_type.is_empty() {
                    "(none: the `model_type` key is missing)".into()
                } else {
                    model_type
                },
                supported: "vit",
            });
        }
        if Activation::from_hf(&parsed.hidden_act).is_none() {
            return Err(bad(format!(
                "key `hidden_act`: unknown activation `{}`",
                parsed.hidden_act
            )));
        }
        let pooler_act = parsed.pooler_act.unwrap_or_else(|| "tanh".into());
        if Activation::from_hf(&pooler_act).is_none() {
            return Err(bad(format!(
                "key `pooler_act`: unknown activation `{pooler_act}`"
            )));
        }
        let image_size = square(&parsed.image_size, "image_size").map_err(bad)?;
        let patch_size = square(&parsed.patch_size, "patch_size").map_err(bad)?;
        for (key, v) in [
            ("hidden_size", parsed.hidden_size),
            ("num_attention_heads", parsed.num_attention_heads),
            ("intermediate_size", parsed.intermediate_size),
            ("num_channels", parsed.num_channels),
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
        if !image_size.is_multiple_of(patch_size) {
            return Err(bad(format!(
                "key `image_size` ({image_size}) is not a multiple of `patch_size` ({patch_size})"
            )));
        }
        let labels = match &parsed.id2label {
            Some(map) => labels_from_id2label(map).map_err(bad)?,
            None => Vec::new(),
        };
        Ok(VitConfig {
            hidden_size: parsed.hidden_size,
            num_hidden_layers: parsed.num_hidden_layers,
            num_attention_heads: parsed.num_attention_heads,
            intermediate_size: parsed.intermediate_size,
            hidden_act: parsed.hidden_act,
            hidden_dropout_prob: parsed.hidden_dropout_prob,
            attention_probs_dropout_prob: parsed.attention_probs_dropout_prob,
            initializer_range: parsed.initializer_range,
            layer_norm_eps: parsed.layer_norm_eps,
            image_size,
            patch_size,
            num_channels: parsed.num_channels,
            qkv_bias: parsed.qkv_bias,
            pooler_output_size: parsed.pooler_output_size.unwrap_or(parsed.hidden_size),
            pooler_act,
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
            let (id2label, label2id) = label_maps(&self.labels);
            raw.insert("id2label".into(), id2label);
            raw.insert("label2id".into(), label2id);
        }
        serde_json::Value::Object(raw)
    }

    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn activation(&self) -> Activation {
        Activation::from_hf(&self.hidden_act).unwrap_or(Activation::Gelu)
    }
}
