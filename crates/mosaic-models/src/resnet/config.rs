//! `config.json` of a ResNet (`model_type: "resnet"`), as Hugging Face writes it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::Result;
use crate::hf_config;
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

impl ResNetConfig {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&hf_config::read_text(path)?, path)
    }

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = hf_config::malformed(path);
        let raw = hf_config::parse_object(text, path)?;
        hf_config::check_model_type(
            path,
            raw.get("model_type").and_then(|v| v.as_str()),
            "resnet",
        )?;
        let parsed: RawResNet = hf_config::fields(raw.clone(), path)?;
        let layer_type = match parsed.layer_type.as_str() {
            "basic" => LayerType::Basic,
            "bottleneck" => LayerType::Bottleneck,
            other => {
                return Err(bad(format!(
                    "key `layer_type`: unknown layer type `{other}` (expected `basic` or `bottleneck`)"
                )));
            }
        };
        hf_config::require_activation("hidden_act", &parsed.hidden_act).map_err(bad)?;
        hf_config::require_positive(&[
            ("num_channels", parsed.num_channels),
            ("embedding_size", parsed.embedding_size),
        ])
        .map_err(bad)?;
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
            (Some(map), _) => hf_config::labels_from_id2label(map).map_err(bad)?,
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
        hf_config::set_architectures_and_labels(&mut raw, &self.architectures, &self.labels);
        if !self.labels.is_empty() {
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
