//! `config.json` of a CLIP model (`model_type: "clip"`), whose tower settings nest under `text_config` and
//! `vision_config`.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::hf_config;
use crate::layers::Activation;

/// CLIP's activations are the shared ones (`quick_gelu` included).
pub type ClipActivation = Activation;

/// One tower's encoder settings (the keys shared by `text_config` and `vision_config`).
#[derive(Debug, Clone)]
pub struct ClipEncoderConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    pub attention_dropout: f32,
    pub initializer_range: f64,
}

/// The text tower's settings.
#[derive(Debug, Clone)]
pub struct ClipTextConfig {
    pub encoder: ClipEncoderConfig,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    /// The end-of-text token whose final state is the text embedding. `2` selects transformers' legacy rule
    /// (the position of the largest token id).
    pub eos_token_id: u32,
}

/// The vision tower's settings.
#[derive(Debug, Clone)]
pub struct ClipVisionConfig {
    pub encoder: ClipEncoderConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
}

impl ClipVisionConfig {
    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// A whole CLIP `config.json`. Unknown fields are kept in `raw` and written back.
#[derive(Debug, Clone)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
    pub raw: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawEncoder {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    attention_dropout: f32,
    #[serde(default = "d_init")]
    initializer_range: f64,
}

#[derive(Deserialize)]
struct RawText {
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_positions")]
    max_position_embeddings: usize,
    #[serde(default = "d_pad")]
    pad_token_id: u32,
    #[serde(default = "d_bos")]
    bos_token_id: u32,
    #[serde(default = "d_eos")]
    eos_token_id: u32,
}

#[derive(Deserialize)]
struct RawVision {
    #[serde(default = "d_image")]
    image_size: usize,
    #[serde(default = "d_patch")]
    patch_size: usize,
    #[serde(default = "d_channels")]
    num_channels: usize,
}

#[derive(Deserialize)]
struct RawClip {
    model_type: Option<String>,
    #[serde(default = "d_projection")]
    projection_dim: usize,
    #[serde(default = "d_logit_scale")]
    logit_scale_init_value: f64,
}

fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_init() -> f64 {
    0.02
}
fn d_vocab() -> usize {
    49408
}
fn d_positions() -> usize {
    77
}
fn d_pad() -> u32 {
    1
}
fn d_bos() -> u32 {
    49406
}
fn d_eos() -> u32 {
    49407
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_channels() -> usize {
    3
}
fn d_projection() -> usize {
    512
}
fn d_logit_scale() -> f64 {
    2.6592
}

/// Fills in transformers' defaults for the tower keys a config leaves out.
fn with_defaults(tower: &Value, defaults: &[(&str, Value)]) -> Value {
    let mut map = tower.as_object().cloned().unwrap_or_default();
    for (k, v) in defaults {
        if !map.contains_key(*k) || map[*k].is_null() {
            map.insert((*k).to_string(), v.clone());
        }
    }
    Value::Object(map)
}

fn encoder(v: &Value, section: &str) -> std::result::Result<ClipEncoderConfig, String> {
    let raw: RawEncoder =
        serde_json::from_value(v.clone()).map_err(|e| format!("key `{section}`: {e}"))?;
    let hidden_act = Activation::from_hf(&raw.hidden_act).ok_or_else(|| {
        format!(
            "key `{section}.hidden_act`: unknown activation `{}`",
            raw.hidden_act
        )
    })?;
    for (key, n) in [
        ("hidden_size", raw.hidden_size),
        ("intermediate_size", raw.intermediate_size),
        ("num_attention_heads", raw.num_attention_heads),
    ] {
        if n == 0 {
            return Err(format!("key `{section}.{key}` must be positive"));
        }
    }
    if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
        return Err(format!(
            "key `{section}.hidden_size` ({}) is not a multiple of `num_attention_heads` ({})",
            raw.hidden_size, raw.num_attention_heads
        ));
    }
    if !(0.0..1.0).contains(&raw.attention_dropout) {
        return Err(format!(
            "key `{section}.attention_dropout` ({}) is not in [0, 1)",
            raw.attention_dropout
        ));
    }
    Ok(ClipEncoderConfig {
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        hidden_act,
        layer_norm_eps: raw.layer_norm_eps,
        attention_dropout: raw.attention_dropout,
        initializer_range: raw.initializer_range,
    })
}

impl ClipVisionConfig {
    /// Reads a vision tower's settings from the JSON object `tower` (`vision_config` of a CLIP or LLaVA config,
    /// or a whole `clip_vision_model` config), filling in transformers' `CLIPVisionConfig` defaults; `section`
    /// names the object in errors, `path` the file.
    pub fn from_json(tower: &Value, section: &str, path: &Path) -> Result<Self> {
        let bad = hf_config::malformed(path);
        let tower = with_defaults(
            tower,
            &[
                ("hidden_size", 768.into()),
                ("intermediate_size", 3072.into()),
                ("num_hidden_layers", 12.into()),
                ("num_attention_heads", 12.into()),
            ],
        );
        let encoder = encoder(&tower, section).map_err(bad)?;
        let v: RawVision =
            serde_json::from_value(tower).map_err(|e| bad(format!("key `{section}`: {e}")))?;
        if v.patch_size == 0 || v.image_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(bad(format!(
                "key `{section}.image_size` ({}) must be a positive multiple of `patch_size` ({})",
                v.image_size, v.patch_size
            )));
        }
        Ok(ClipVisionConfig {
            encoder,
            image_size: v.image_size,
            patch_size: v.patch_size,
            num_channels: v.num_channels,
        })
    }
}

impl ClipConfig {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&hf_config::read_text(path)?, path)
    }

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = hf_config::malformed(path);
        let raw = hf_config::parse_object(text, path)?;
        let top: RawClip = hf_config::fields(raw.clone(), path)?;
        hf_config::check_model_type(path, top.model_type.as_deref(), "clip")?;
        // transformers' CLIPTextConfig / CLIPVisionConfig defaults, for configs that leave keys out.
        let text_tower = with_defaults(
            raw.get("text_config").unwrap_or(&Value::Null),
            &[
                ("hidden_size", 512.into()),
                ("intermediate_size", 2048.into()),
                ("num_hidden_layers", 12.into()),
                ("num_attention_heads", 8.into()),
            ],
        );
        let text_enc = encoder(&text_tower, "text_config").map_err(bad)?;
        let t: RawText = serde_json::from_value(text_tower)
            .map_err(|e| bad(format!("key `text_config`: {e}")))?;
        let vision = ClipVisionConfig::from_json(
            raw.get("vision_config").unwrap_or(&Value::Null),
            "vision_config",
            path,
        )?;
        if t.vocab_size == 0 || t.max_position_embeddings == 0 {
            return Err(bad(
                "key `text_config.vocab_size` and `max_position_embeddings` must be positive"
                    .into(),
            ));
        }
        if top.projection_dim == 0 {
            return Err(bad("key `projection_dim` must be positive".into()));
        }
        Ok(ClipConfig {
            text: ClipTextConfig {
                encoder: text_enc,
                vocab_size: t.vocab_size,
                max_position_embeddings: t.max_position_embeddings,
                pad_token_id: t.pad_token_id,
                bos_token_id: t.bos_token_id,
                eos_token_id: t.eos_token_id,
            },
            vision,
            projection_dim: top.projection_dim,
            logit_scale_init_value: top.logit_scale_init_value,
            raw,
        })
    }

    /// The config as JSON, with `architectures` set to `CLIPModel`.
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("architectures".into(), serde_json::json!(["CLIPModel"]));
        Value::Object(raw)
    }
}
