//! CLIP's vision tower (`vision_model.*`): class embedding + patch embedding (no bias) + position embeddings,
//! `pre_layrnorm` (HF's spelling), the encoder, and `post_layernorm` on the class token.

use std::sync::Arc;

use candle_core::Tensor;

use super::config::ClipVisionConfig;
use super::encoder::ClipEncoder;
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::grad_mode::param;
use crate::layers::{Embedding, LayerNorm};
use crate::params::{Init, ParamLoader};
use crate::vit::PatchEmbedding;

/// What the vision tower returns.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// The last encoder layer's output (no final norm), `(B, 1 + patches, H)`.
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the class token, `(B, H)`.
    pub pooled: Tensor,
    /// HF's `hidden_states`: the encoder input (after `pre_layrnorm`), then each layer's output — what LLaVA-style
    /// models take their image features from.
    pub hidden_states: Vec<Tensor>,
}

/// HF's `CLIPVisionTransformer`.
#[derive(Debug, Clone)]
pub struct ClipVisionTransformer {
    pub class_embedding: Tensor,
    pub patch_embedding: PatchEmbedding,
    pub position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    encoder: ClipEncoder,
    post_layernorm: LayerNorm,
    image_size: usize,
}

impl ClipVisionTransformer {
    /// Loads the tower from `l` (whose prefix is `vision_model`).
    pub fn load(l: &ParamLoader, c: &ClipVisionConfig, mode: &Arc<Mode>) -> Result<Self> {
        let e = &c.encoder;
        let h = e.hidden_size;
        let emb = l.pp("embeddings");
        let positions = c.grid() * c.grid() + 1;
        Ok(ClipVisionTransformer {
            class_embedding: emb.get(
                "class_embedding",
                &[h],
                Init::Normal((h as f64).powf(-0.5)),
            )?,
            patch_embedding: PatchEmbedding::load(
                &emb.pp("patch_embedding"),
                c.num_channels,
                h,
                c.patch_size,
                false,
                e.initializer_range,
            )?,
            position_embedding: Embedding::load(
                &emb.pp("position_embedding"),
                positions,
                h,
                e.initializer_range,
            )?,
            pre_layrnorm: LayerNorm::load(&l.pp("pre_layrnorm"), h, e.layer_norm_eps)?,
            encoder: ClipEncoder::load(&l.pp("encoder"), e, mode)?,
            post_layernorm: LayerNorm::load(&l.pp("post_layernorm"), h, e.layer_norm_eps)?,
            image_size: c.image_size,
        })
    }

    /// HF's `hidden_states` (the encoder input, then each layer's output) through the first `layers` encoder
    /// layers only: what LLaVA-style readers of an inner layer need, without the rest of the tower.
    pub fn hidden_states(&self, pixel_values: &Tensor, layers: usize) -> Result<Vec<Tensor>> {
        let x = self.embed(pixel_values)?;
        Ok(self.encoder.forward_layers(&x, false, None, layers)?)
    }

    /// Patch and class embeddings with positions, after `pre_layrnorm`: the encoder's input.
    fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        if (h, w) != (self.image_size, self.image_size) {
            return Err(ModelError::InvalidInput(format!(
                "input image size {h}x{w} does not match the model's {0}x{0}",
                self.image_size
            )));
        }
        let patches = self.patch_embedding.forward(pixel_values)?;
        let dim = patches.dim(2)?;
        let class = param(&self.class_embedding)
            .reshape((1, 1, dim))?
            .broadcast_as((b, 1, dim))?;
        let x = Tensor::cat(&[&class, &patches], 1)?;
        let x = self.position_embedding.add_positions(&x, None, 0)?;
        Ok(self.pre_layrnorm.forward(&x)?)
    }

    /// `(B, C, S, S)` pixel values (as the image processor makes them).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<ClipVisionOutput> {
        let x = self.embed(pixel_values)?;
        let hidden_states = self.encoder.forward(&x, false, None)?;
        let last_hidden_state = hidden_states.last().cloned().unwrap_or(x);
        let cls = last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.post_layernorm.forward(&cls)?;
        Ok(ClipVisionOutput {
            last_hidden_state,
            pooled,
            hidden_states,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.encoder.num_layers()
    }
}
