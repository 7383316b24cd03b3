//! `config.json` of a DETR (`model_type: "detr"`) as transformers' `DetrConfig` writes it
//! (`transformers/models/detr/configuration_detr.py`): first read as [`RawDetrConfig`], a serde struct mirroring the
//! file, then validated into a [`DetrConfig`] by `TryFrom`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ModelError, Result};
use crate::hf_config;
use crate::layers::Activation;
use crate::resnet::ResNetConfig;

/// The keys of a DETR `config.json`, with transformers' defaults for the ones a file may leave out.
#[derive(Debug, Clone, Deserialize)]
pub struct RawDetrConfig {
    /// The backbone's own config; DETR here takes an HF ResNet (`model_type: "resnet"`).
    #[serde(default)]
    pub backbone_config: Option<Value>,
    /// transformers 4.x writes it; 5.x reads it once (a missing `backbone_config` with it unset means timm).
    #[serde(default)]
    pub use_timm_backbone: Option<bool>,
    #[serde(default)]
    pub use_pretrained_backbone: Option<bool>,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_queries")]
    pub num_queries: usize,
    #[serde(default = "d_layers")]
    pub encoder_layers: usize,
    #[serde(default = "d_ffn")]
    pub encoder_ffn_dim: usize,
    #[serde(default = "d_heads")]
    pub encoder_attention_heads: usize,
    #[serde(default = "d_layers")]
    pub decoder_layers: usize,
    #[serde(default = "d_ffn")]
    pub decoder_ffn_dim: usize,
    #[serde(default = "d_heads")]
    pub decoder_attention_heads: usize,
    #[serde(default = "d_act")]
    pub activation_function: String,
    #[serde(default = "d_model")]
    pub d_model: usize,
    #[serde(default = "d_dropout")]
    pub dropout: f32,
    #[serde(default)]
    pub attention_dropout: f32,
    #[serde(default)]
    pub activation_dropout: f32,
    #[serde(default = "d_init_std")]
    pub init_std: f64,
    #[serde(default = "d_one")]
    pub init_xavier_std: f64,
    #[serde(default)]
    pub auxiliary_loss: bool,
    #[serde(default = "d_position")]
    pub position_embedding_type: String,
    /// DC5 dilation: transformers applies it to timm backbones only, so with an HF ResNet it is read and kept
    /// but changes nothing (as there).
    #[serde(default)]
    pub dilation: Option<bool>,
    #[serde(default = "d_one")]
    pub class_cost: f64,
    #[serde(default = "d_five")]
    pub bbox_cost: f64,
    #[serde(default = "d_two")]
    pub giou_cost: f64,
    #[serde(default = "d_five")]
    pub bbox_loss_coefficient: f64,
    #[serde(default = "d_two")]
    pub giou_loss_coefficient: f64,
    #[serde(default = "d_eos")]
    pub eos_coefficient: f64,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    /// The whole object as read, so saving keeps what is not modelled; not a key of the file.
    #[serde(skip)]
    pub raw: Map<String, Value>,
    /// The file, for error messages; not a key of the file.
    #[serde(skip)]
    pub path: PathBuf,
}

fn d_channels() -> usize {
    3
}
fn d_queries() -> usize {
    100
}
fn d_layers() -> usize {
    6
}
fn d_ffn() -> usize {
    2048
}
fn d_heads() -> usize {
    8
}
fn d_act() -> String {
    "relu".into()
}
fn d_model() -> usize {
    256
}
fn d_dropout() -> f32 {
    0.1
}
fn d_init_std() -> f64 {
    0.02
}
fn d_one() -> f64 {
    1.0
}
fn d_two() -> f64 {
    2.0
}
fn d_five() -> f64 {
    5.0
}
fn d_eos() -> f64 {
    0.1
}
fn d_position() -> String {
    "sine".into()
}

