//! `config.json` of a LLaVA model (`model_type: "llava"`): the vision tower's settings under `vision_config`
//! (a CLIP vision model), the language model's under `text_config` (a GPT-2), and how the two are joined.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::clip::ClipVisionConfig;
use crate::error::Result;
use crate::gpt2::Gpt2Config;
use crate::hf_config;
use crate::layers::Activation;

/// Which vision-tower states become image features (`vision_feature_layer`): one layer, or several whose
/// features are concatenated along the hidden dimension. Indices count HF's `hidden_states` (0 = the encoder's
/// input, `i` = layer `i`'s output), negative from the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureLayers {
    One(i64),
    Many(Vec<i64>),
}

impl FeatureLayers {
    pub fn indices(&self) -> Vec<i64> {
        match self {
            FeatureLayers::One(i) => vec![*i],
            FeatureLayers::Many(v) => v.clone(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            FeatureLayers::One(i) => json!(i),
            FeatureLayers::Many(v) => json!(v),
        }
    }
}

/// `vision_feature_select_strategy`: `"default"` drops the class token, `"full"` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSelect {
    Default,
    Full,
}

impl FeatureSelect {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureSelect::Default => "default",
            FeatureSelect::Full => "full",
        }
    }
}

/// The projector from the vision width to the language model's: HF's `LlavaMultiModalProjector`
/// (`linear_1` → activation → `linear_2`, "mlp2x_gelu" in LLaVA's own code) or a single `linear_1` (LLaVA-1's
/// "linear"; transformers has no class for it, so only the MLP form loads there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorKind {
    Mlp,
    Linear,
}

/// The key under which mosaic records a single-linear projector (transformers ignores it).
const PROJECTOR_TYPE: &str = "mosaic_projector_type";

/// A whole LLaVA `config.json`. Unknown fields are kept in `raw` and written back.
#[derive(Debug, Clone)]
pub struct LlavaConfig {
    pub vision: ClipVisionConfig,
    pub text: Gpt2Config,
    /// The `<image>` placeholder's token id (`image_token_index`, or `image_token_id` in newer configs).
    pub image_token_index: u32,
    pub projector_hidden_act: Activation,
    pub projector: ProjectorKind,
    pub projector_bias: bool,
    pub feature_layers: FeatureLayers,
    pub feature_select: FeatureSelect,
    /// The LM head shares the token embeddings (transformers builds a GPT-2 LLaVA only untied).
    pub tie_word_embeddings: bool,
    pub raw: Map<String, Value>,
}

