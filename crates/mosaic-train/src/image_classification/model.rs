//! The image classifiers a recipe can train, chosen by `config.json`'s `model_type`: a ViT with its
//! classification head, or a ResNet-style CNN. One enum so the run loop, evaluation and checkpoints do not care
//! which.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mosaic_models::{ModelError, ResNet, ResNetConfig, Vit, VitConfig, VitTask};

use crate::error::{Result, TrainError};
use crate::freeze::{Role, index_after};

/// The architectures `model_type` may name.
pub const SUPPORTED: &str = "vit, resnet";

/// A classifier of `(B, 3, H, W)` pixel values into `(B, labels)` logits.
pub enum ImageClassifier {
    Vit(Box<Vit>),
    ResNet(Box<ResNet>),
}

/// `config.json`'s `model_type`, or an error naming the file.
pub fn model_type(dir: &Path) -> Result<String> {
    let path = dir.join("config.json");
    if !path.exists() {
        return Err(ModelError::MissingFile { path }.into());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::file(&path, format!("not valid JSON: {e}")))?;
    Ok(value
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string())
}

fn unknown(dir: &Path, model_type: String) -> TrainError {
    ModelError::UnknownModelType {
        path: dir.join("config.json"),
        model_type: if model_type.is_empty() {
            "(none: the `model_type` key is missing)".into()
        } else {
            model_type
        },
        supported: SUPPORTED,
    }
    .into()
}

/// The class names `config.json`'s `id2label` gives (empty when it has none).
pub fn config_labels(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("config.json");
    Ok(match model_type(dir)?.as_str() {
        "vit" => VitConfig::read(&path)?.labels,
        "resnet" => ResNetConfig::read(&path)?.labels,
        other => return Err(unknown(dir, other.to_string())),
    })
}

impl ImageClassifier {
    /// The model of `dir` with a head for `labels`: its saved weights (`random = false`; a head saved for other
    /// labels is re-initialised with `seed`), or a fresh initialisation from `config.json` with `seed`.
    pub fn load(
        dir: &Path,
        labels: &[String],
        random: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let path = dir.join("config.json");
        match model_type(dir)?.as_str() {
            "vit" => {
                let vit = if random {
                    let mut config = VitConfig::read(&path)?;
                    config.labels = labels.to_vec();
                    Vit::new(config, VitTask::ImageClassification, seed, device)?
                } else {
                    Vit::from_folder(
                        dir,
                        Some(VitTask::ImageClassification),
                        Some(labels.to_vec()),
                        seed,
                        device,
                    )?
                };
                Ok(ImageClassifier::Vit(Box::new(vit)))
            }
            "resnet" => {
                let resnet = if random {
                    let mut config = ResNetConfig::read(&path)?;
                    config.labels = labels.to_vec();
                    ResNet::new(config, seed, device)?
                } else {
                    ResNet::from_folder(dir, Some(labels), seed, device)?
                };
                Ok(ImageClassifier::ResNet(Box::new(resnet)))
            }
            other => Err(unknown(dir, other.to_string())),
        }
    }

    /// A checkpoint folder as saved (its own labels and head).
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let labels = config_labels(dir)?;
        Self::load(dir, &labels, false, 0, device)
    }

    /// `"vit"` or `"resnet"`.
    pub fn model_type(&self) -> &'static str {
        match self {
            ImageClassifier::Vit(_) => "vit",
            ImageClassifier::ResNet(_) => "resnet",
        }
    }

    /// Training mode: dropout on (ViT), batch statistics and running-stat updates (ResNet).
    pub fn set_training(&self, training: bool) {
        match self {
            ImageClassifier::Vit(m) => m.set_training(training),
            ImageClassifier::ResNet(m) => m.set_training(training),
        }
    }

    /// The dropout stream and train/eval switch (a ResNet has no dropout: its stream is never drawn from).
    pub fn mode(&self) -> &mosaic_models::Mode {
        match self {
            ImageClassifier::Vit(m) => &m.mode,
            ImageClassifier::ResNet(m) => &m.mode,
        }
    }

    /// What a parameter is part of, for `train.freeze`: the stem / patch embeddings, an encoder layer (a ViT
    /// layer, a ResNet stage), the ViT's final layer norm, or the classifier.
    pub fn role(&self, name: &str) -> Role {
        let (layer_marker, count) = match self {
            ImageClassifier::Vit(m) => ("encoder.layer.", m.encoder.num_layers()),
            ImageClassifier::ResNet(m) => ("encoder.stages.", m.config.hidden_sizes.len()),
        };
        if name.starts_with("classifier") || name.contains("pooler.") {
            Role::Head
        } else if name.contains("embeddings.") || name.contains("embedder.") {
            Role::Embedding
        } else if let Some(index) = index_after(name, layer_marker) {
            Role::Layer { index, count }
        } else if name.contains("layernorm.") {
            Role::Final
        } else {
            Role::Other
        }
    }

    /// Batch norm's running statistics by HF name (none for a ViT).
    pub fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            ImageClassifier::Vit(_) => Ok(Vec::new()),
            ImageClassifier::ResNet(m) => Ok(m.buffers.all()?),
        }
    }

    /// Sets the running statistics from `saved` (a resumable checkpoint's tensors).
    pub fn restore_buffers(&self, saved: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        if let ImageClassifier::ResNet(m) = self {
            m.buffers.load_from(saved)?;
        }
        Ok(())
    }

    /// `(B, labels)` logits of `(B, 3, H, W)` pixel values.
    pub fn logits(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(match self {
            ImageClassifier::Vit(m) => m.logits(&m.forward(pixels)?.last_hidden_state)?,
            ImageClassifier::ResNet(m) => m.logits(pixels)?,
        })
    }

    /// The trainable parameters, by HF name.
    /// Where an adapter attaches (ViT; a ResNet has no attention projections for one).
    pub fn adapter_target(&self) -> Result<mosaic_peft::AdapterTarget> {
        match self {
            ImageClassifier::Vit(m) => {
                Ok(mosaic_peft::AdapterTarget::new(&m.params, m.mode.clone()))
            }
            ImageClassifier::ResNet(_) => Err(crate::error::TrainError::Invalid(
                "[peft]: adapters wrap attention projections; a ResNet has none (use train.freeze)"
                    .into(),
            )),
        }
    }

    pub fn params(&self) -> Vec<(String, Var)> {
        match self {
            ImageClassifier::Vit(m) => m.params.all(),
            ImageClassifier::ResNet(m) => m.params.all(),
        }
    }

    /// How many numbers the trainable parameters hold.
    pub fn num_parameters(&self) -> usize {
        match self {
            ImageClassifier::Vit(m) => m.params.num_elements(),
            ImageClassifier::ResNet(m) => m.params.num_elements(),
        }
    }

    /// The head's class names, in class-id order.
    pub fn labels(&self) -> &[String] {
        match self {
            ImageClassifier::Vit(m) => &m.config.labels,
            ImageClassifier::ResNet(m) => &m.config.labels,
        }
    }

    /// The side of the square input the model expects, when its config fixes one (ViT).
    pub fn image_size(&self) -> Option<usize> {
        match self {
            ImageClassifier::Vit(m) => Some(m.config.image_size),
            ImageClassifier::ResNet(_) => None,
        }
    }

    /// Writes `config.json` and `model.safetensors` into `dir` under HF names.
    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            ImageClassifier::Vit(m) => m.save(dir)?,
            ImageClassifier::ResNet(m) => m.save(dir)?,
        }
        Ok(())
    }
}