/// A validated DETR config: the transformer's sizes, the ResNet backbone, the labels and the loss settings.
#[derive(Debug, Clone)]
pub struct DetrConfig {
    pub backbone: ResNetConfig,
    /// Which backbone output feeds the transformer: the last of `out_features` / `out_indices` as a count of
    /// stages run (0 = the stem's output, `n` = stage `n`'s), as HF's `ResNetBackbone` numbers them.
    pub backbone_stage: usize,
    pub num_queries: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub encoder_ffn_dim: usize,
    pub encoder_attention_heads: usize,
    pub decoder_layers: usize,
    pub decoder_ffn_dim: usize,
    pub decoder_attention_heads: usize,
    pub activation: Activation,
    pub dropout: f32,
    pub attention_dropout: f32,
    pub activation_dropout: f32,
    pub init_std: f64,
    pub init_xavier_std: f64,
    /// Whether the decoder's per-layer outputs are layer-normed and kept (the auxiliary outputs).
    pub auxiliary_loss: bool,
    /// Class names in id order; the classifier has one more output, "no object".
    pub labels: Vec<String>,
    /// Hungarian matching costs and loss weights, as the set loss reads them.
    pub class_cost: f64,
    pub bbox_cost: f64,
    pub giou_cost: f64,
    pub bbox_loss_coefficient: f64,
    pub giou_loss_coefficient: f64,
    pub eos_coefficient: f64,
    /// The whole JSON object as read, written back on save with the labels brought up to date.
    pub raw: Map<String, Value>,
}

impl TryFrom<RawDetrConfig> for DetrConfig {
    type Error = ModelError;

    fn try_from(raw: RawDetrConfig) -> Result<Self> {
        let path = raw.path.clone();
        let bad = hf_config::malformed(&path);
        if raw.use_timm_backbone == Some(true) {
            return Err(bad(
                "key `use_timm_backbone` is true: mosaic's DETR takes the Hugging Face ResNet backbone only \
                 (`use_timm_backbone: false` with a `backbone_config`, e.g. facebook/detr-resnet-50 at revision \
                 `no_timm`)"
                    .into(),
            ));
        }
        let backbone_json = raw.backbone_config.as_ref().filter(|v| !v.is_null()).ok_or_else(|| {
            bad("key `backbone_config` is missing: transformers then builds a timm backbone, which mosaic does not \
                 have (it takes `use_timm_backbone: false` with an HF ResNet `backbone_config`)"
                .into())
        })?;
        let backbone_type = backbone_json.get("model_type").and_then(Value::as_str);
        if backbone_type != Some("resnet") {
            return Err(bad(format!(
                "key `backbone_config.model_type`: mosaic's DETR has an HF ResNet backbone (`resnet`), got {}",
                backbone_type.map_or("none".to_string(), |t| format!("`{t}`"))
            )));
        }
        let backbone = ResNetConfig::parse(&backbone_json.to_string(), &path)?;
        let backbone_stage = backbone_stage(backbone_json, backbone.depths.len()).map_err(bad)?;
        if raw.position_embedding_type != "sine" {
            return Err(bad(format!(
                "key `position_embedding_type`: only `sine` is supported, got `{}`",
                raw.position_embedding_type
            )));
        }
        let activation = Activation::from_hf(&raw.activation_function).ok_or_else(|| {
            bad(format!(
                "key `activation_function`: unknown activation `{}`",
                raw.activation_function
            ))
        })?;
        hf_config::require_positive(&[
            ("d_model", raw.d_model),
            ("num_queries", raw.num_queries),
            ("encoder_attention_heads", raw.encoder_attention_heads),
            ("decoder_attention_heads", raw.decoder_attention_heads),
            ("encoder_ffn_dim", raw.encoder_ffn_dim),
            ("decoder_ffn_dim", raw.decoder_ffn_dim),
            ("decoder_layers", raw.decoder_layers),
        ])
        .map_err(bad)?;
        // The sine embedding gives each axis d_model / 2 features in (sin, cos) pairs.
        if !raw.d_model.is_multiple_of(4) {
            return Err(bad(format!(
                "key `d_model` must be a multiple of 4 (sine position features), got {}",
                raw.d_model
            )));
        }
        for (key, heads) in [
            ("encoder_attention_heads", raw.encoder_attention_heads),
            ("decoder_attention_heads", raw.decoder_attention_heads),
        ] {
            if !raw.d_model.is_multiple_of(heads) {
                return Err(bad(format!(
                    "key `{key}`: d_model {} is not a multiple of {heads}",
                    raw.d_model
                )));
            }
        }
        for (key, p) in [
            ("dropout", raw.dropout),
            ("attention_dropout", raw.attention_dropout),
            ("activation_dropout", raw.activation_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(format!("key `{key}` must be in [0, 1), got {p}")));
            }
        }
        let labels = match (&raw.id2label, raw.num_labels) {
            (Some(map), _) => hf_config::labels_from_id2label(map).map_err(bad)?,
            (None, Some(n)) => (0..n).map(|i| format!("LABEL_{i}")).collect(),
            // PretrainedConfig's default: two labels.
            (None, None) => vec!["LABEL_0".into(), "LABEL_1".into()],
        };
        if labels.is_empty() {
            return Err(bad(
                "key `id2label` is empty: a detector needs at least one class".into(),
            ));
        }
        Ok(DetrConfig {
            backbone,
            backbone_stage,
            num_queries: raw.num_queries,
            d_model: raw.d_model,
            encoder_layers: raw.encoder_layers,
            encoder_ffn_dim: raw.encoder_ffn_dim,
            encoder_attention_heads: raw.encoder_attention_heads,
            decoder_layers: raw.decoder_layers,
            decoder_ffn_dim: raw.decoder_ffn_dim,
            decoder_attention_heads: raw.decoder_attention_heads,
            activation,
            dropout: raw.dropout,
            attention_dropout: raw.attention_dropout,
            activation_dropout: raw.activation_dropout,
            init_std: raw.init_std,
            init_xavier_std: raw.init_xavier_std,
            auxiliary_loss: raw.auxiliary_loss,
            labels,
            class_cost: raw.class_cost,
            bbox_cost: raw.bbox_cost,
            giou_cost: raw.giou_cost,
            bbox_loss_coefficient: raw.bbox_loss_coefficient,
            giou_loss_coefficient: raw.giou_loss_coefficient,
            eos_coefficient: raw.eos_coefficient,
            raw: raw.raw,
        })
    }
}