impl LlavaConfig {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&hf_config::read_text(path)?, path)
    }

    /// Parses the text of a `config.json`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = hf_config::malformed(path);
        let raw = hf_config::parse_object(text, path)?;
        let model_type = raw.get("model_type").and_then(Value::as_str);
        hf_config::check_model_type(path, model_type, "llava")?;
        let vision = ClipVisionConfig::from_json(
            raw.get("vision_config").unwrap_or(&Value::Null),
            "vision_config",
            path,
        )?;
        let text_config = raw
            .get("text_config")
            .filter(|v| v.is_object())
            .ok_or_else(|| {
                bad("key `text_config` is missing (the GPT-2 language model's settings)".into())
            })?;
        let text_type = text_config.get("model_type").and_then(Value::as_str);
        if text_type != Some("gpt2") {
            return Err(bad(format!(
                "key `text_config.model_type`: mosaic's LLaVA has a GPT-2 language model, got {}",
                text_type.map_or("none".to_string(), |t| format!("`{t}`"))
            )));
        }
        let mut text = Gpt2Config::parse(&text_config.to_string(), path)?;
        let tie_word_embeddings = match raw.get("tie_word_embeddings") {
            Some(v) => v.as_bool().ok_or_else(|| {
                bad(format!(
                    "key `tie_word_embeddings`: expected true or false, got {v}"
                ))
            })?,
            None => false,
        };
        text.tie_word_embeddings = tie_word_embeddings;
        let image_token_index = match raw
            .get("image_token_index")
            .or_else(|| raw.get("image_token_id"))
        {
            None => 32000,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "key `image_token_index`: expected a token id, got {v}"
                    ))
                })?,
        };
        let act_name = raw
            .get("projector_hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let projector_hidden_act = Activation::from_hf(act_name).ok_or_else(|| {
            bad(format!(
                "key `projector_hidden_act`: unknown activation `{act_name}`"
            ))
        })?;
        let feature_layers = match raw.get("vision_feature_layer") {
            None => FeatureLayers::One(-2),
            Some(Value::Number(n)) => FeatureLayers::One(n.as_i64().ok_or_else(|| {
                bad(format!(
                    "key `vision_feature_layer`: expected an integer, got {n}"
                ))
            })?),
            Some(Value::Array(items)) if !items.is_empty() => FeatureLayers::Many(
                items
                    .iter()
                    .map(|v| {
                        v.as_i64().ok_or_else(|| {
                            bad(format!(
                                "key `vision_feature_layer`: expected integers, got {v}"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(v) => {
                return Err(bad(format!(
                    "key `vision_feature_layer`: expected a layer index or a non-empty list of them, got {v}"
                )));
            }
        };
        // HF's hidden_states: the encoder input, then one per layer.
        let states = vision.encoder.num_hidden_layers as i64 + 1;
        for i in feature_layers.indices() {
            if i >= states || i < -states {
                return Err(bad(format!(
                    "key `vision_feature_layer`: layer {i} does not exist (the vision tower has {states} hidden states)"
                )));
            }
        }
        let feature_select = match raw
            .get("vision_feature_select_strategy")
            .and_then(Value::as_str)
        {
            None | Some("default") => FeatureSelect::Default,
            Some("full") => FeatureSelect::Full,
            Some(other) => {
                return Err(bad(format!(
                    "key `vision_feature_select_strategy`: expected \"default\" or \"full\", got `{other}`"
                )));
            }
        };
        let projector = match raw.get(PROJECTOR_TYPE).and_then(Value::as_str) {
            None | Some("mlp2x_gelu") | Some("mlp") => ProjectorKind::Mlp,
            Some("linear") => ProjectorKind::Linear,
            Some(other) => {
                return Err(bad(format!(
                    "key `{PROJECTOR_TYPE}`: expected \"mlp2x_gelu\" or \"linear\", got `{other}`"
                )));
            }
        };
        let projector_bias = raw
            .get("multimodal_projector_bias")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        Ok(LlavaConfig {
            vision,
            text,
            image_token_index,
            projector_hidden_act,
            projector,
            projector_bias,
            feature_layers,
            feature_select,
            tie_word_embeddings,
            raw,
        })
    }

    /// Image features per image: one per patch, plus the class token under `"full"`.
    pub fn image_features(&self) -> usize {
        let grid = self.vision.grid();
        grid * grid + usize::from(self.feature_select == FeatureSelect::Full)
    }

    /// The projector's input width: the vision width times the number of feature layers.
    pub fn projector_input(&self) -> usize {
        self.vision.encoder.hidden_size * self.feature_layers.indices().len()
    }

    /// The config as JSON: what was read, with the modelled fields written from this struct.
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        let mut text = self.text.to_json();
        if let Some(text) = text.as_object_mut() {
            // A sub-config is not a model of its own.
            text.remove("architectures");
        }
        raw.insert(
            "architectures".into(),
            json!(["LlavaForConditionalGeneration"]),
        );
        raw.insert("model_type".into(), json!("llava"));
        raw.insert("text_config".into(), text);
        raw.remove("image_token_id");
        raw.insert("image_token_index".into(), json!(self.image_token_index));
        raw.insert("vision_feature_layer".into(), self.feature_layers.to_json());
        raw.insert(
            "vision_feature_select_strategy".into(),
            json!(self.feature_select.as_str()),
        );
        raw.insert(
            "multimodal_projector_bias".into(),
            json!(self.projector_bias),
        );
        raw.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings),
        );
        raw.insert("image_seq_length".into(), json!(self.image_features()));
        match self.projector {
            ProjectorKind::Mlp => {
                raw.remove(PROJECTOR_TYPE);
            }
            ProjectorKind::Linear => {
                raw.insert(PROJECTOR_TYPE.into(), json!("linear"));
            }
        }
        Value::Object(raw)
    }
}
