//! A LLaVA built from parts, as LLaVA's own training starts: a pretrained CLIP's vision tower, a pretrained
//! GPT-2 and a new (seeded, random) projector. The language model's vocabulary grows to hold the `<image>`
//! token when it lies past the end (its new embedding rows are the mean of the others, as transformers'
//! `resize_token_embeddings` starts them), and the head is untied (transformers builds a GPT-2 LLaVA only so).

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use super::config::{FeatureLayers, FeatureSelect, LlavaConfig, ProjectorKind};
use super::model::{LANGUAGE, LM_HEAD, Llava, VISION};
use crate::clip::{ClipConfig, ClipVisionConfig};
use crate::error::{ModelError, Result};
use crate::folder::HfFolder;
use crate::gpt2::Gpt2Config;
use crate::hf_config;
use crate::params::Checkpoint;

/// What to join and how.
#[derive(Debug, Clone)]
pub struct LlavaParts<'a> {
    /// A CLIP folder (`model_type` "clip" or "clip_vision_model"): its vision tower is taken.
    pub vision: &'a Path,
    /// A GPT-2 folder.
    pub language: &'a Path,
    pub projector: ProjectorKind,
    /// The `<image>` token's id in the (grown) tokenizer.
    pub image_token_index: u32,
    pub feature_layers: FeatureLayers,
    pub feature_select: FeatureSelect,
}

/// The vision settings of a CLIP folder's config, and the JSON to keep as LLaVA's `vision_config`.
fn vision_config(path: &Path) -> Result<(ClipVisionConfig, Value)> {
    let text = hf_config::read_text(path)?;
    let raw = hf_config::parse_object(&text, path)?;
    let mut tower = match raw.get("model_type").and_then(Value::as_str) {
        Some("clip") => {
            let clip = ClipConfig::parse(&text, path)?;
            clip.raw.get("vision_config").cloned().unwrap_or(json!({}))
        }
        Some("clip_vision_model") => Value::Object(raw.clone()),
        other => {
            return Err(ModelError::UnknownModelType {
                path: path.to_path_buf(),
                model_type: other.unwrap_or("(none)").to_string(),
                supported: "clip, clip_vision_model (a LLaVA's vision tower)",
            });
        }
    };
    let config = ClipVisionConfig::from_json(&tower, "vision_config", path)?;
    if let Some(map) = tower.as_object_mut() {
        map.insert("model_type".into(), json!("clip_vision_model"));
        for (key, value) in [
            ("hidden_size", config.encoder.hidden_size),
            ("intermediate_size", config.encoder.intermediate_size),
            ("num_hidden_layers", config.encoder.num_hidden_layers),
            ("num_attention_heads", config.encoder.num_attention_heads),
            ("image_size", config.image_size),
            ("patch_size", config.patch_size),
        ] {
            map.insert(key.into(), json!(value));
        }
    }
    Ok((config, tower))
}

impl Llava {
    /// Joins a CLIP vision tower and a GPT-2 with a new projector (see the module docs).
    pub fn from_parts(parts: &LlavaParts<'_>, seed: u64, device: &Device) -> Result<Self> {
        let vision_folder = HfFolder::open(parts.vision)?;
        let language_folder = HfFolder::open(parts.language)?;
        let (vision, vision_json) = vision_config(&vision_folder.config())?;
        let mut text = Gpt2Config::read(&language_folder.config())?;
        let old_vocab = text.vocab_size;
        text.vocab_size = text.vocab_size.max(parts.image_token_index as usize + 1);
        text.tie_word_embeddings = false;
        let mut raw = serde_json::Map::new();
        raw.insert("model_type".into(), json!("llava"));
        raw.insert("vision_config".into(), vision_json);
        raw.insert("text_config".into(), text.to_json());
        raw.insert("projector_hidden_act".into(), json!("gelu"));
        let config = LlavaConfig {
            vision,
            text,
            image_token_index: parts.image_token_index,
            projector_hidden_act: crate::layers::Activation::Gelu,
            projector: parts.projector,
            projector_bias: true,
            feature_layers: parts.feature_layers.clone(),
            feature_select: parts.feature_select,
            tie_word_embeddings: false,
            raw,
        };
        // Validates the assembled config as a folder's would be.
        let config = LlavaConfig::parse(&config.to_json().to_string(), &vision_folder.config())?;
        if config.text.vocab_size != old_vocab {
            tracing::info!(
                "the language model's vocabulary grows from {old_vocab} to {} for the <image> token",
                config.text.vocab_size
            );
        }
        let llava = Llava::new(config, seed, device)?;
        let vision_weights = Checkpoint::read(&vision_folder.weights(), device)?;
        llava.copy_part(&vision_weights, &format!("{VISION}."), &["vision_model."])?;
        let language_weights = Checkpoint::read(&language_folder.weights(), device)?;
        llava.copy_part(
            &language_weights,
            &format!("{LANGUAGE}."),
            &["transformer.", ""],
        )?;
        let head = format!("{LM_HEAD}.weight");
        let head_source = if language_weights.contains("lm_head.weight") {
            "lm_head.weight"
        } else if language_weights.contains("transformer.wte.weight") {
            "transformer.wte.weight"
        } else {
            "wte.weight"
        };
        llava.copy_tensor(&language_weights, head_source, &head)?;
        Ok(llava)
    }

    /// Copies every parameter under `ours` from `checkpoint`, found under one of `theirs` + the rest of the name.
    fn copy_part(&self, checkpoint: &Checkpoint, ours: &str, theirs: &[&str]) -> Result<()> {
        for (name, _) in self.params.all() {
            let Some(rest) = name.strip_prefix(ours) else {
                continue;
            };
            let source = theirs
                .iter()
                .map(|prefix| format!("{prefix}{rest}"))
                .find(|n| checkpoint.contains(n));
            match source {
                Some(source) => self.copy_tensor(checkpoint, &source, &name)?,
                // CLIPModel's vision tower has every tensor LLaVA's has; a missing one is a wrong folder.
                None => {
                    return Err(ModelError::MissingTensor {
                        path: checkpoint.path.clone(),
                        name: format!("{}{rest}", theirs[0]),
                        expected: self
                            .params
                            .get(&name)
                            .map(|v| v.dims().to_vec())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sets parameter `name` from the checkpoint's `source`; an embedding (or head) with fewer rows fills the
    /// new rows with the mean of its rows.
    fn copy_tensor(&self, checkpoint: &Checkpoint, source: &str, name: &str) -> Result<()> {
        let var = self
            .params
            .get(name)
            .ok_or_else(|| ModelError::InvalidInput(format!("no parameter `{name}`")))?;
        let tensor = checkpoint
            .load(source)?
            .ok_or_else(|| ModelError::MissingTensor {
                path: checkpoint.path.clone(),
                name: source.to_string(),
                expected: var.dims().to_vec(),
            })?
            .to_device(var.device())?;
        let (want, have) = (var.dims().to_vec(), tensor.dims().to_vec());
        let tensor = if want == have {
            tensor
        } else if want.len() == 2 && have.len() == 2 && want[1] == have[1] && want[0] > have[0] {
            let mean = tensor.mean_keepdim(0)?;
            let extra = mean.broadcast_as((want[0] - have[0], want[1]))?;
            Tensor::cat(&[&tensor, &extra.contiguous()?], 0)?
        } else {
            return Err(ModelError::TensorShape {
                path: checkpoint.path.clone(),
                name: source.to_string(),
                expected: want,
                actual: have,
            });
        };
        var.set(&tensor)?;
        Ok(())
    }
}
