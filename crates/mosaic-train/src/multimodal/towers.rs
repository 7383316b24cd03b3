//! The two towers of a multimodal classifier, each chosen by its folder's `config.json` `model_type`: the image
//! tower is CLIP's vision tower (`clip`), a ViT (`vit`) or the ResNet-style CNN (`resnet`); the text tower is a
//! BERT / MiniLM (`bert`) or CLIP's text tower (`clip`). Each gives pooled features and tokens, so every fusion
//! works with every pair.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mosaic_models::{Bert, BertTask, Clip, ResNet, Vit, VitTask};

use crate::error::{Result, TrainError};
use crate::image_classification::model::model_type;

/// What an image tower gives a batch of pixels: pooled `(B, H)` features and tokens `(B, P, H)`.
pub struct ImageFeatures {
    pub pooled: Tensor,
    pub tokens: Tensor,
}

/// The image tower.
pub enum ImageTower {
    /// CLIP's vision tower: `post_layernorm` of the class token, and the last layer's tokens.
    Clip(Box<Clip>),
    /// A ViT: the final [CLS] state, and every final state.
    Vit(Box<Vit>),
    /// The CNN: the globally averaged last feature map, and its cells as tokens.
    ResNet(Box<ResNet>),
}

fn unsupported(dir: &Path, got: &str, supported: &str, what: &str) -> TrainError {
    TrainError::file(
        dir.join("config.json"),
        format!("model_type `{got}` cannot be the {what}; supported: {supported}"),
    )
}

impl ImageTower {
    /// The tower of the folder `dir`.
    pub fn load(dir: &Path, seed: u64, device: &Device) -> Result<Self> {
        Ok(match model_type(dir)?.as_str() {
            "clip" => ImageTower::Clip(Box::new(Clip::from_folder(dir, seed, device)?)),
            "vit" => ImageTower::Vit(Box::new(Vit::from_folder(
                dir,
                Some(VitTask::Base),
                None,
                seed,
                device,
            )?)),
            "resnet" => ImageTower::ResNet(Box::new(ResNet::from_folder(dir, None, seed, device)?)),
            other => return Err(unsupported(dir, other, "clip, vit, resnet", "image tower")),
        })
    }

    /// The width of its features.
    pub fn width(&self) -> usize {
        match self {
            ImageTower::Clip(c) => c.config.vision.encoder.hidden_size,
            ImageTower::Vit(v) => v.config.hidden_size,
            ImageTower::ResNet(r) => r.config.hidden_sizes.last().copied().unwrap_or(0),
        }
    }

    /// `pixels (B, 3, H, W)` → pooled features and tokens.
    pub fn features(&self, pixels: &Tensor) -> Result<ImageFeatures> {
        Ok(match self {
            ImageTower::Clip(c) => {
                let v = c.vision_outputs(pixels)?;
                ImageFeatures {
                    pooled: v.pooled,
                    tokens: v.last_hidden_state,
                }
            }
            ImageTower::Vit(v) => {
                let h = v.forward(pixels)?.last_hidden_state;
                ImageFeatures {
                    pooled: h.narrow(1, 0, 1)?.squeeze(1)?,
                    tokens: h,
                }
            }
            ImageTower::ResNet(r) => {
                let map = r.model.forward(pixels)?;
                let (b, c, h, w) = map.dims4()?;
                ImageFeatures {
                    pooled: map.mean((2, 3))?,
                    tokens: map.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?,
                }
            }
        })
    }

    /// Its parameters under their HF names (CLIP: the vision tower's only).
    pub fn params(&self) -> Vec<(String, Var)> {
        match self {
            ImageTower::Clip(c) => c
                .params
                .all()
                .into_iter()
                .filter(|(n, _)| n.starts_with("vision_model."))
                .collect(),
            ImageTower::Vit(v) => v.params.all(),
            ImageTower::ResNet(r) => r.params.all(),
        }
    }

