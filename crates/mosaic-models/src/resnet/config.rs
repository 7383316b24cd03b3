//! `config.json` of a ResNet (`model_type: "resnet"`), as Hugging Face writes it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::layers::Activation;

/// The residual block a stage is made of (HF `layer_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// Two 3×3 convolutions (ResNet-18/34).
    Basic,
    /// 1×1 reduce, 3×3, 1×1 expand, with a reduction of 4 (ResNet-50 and up).
    Bottleneck,
}

impl LayerType {
    pub fn as_str(&self) -> &'static str {
        match self {
            LayerType::Basic => "basic",
            LayerType::Bottleneck => "bottleneck",
        }
    }
}

/// The fields of a ResNet `config.json` that shape the network. Unknown fields are kept in `raw` and written back.
#[derive(Debug, Clone)]
pub struct ResNetConfig {
    pub num_channels: usize,
    /// Channels out of the 7×7 stem convolution.
    pub embedding_size: usize,
    /// Channels out of each stage.
    pub hidden_sizes: Vec<usize>,
    /// Residual blocks per stage.
    pub depths: Vec<usize>,
    pub layer_type: LayerType,
    pub hidden_act: String,
    /// Whether the first stage halves the resolution (stride 2 in its first block).
    pub downsample_in_first_stage: bool,
    /// In bottleneck blocks, stride the first 1×1 convolution instead of the 3×3 one.
    pub downsample_in_bottleneck: bool,
    /// Class names in id order (`id2label`), when the config has them.
    pub labels: Vec<String>,
    pub architectures: Vec<String>,
    /// The whole JSON object as read, so saving keeps what we do not model.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

/// Batch-norm epsilon and momentum: PyTorch's `BatchNorm2d` defaults, which HF's ResNet uses.
pub const BATCH_NORM_EPS: f64 = 1e-5;
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

#[derive(Deserialize)]
struct RawResNet {
    #[serde(default = "d_channels")]
    num_channels: usize,
    // The keys that fix the network's shape are required: HF always writes them, and guessing ResNet-50's
    // defaults for a config that lacks them would load the wrong network.
    embedding_size: usize,
    hidden_sizes: Vec<usize>,
    depths: Vec<usize>,
    layer_type: String,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default)]
    downsample_in_first_stage: bool,
    #[serde(default)]
    downsample_in_bottleneck: bool,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
}

fn d_channels() -> usize {
    3
}
fn d_act() -> String {
    "relu".into()
}

/// `id2label` as a list in id order.
fn labels_from_id2label(
    map: &BTreeMap<String, String>,
) -> std::result::Result<Vec<String>, String> {
    let mut pairs = Vec::with_capacity(map.len());
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
fn label_maps(labels: &[String]) -> (serde_json::Value, serde_json::Value) {
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

impl ResNetConfig {
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
        let model_type = raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        if model_type != "resnet" {
            return Err(ModelError::UnknownModelType {
                path: path.to_path_buf(),
                model_type: if model_type.is_empty() {
                    "(none: the `model_type` key is missing)".into()
                } else {
                    model_type
                },
                supported: "resnet",
            });
        }
        let parsed: RawResNet = serde_json::from_value(serde_json::Value::Object(raw.clone()))
            .map_err(|e| bad(e.to_string()))?;
        let layer_type = match parsed.layer_type.as_str() {
            "basic" => LayerType::Basic,
            "bottleneck" => LayerType::Bottleneck,
            other => {
                return Err(bad(format!(
                    "key `layer_type`: unknown layer type `{other}` (expected `basic` or `bottleneck`)"
                )));
            }
        };
        if Activation::from_hf(&parsed.hidden_act).is_none() {
            return Err(bad(format!(
                "key `hidden_act`: unknown activation `{}`",
                parsed.hidden_act
            )));
        }
        for (key, v) in [
            ("num_channels", parsed.num_channels),
            ("embedding_size", parsed.embedding_size),
        ] {
            if v == 0 {
                return Err(bad(format!("key `{key}` must be positive")));
            }
        }
        if parsed.hidden_sizes.is_empty() {
            return Err(bad("key `hidden_sizes` must not be empty".into()));
        }
        if parsed.depths.len() != parsed.hidden_sizes.len() {
            return Err(bad(format!(
                "key `depths` has {} stages but `hidden_sizes` has {}",
                parsed.depths.len(),
                parsed.hidden_sizes.len()
            )));
        }
        if let Some(i) = parsed.depths.iter().position(|&d| d == 0) {
            return Err(bad(format!("key `depths`: stage {i} has depth 0")));
        }
        // A bottleneck reduces its width by 4 inside the block.
        let min_width = if layer_type == LayerType::Bottleneck {
            4
        } else {
            1
        };
        if let Some(&w) = parsed.hidden_sizes.iter().find(|&&w| w < min_width) {
            return Err(bad(format!(
                "key `hidden_sizes`: {w} is too small for `{}` blocks (at least {min_width})",
                layer_type.as_str()
            )));
        }
        let labels = match (&parsed.id2label, parsed.num_labels) {
            (Some(map), _) => labels_from_id2label(map).map_err(bad)?,
            // HF's default names when only `num_labels` is given.
            (None, Some(n)) => (0..n).map(|i| format!("LABEL_{i}")).collect(),
            (None, None) => Vec::new(),
        };
        Ok(ResNetConfig {
            num_channels: parsed.num_channels,
            embedding_size: parsed.embedding_size,
            hidden_sizes: parsed.hidden_sizes,
            depths: parsed.depths,
            layer_type,
            hidden_act: parsed.hidden_act,
            downsample_in_first_stage: parsed.downsample_in_first_stage,
            downsample_in_bottleneck: parsed.downsample_in_bottleneck,
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
            raw.remove("num_labels");
        }
        serde_json::Value::Object(raw)
    }

    /// Channels of the final feature map (and of [`ResNet::pooled`](super::ResNet::pooled)).
    pub fn feature_size(&self) -> usize {
        self.hidden_sizes
            .last()
            .copied()
            .unwrap_or(self.embedding_size)
    }

    pub fn activation(&self) -> Activation {
        Activation::from_hf(&self.hidden_act).unwrap_or(Activation::Relu)
    }
}
