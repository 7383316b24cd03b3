//! A whole CLIP (`CLIPModel`): both towers, their projections into the shared embedding space and the learnable
//! temperature `logit_scale`, loaded from and saved to a Hugging Face folder under HF's tensor names.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::config::ClipConfig;
use super::text::{ClipTextOutput, ClipTextTransformer};
use super::vision::{ClipVisionOutput, ClipVisionTransformer};
use crate::bert::l2_normalize;
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::folder::{open_model, save_model};
use crate::grad_mode::param;
use crate::layers::{Linear, LinearKind};
use crate::loss::cross_entropy;
use crate::params::{Checkpoint, Init, ParamLoader, ParamStore};

/// HF's `CLIPOutput` (eval or training): L2-normalised embeddings and scaled cosine similarities.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `(texts, P)`, unit rows.
    pub text_embeds: Tensor,
    /// `(images, P)`, unit rows.
    pub image_embeds: Tensor,
    /// `exp(logit_scale) · image_embeds · text_embedsᵀ`, `(images, texts)`.
    pub logits_per_image: Tensor,
    /// Its transpose, `(texts, images)`.
    pub logits_per_text: Tensor,
}

/// CLIP with its parameters and its train/eval mode.
pub struct Clip {
    pub config: ClipConfig,
    pub text_model: ClipTextTransformer,
    pub vision_model: ClipVisionTransformer,
    /// `text_projection`, weight `(P, H_text)`, no bias.
    pub text_projection: Linear,
    /// `visual_projection`, weight `(P, H_vision)`, no bias.
    pub visual_projection: Linear,
    /// The log of the similarity temperature, a scalar.
    pub logit_scale: Tensor,
    pub params: ParamStore,
    pub mode: Arc<Mode>,
}

impl Clip {
    /// Loads a `CLIPModel` folder.
    pub fn from_folder(dir: &Path, seed: u64, device: &Device) -> Result<Self> {
        let (folder, checkpoint) = open_model(dir, device)?;
        let config = ClipConfig::read(&folder.config())?;
        Self::build(config, checkpoint, seed, device)
    }

    /// A randomly initialised model, for tests and training from scratch.
    pub fn new(config: ClipConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, Checkpoint::default(), seed, device)
    }

    fn build(
        config: ClipConfig,
        checkpoint: Checkpoint,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let store = ParamStore::new();
        let loader = ParamLoader::for_checkpoint(checkpoint, store.clone(), seed, device);
        let mode = Mode::seeded(seed);
        let text_model = ClipTextTransformer::load(&loader.pp("text_model"), &config.text, &mode)?;
        let vision_model =
            ClipVisionTransformer::load(&loader.pp("vision_model"), &config.vision, &mode)?;
        let (ht, hv, p) = (
            config.text.encoder.hidden_size,
            config.vision.encoder.hidden_size,
            config.projection_dim,
        );
        let text_projection = Linear::load_as(
            &loader.pp("text_projection"),
            ht,
            p,
            (ht as f64).powf(-0.5),
            LinearKind::NoBias,
        )?;
        let visual_projection = Linear::load_as(
            &loader.pp("visual_projection"),
            hv,
            p,
            (hv as f64).powf(-0.5),
            LinearKind::NoBias,
        )?;
        let has_scale = loader.checkpoint_has("logit_scale");
        let logit_scale = loader.get("logit_scale", &[], Init::Zeros)?;
        if !has_scale && let Some(var) = store.get("logit_scale") {
            var.set(&Tensor::new(config.logit_scale_init_value as f32, device)?)?;
        }
        Ok(Clip {
            config,
            text_model,
            vision_model,
            text_projection,
            visual_projection,
            logit_scale,
            params: store,
            mode,
        })
    }

    /// Training mode turns attention dropout on.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training)
    }

    /// The text tower on `(B, T)` token ids (right-padded; `attention_mask` 1 = token).
    pub fn text_outputs(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        self.text_model.forward(input_ids, attention_mask)
    }

    /// The vision tower on `(B, C, S, S)` pixel values.
    pub fn vision_outputs(&self, pixel_values: &Tensor) -> Result<ClipVisionOutput> {
        self.vision_model.forward(pixel_values)
    }

    /// Projected (not normalised) text features `(B, P)`: HF's `get_text_features`.
    pub fn text_features(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let pooled = self.text_outputs(input_ids, attention_mask)?.pooled;
        self.project_text(&pooled)
    }

    /// Projected (not normalised) image features `(B, P)`: HF's `get_image_features`.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pooled = self.vision_outputs(pixel_values)?.pooled;
        Ok(self.visual_projection.forward(&pooled)?)
    }

    /// The text projection applied to pooled text states `(B, H_text)` (for prompt-learning callers that run
    /// [`ClipTextTransformer::forward_embeds`] themselves).
    pub fn project_text(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(self.text_projection.forward(pooled)?)
    }

    /// `exp(logit_scale) · normalize(image) · normalize(text)ᵀ` from projected features.
    pub fn similarity(
        &self,
        image_features: &Tensor,
        text_features: &Tensor,
    ) -> Result<ClipOutput> {
        let image_embeds = l2_normalize(image_features)?;
        let text_embeds = l2_normalize(text_features)?;
        let logits_per_text = text_embeds
            .matmul(&image_embeds.t()?)?
            .broadcast_mul(&param(&self.logit_scale).exp()?)?;
        let logits_per_image = logits_per_text.t()?;
        Ok(ClipOutput {
            text_embeds,
            image_embeds,
            logits_per_image,
            logits_per_text,
        })
    }

    /// Both towers and the similarities, as HF's `CLIPModel.forward`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        pixel_values: &Tensor,
    ) -> Result<ClipOutput> {
        let image = self.image_features(pixel_values)?;
        let text = self.text_features(input_ids, attention_mask)?;
        self.similarity(&image, &text)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed) under HF names.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model(dir, &self.params, &self.config.to_json())
    }
}

/// CLIP's symmetric contrastive loss: the mean of the cross-entropies of `logits_per_text` `(N, N)` over rows
/// and over columns, the matching pair on the diagonal (HF's `clip_loss`).
pub fn clip_loss(logits_per_text: &Tensor) -> Result<Tensor> {
    let (n, m) = logits_per_text.dims2()?;
    if n != m || n == 0 {
        return Err(ModelError::InvalidInput(format!(
            "the contrastive loss needs a square similarity matrix, got {n}x{m}"
        )));
    }
    let targets = Tensor::arange(0i64, n as i64, logits_per_text.device())?;
    let caption_loss = cross_entropy(logits_per_text, &targets)?;
    let image_loss = cross_entropy(&logits_per_text.t()?.contiguous()?, &targets)?;
    Ok(((caption_loss + image_loss)? / 2.0)?)
}

/// Softmax over the last dimension of `logits` (differentiable, through mosaic-kernels).
pub fn probabilities(logits: &Tensor) -> Result<Tensor> {
    Ok(mosaic_kernels::softmax_last_dim(&logits.contiguous()?)?)
}
