//! CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models"): learned context vectors that replace a
//! hand-written prompt such as "a photo of a", in front of each class name — `[SOS] ctx₁ … ctx_M name . [EOS]` —
//! through CLIP's frozen text tower. Only the context is trained; freezing the towers is the trainer's job (give
//! the optimizer [`CoopPrompt::context`] alone).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::model::Clip;
use crate::error::{ModelError, Result};
use crate::folder::save_safetensors;

/// The tensor name of the context in saved files (as in CoOp's checkpoints).
pub const CONTEXT_NAME: &str = "prompt_learner.ctx";

/// Learned context vectors shared by all classes (CoOp's unified context).
#[derive(Debug, Clone)]
pub struct CoopPrompt {
    /// `(M, H_text)`, trainable.
    pub context: Var,
}

impl CoopPrompt {
    /// `n_ctx` vectors drawn from N(0, 0.02²) (CoOp's random initialisation), seeded.
    pub fn random(n_ctx: usize, clip: &Clip, seed: u64, device: &Device) -> Result<Self> {
        if n_ctx == 0 {
            return Err(ModelError::InvalidInput(
                "CoOp needs at least one context vector".into(),
            ));
        }
        let h = clip.config.text.encoder.hidden_size;
        let mut rng = StdRng::seed_from_u64(seed);
        let data: Vec<f32> = (0..n_ctx * h)
            .map(|_| {
                // Box–Muller, as the parameter initialiser.
                let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                let u2: f64 = rng.random();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.02) as f32
            })
            .collect();
        Ok(CoopPrompt {
            context: Var::from_tensor(&Tensor::from_vec(data, (n_ctx, h), device)?)?,
        })
    }

    /// The context initialised from the token embeddings of a phrase (e.g. the ids of "a photo of a", without
    /// special tokens), as CoOp's `ctx_init`.
    pub fn from_token_ids(clip: &Clip, ids: &[u32]) -> Result<Self> {
        if ids.is_empty() {
            return Err(ModelError::InvalidInput(
                "CoOp's initial phrase has no tokens".into(),
            ));
        }
        let device = clip.text_projection.weight().device();
        let ids = Tensor::new(ids, device)?;
        let embeds = clip.text_model.token_embedding.forward(&ids)?.detach();
        Ok(CoopPrompt {
            context: Var::from_tensor(&embeds.copy()?)?,
        })
    }

    /// The context read back from [`save`](Self::save)'s file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|e| ModelError::Safetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let ctx = tensors
            .get(CONTEXT_NAME)
            .ok_or_else(|| ModelError::MissingTensor {
                path: path.to_path_buf(),
                name: CONTEXT_NAME.into(),
                expected: vec![],
            })?;
        Ok(CoopPrompt {
            context: Var::from_tensor(&ctx.to_dtype(DType::F32)?)?,
        })
    }

    /// Writes the context as safetensors (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = HashMap::from([(CONTEXT_NAME.to_string(), self.context.as_tensor().clone())]);
        save_safetensors(&tensors, path)
    }

    /// The number of context vectors.
    pub fn len(&self) -> usize {
        self.context.dims()[0]
    }

    /// Whether there are no context vectors (never, for a constructed prompt).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Projected text features `(classes, P)` of `[SOS] ctx name… [EOS]` for each class, given each class's
    /// tokenized name *with* the tokenizer's special tokens (`[SOS] name . [EOS]`). Differentiable in the
    /// context.
    pub fn text_features(&self, clip: &Clip, class_ids: &[Vec<u32>]) -> Result<Tensor> {
        let text = &clip.text_model;
        let eos = clip.config.text.eos_token_id;
        let m = self.len();
        let device = self.context.device();
        let lens: Vec<usize> = class_ids.iter().map(|ids| ids.len() + m).collect();
        let t = lens.iter().copied().max().unwrap_or(0);
        if class_ids.is_empty() || class_ids.iter().any(|ids| ids.len() < 2) {
            return Err(ModelError::InvalidInput(
                "each class needs its token ids with the start and end tokens".into(),
            ));
        }
        let mut rows = Vec::with_capacity(class_ids.len());
        let mut mask = Vec::with_capacity(class_ids.len() * t);
        let mut positions = Vec::with_capacity(class_ids.len());
        for ids in class_ids {
            let pool = text.eos_positions(&Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?)?[0];
            if ids.get(pool) != Some(&eos) && eos != 2 {
                return Err(ModelError::InvalidInput(format!(
                    "class token ids {ids:?} hold no end-of-text token ({eos})"
                )));
            }
            // Position 0 is the start token; the context goes right after it.
            positions.push(pool + m);
            let padded: Vec<u32> = ids
                .iter()
                .copied()
                .chain(std::iter::repeat(eos))
                .take(t - m)
                .collect();
            let embeds = text
                .token_embedding
                .forward(&Tensor::new(padded.as_slice(), device)?)?;
            let row = Tensor::cat(
                &[
                    &embeds.narrow(0, 0, 1)?,
                    &crate::grad_mode::param(self.context.as_tensor()),
                    &embeds.narrow(0, 1, t - m - 1)?,
                ],
                0,
            )?;
            rows.push(row);
            mask.extend((0..t).map(|i| u32::from(i < ids.len() + m)));
        }
        let embeds = Tensor::stack(&rows, 0)?;
        let mask = Tensor::from_vec(mask, (class_ids.len(), t), device)?;
        let pooled = text
            .forward_embeds(&embeds, Some(&mask), &positions)?
            .pooled;
        clip.project_text(&pooled)
    }
}

impl Clip {
    /// Clamps `logit_scale` to at most `ln(100)` in place, as CLIP training does after each optimizer step (the
    /// temperature must not make the logits explode).
    pub fn clamp_logit_scale(&self) -> Result<()> {
        let max = 100f64.ln();
        if let Some(var) = self.params.get("logit_scale") {
            let clamped = var.as_tensor().clamp(f64::NEG_INFINITY, max)?;
            var.set(&clamped)?;
        }
        Ok(())
    }
}