/// The stage whose output DETR reads: the last of the backbone's `out_features` (`"stem"`, `"stage1"`, …) or
/// else `out_indices`, as transformers' `BackboneMixin` resolves them; neither means the last stage.
fn backbone_stage(backbone: &Value, stages: usize) -> std::result::Result<usize, String> {
    let stage = if let Some(features) = backbone.get("out_features").filter(|v| !v.is_null()) {
        let last = features
            .as_array()
            .and_then(|a| a.last())
            .and_then(Value::as_str)
            .ok_or_else(|| format!("key `backbone_config.out_features`: expected a list of stage names, got {features}"))?;
        match last {
            "stem" => 0,
            name => name
                .strip_prefix("stage")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!("key `backbone_config.out_features`: unknown stage `{name}`")
                })?,
        }
    } else if let Some(indices) = backbone.get("out_indices").filter(|v| !v.is_null()) {
        let last = indices.as_array().and_then(|a| a.last()).and_then(Value::as_i64).ok_or_else(|| {
            format!("key `backbone_config.out_indices`: expected a list of stage indices, got {indices}")
        })?;
        // Negative indices count from the end of `stage_names` (the stem and every stage).
        let n = stages as i64 + 1;
        let resolved = if last < 0 { last + n } else { last };
        usize::try_from(resolved)
            .map_err(|_| format!("key `backbone_config.out_indices`: {last} is out of range"))?
    } else {
        stages
    };
    if stage > stages {
        return Err(format!(
            "key `backbone_config.out_features`: stage {stage} does not exist (the ResNet has {stages} stages)"
        ));
    }
    Ok(stage)
}

impl DetrConfig {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&hf_config::read_text(path)?, path)
    }

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = hf_config::parse_object(text, path)?;
        hf_config::check_model_type(path, raw.get("model_type").and_then(Value::as_str), "detr")?;
        let mut parsed: RawDetrConfig = hf_config::fields(raw.clone(), path)?;
        parsed.raw = raw;
        parsed.path = path.to_path_buf();
        DetrConfig::try_from(parsed)
    }

    /// The channels of the backbone output DETR reads (the input of `input_projection`).
    pub fn backbone_channels(&self) -> usize {
        // `backbone_stage` was checked against the stages when the config was validated.
        match self.backbone_stage.checked_sub(1) {
            None => self.backbone.embedding_size,
            Some(s) => self
                .backbone
                .hidden_sizes
                .get(s)
                .copied()
                .unwrap_or(self.backbone.embedding_size),
        }
    }

    /// The config as JSON, with `architectures` and the label maps brought up to date.
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        let architectures = ["DetrForObjectDetection".to_string()];
        hf_config::set_architectures_and_labels(&mut raw, &architectures, &self.labels);
        raw.remove("num_labels");
        raw.insert("model_type".into(), Value::from("detr"));
        // transformers 5.x reads a config without the key as a timm one unless `backbone_config` is set (it
        // always is here); 4.x needs the key itself.
        raw.insert("use_timm_backbone".into(), Value::from(false));
        Value::Object(raw)
    }
}