    /// Its encoder layers (for `train.freeze = "all-but-top-N"`); the CNN counts none.
    pub fn num_layers(&self) -> usize {
        match self {
            ImageTower::Clip(c) => c.vision_model.num_layers(),
            ImageTower::Vit(v) => v.encoder.num_layers(),
            ImageTower::ResNet(_) => 0,
        }
    }

    pub fn set_training(&self, training: bool) {
        match self {
            ImageTower::Clip(c) => c.set_training(training),
            ImageTower::Vit(v) => v.set_training(training),
            ImageTower::ResNet(r) => r.set_training(training),
        }
    }

    /// Writes the tower's HF folder (`config.json`, `model.safetensors`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            ImageTower::Clip(c) => c.save(dir)?,
            ImageTower::Vit(v) => v.save(dir)?,
            ImageTower::ResNet(r) => r.save(dir)?,
        }
        Ok(())
    }
}

/// The text tower.
pub enum TextTower {
    Bert(Box<Bert>),
    /// CLIP's text tower (causal attention; its tokens after the final layer norm).
    Clip(Box<Clip>),
}

impl TextTower {
    /// The tower of the folder `dir`.
    pub fn load(dir: &Path, seed: u64, device: &Device) -> Result<Self> {
        Ok(match model_type(dir)?.as_str() {
            "bert" => TextTower::Bert(Box::new(Bert::from_folder(
                dir,
                Some(BertTask::Base),
                None,
                seed,
                device,
            )?)),
            "clip" => TextTower::Clip(Box::new(Clip::from_folder(dir, seed, device)?)),
            other => return Err(unsupported(dir, other, "bert, clip", "text tower")),
        })
    }

    /// The width of its token states.
    pub fn width(&self) -> usize {
        match self {
            TextTower::Bert(b) => b.config.hidden_size,
            TextTower::Clip(c) => c.config.text.encoder.hidden_size,
        }
    }

    /// Its attention heads (what a cross-attention fusion at its width uses).
    pub fn heads(&self) -> usize {
        match self {
            TextTower::Bert(b) => b.config.num_attention_heads,
            TextTower::Clip(c) => c.config.text.encoder.num_attention_heads,
        }
    }

    /// The most tokens it takes.
    pub fn max_positions(&self) -> usize {
        match self {
            TextTower::Bert(b) => b.config.max_position_embeddings,
            TextTower::Clip(c) => c.config.text.max_position_embeddings,
        }
    }

    /// `input_ids`, `token_type_ids`, `attention_mask (B, T)` → token states `(B, T, H)`.
    pub fn token_states(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        Ok(match self {
            TextTower::Bert(b) => {
                b.hidden_states(input_ids, Some(token_type_ids), Some(attention_mask))?
            }
            TextTower::Clip(c) => {
                c.text_outputs(input_ids, Some(attention_mask))?
                    .last_hidden_state
            }
        })
    }

    /// Its parameters under their HF names (CLIP: the text tower's only).
    pub fn params(&self) -> Vec<(String, Var)> {
        match self {
            TextTower::Bert(b) => b.params.all(),
            TextTower::Clip(c) => c
                .params
                .all()
                .into_iter()
                .filter(|(n, _)| n.starts_with("text_model."))
                .collect(),
        }
    }

    /// Its encoder layers (for `train.freeze = "all-but-top-N"`).
    pub fn num_layers(&self) -> usize {
        match self {
            TextTower::Bert(b) => b.encoder.num_layers(),
            TextTower::Clip(c) => c.text_model.num_layers(),
        }
    }

    pub fn set_training(&self, training: bool) {
        match self {
            TextTower::Bert(b) => b.set_training(training),
            TextTower::Clip(c) => c.set_training(training),
        }
    }

    /// Writes the tower's HF folder (`config.json`, `model.safetensors`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            TextTower::Bert(b) => b.save(dir)?,
            TextTower::Clip(c) => c.save(dir)?,
        }
        Ok(())
    }
}
