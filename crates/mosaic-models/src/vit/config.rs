//! `config.json` of a ViT (`model_type: "vit"`), as Hugging Face writes it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::Result;
use crate::hf_config;
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

impl VitConfig {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&hf_config::read_text(path)?, path)
    }

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = hf_config::malformed(path);
        let raw = hf_config::parse_object(text, path)?;
        let parsed: RawVit = hf_config::fields(raw.clone(), path)?;
        hf_config::check_model_type(path, parsed.model_type.as_deref(), "vit")?;
        hf_config::require_activation("hidden_act", &parsed.hidden_act).map_err(bad)?;
        let pooler_act = parsed.pooler_act.unwrap_or_else(|| "tanh".into());
        hf_config::require_activation("pooler_act", &pooler_act).map_err(bad)?;
        let image_size = square(&parsed.image_size, "image_size").map_err(bad)?;
        let patch_size = square(&parsed.patch_size, "patch_size").map_err(bad)?;
        hf_config::require_positive(&[
            ("hidden_size", parsed.hidden_size),
            ("num_attention_heads", parsed.num_attention_heads),
            ("intermediate_size", parsed.intermediate_size),
            ("num_channels", parsed.num_channels),
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
        if !image_size.is_multiple_of(patch_size) {
            return Err(bad(format!(
                "key `image_size` ({image_size}) is not a multiple of `patch_size` ({patch_size})"
            )));
        }
        let labels = match &parsed.id2label {
            Some(map) => hf_config::labels_from_id2label(map).map_err(bad)?,
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
        hf_config::set_architectures_and_labels(&mut raw, &self.architectures, &self.labels);
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
