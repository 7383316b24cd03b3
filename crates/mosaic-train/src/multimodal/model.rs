//! The multimodal classifier: CLIP's vision tower (pooled `(B, H_v)` features and `last_hidden_state` tokens),
//! a BERT text encoder (mean-pooled `(B, H_t)` features and its token states), a fusion module and a linear
//! head. The fusion and the head are new parameters in one store of their own (`fusion.*`, `classifier.*`,
//! initialised with the seed); the towers keep their folders' stores, listed here under `vision.` and `text.`.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use mosaic_models::fusion::{CrossAttentionConfig, Scoring};
use mosaic_models::layers::Linear;
use mosaic_models::params::{ParamLoader, ParamStore};
use mosaic_models::{
    Bert, Clip, ConcatFusion, CrossAttentionFusion, Mode, WeightedSumFusion, mean_pool,
};

use super::data::PairBatch;
use crate::error::{Result, TrainError};
use crate::freeze::{Role, index_after};

/// How the two modalities are joined (`fusion` in the recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusionKind {
    /// `[image | text]` pooled features → `Linear → GELU`.
    Concat,
    /// Text tokens attend to image tokens, pooled over the real text tokens.
    CrossAttention,
    /// A softmax-weighted sum of the projected pooled features (static weights, reported).
    WeightedSum,
    /// The head on the pooled image features alone (baseline).
    ImageOnly,
    /// The head on the pooled text features alone (baseline).
    TextOnly,
}

impl FusionKind {
    pub fn parse(s: Option<&str>) -> Result<Self> {
        Ok(match s {
            None | Some("concat") => FusionKind::Concat,
            Some("cross-attention") => FusionKind::CrossAttention,
            Some("weighted-sum") => FusionKind::WeightedSum,
            Some("image-only") => FusionKind::ImageOnly,
            Some("text-only") => FusionKind::TextOnly,
            Some(other) => {
                return Err(TrainError::Invalid(format!(
                    "recipe key `fusion`: expected \"concat\", \"cross-attention\", \"weighted-sum\", \
                     \"image-only\" or \"text-only\", got `{other}`"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FusionKind::Concat => "concat",
            FusionKind::CrossAttention => "cross-attention",
            FusionKind::WeightedSum => "weighted-sum",
            FusionKind::ImageOnly => "image-only",
            FusionKind::TextOnly => "text-only",
        }
    }
}

enum Fusion {
    Concat(ConcatFusion),
    CrossAttention(Box<CrossAttentionFusion>),
    WeightedSum(WeightedSumFusion),
    /// `image-only` / `text-only`: the head reads one pooled feature.
    Single,
}

/// The names the fusion and head parameters get, under the head store.
pub const HEAD_PREFIXES: &[&str] = &["fusion.", "classifier."];

/// Both towers, the fusion and the head.
pub struct MultimodalClassifier {
    pub clip: Clip,
    pub bert: Bert,
    pub kind: FusionKind,
    fusion: Fusion,
    classifier: Linear,
    /// `fusion.*` and `classifier.*`.
    pub head: ParamStore,
    /// The dropout stream of the fusion (and of the towers when they train).
    pub mode: Arc<Mode>,
    pub freeze_towers: bool,
}

/// What a forward returns: `logits (B, labels)`, and for `weighted-sum` the weights `(B, 2)` (image, text).
pub struct Forward {
    pub logits: Tensor,
    pub weights: Option<Tensor>,
}

impl MultimodalClassifier {
    /// Loads the vision tower of the CLIP folder `vision_dir` and the BERT of `text_dir`, and builds a fresh
    /// fusion and head for `num_labels` classes, seeded with `seed`.
    pub fn load(
        vision_dir: &Path,
        text_dir: &Path,
        kind: FusionKind,
        num_labels: usize,
        freeze_towers: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let clip = Clip::from_folder(vision_dir, seed, device)?;
        let bert = Bert::from_folder(
            text_dir,
            Some(mosaic_models::BertTask::Base),
            None,
            seed,
            device,
        )?;
        let hv = clip.config.vision.encoder.hidden_size;
        let ht = bert.config.hidden_size;
        let head = ParamStore::new();
        let loader = ParamLoader::fresh(head.clone(), seed, device);
        let mode = Mode::seeded(seed);
        let fl = loader.pp("fusion");
        let (fusion, width) = match kind {
            FusionKind::Concat => (
                Fusion::Concat(
                    ConcatFusion::load(&fl, &[hv, ht], ht, mode.clone())?.with_dropout(0.1),
                ),
                ht,
            ),
            FusionKind::WeightedSum => (
                Fusion::WeightedSum(WeightedSumFusion::load(
                    &fl,
                    &[hv, ht],
                    ht,
                    Scoring::Static,
                )?),
                ht,
            ),
            FusionKind::CrossAttention => {
                let mut cfg =
                    CrossAttentionConfig::new([ht, hv], ht, bert.config.num_attention_heads);
                cfg.dropout = 0.1;
                (
                    Fusion::CrossAttention(Box::new(CrossAttentionFusion::load(&fl, &cfg, &mode)?)),
                    ht,
                )
            }
            FusionKind::ImageOnly => (Fusion::Single, hv),
            FusionKind::TextOnly => (Fusion::Single, ht),
        };
        let classifier = Linear::load(&loader.pp("classifier"), width, num_labels, 0.02)?;
        // Frozen towers stay in eval mode: no dropout in features that do not train.
        clip.set_training(false);
        bert.set_training(false);
        Ok(MultimodalClassifier {
            clip,
            bert,
            kind,
            fusion,
            classifier,
            head,
            mode,
            freeze_towers,
        })
    }

    /// Dropout on (`true`) or off: the fusion's, and the towers' only when they train.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training);
        if !self.freeze_towers {
            self.clip.set_training(training);
            self.bert.set_training(training);
        }
    }

    /// Every parameter used: `vision.vision_model.*` (CLIP's text tower is not used and not listed), `text.*`,
    /// `fusion.*`, `classifier.*`.
    pub fn params(&self) -> Vec<(String, Var)> {
        let mut out: Vec<(String, Var)> = self
            .clip
            .params
            .all()
            .into_iter()
            .filter(|(n, _)| n.starts_with("vision_model."))
            .map(|(n, v)| (format!("vision.{n}"), v))
            .collect();
        out.extend(
            self.bert
                .params
                .all()
                .into_iter()
                .map(|(n, v)| (format!("text.{n}"), v)),
        );
        out.extend(self.head.all());
        out
    }

    /// The new parameters (fusion and head).
    pub fn head_params(&self) -> Vec<(String, Var)> {
        self.head.all()
    }

    /// A parameter's part, for `train.freeze` when the towers train.
    pub fn role(&self, name: &str) -> Role {
        if HEAD_PREFIXES.iter().any(|p| name.starts_with(p)) {
            Role::Head
        } else if name.contains("embeddings.") || name.contains("embedding.") {
            Role::Embedding
        } else if let Some(index) = index_after(name, "encoder.layer.") {
            Role::Layer {
                index,
                count: self.bert.encoder.num_layers(),
            }
        } else if let Some(index) = index_after(name, "encoder.layers.") {
            Role::Layer {
                index,
                count: self.clip.vision_model.num_layers(),
            }
        } else {
            Role::Other
        }
    }

    /// `batch` → logits `(B, labels)` (and the weighted sum's weights).
    pub fn forward(&self, batch: &PairBatch) -> Result<Forward> {
        let needs_image = self.kind != FusionKind::TextOnly;
        let needs_text = self.kind != FusionKind::ImageOnly;
        let vision = if needs_image {
            Some(self.clip.vision_outputs(&batch.pixels)?)
        } else {
            None
        };
        let text = if needs_text {
            Some(self.bert.hidden_states(
                &batch.input_ids,
                Some(&batch.token_type_ids),
                Some(&batch.attention_mask),
            )?)
        } else {
            None
        };
        let text_pooled = match &text {
            Some(h) => Some(mean_pool(h, &batch.attention_mask)?),
            None => None,
        };
        let mut weights = None;
        let features = match (&self.fusion, vision, text, text_pooled) {
            (Fusion::Concat(f), Some(v), _, Some(t)) => f.forward(&[v.pooled, t])?,
            (Fusion::WeightedSum(f), Some(v), _, Some(t)) => {
                let out = f.forward(&[v.pooled, t])?;
                weights = Some(out.weights);
                out.fused
            }
            (Fusion::CrossAttention(f), Some(v), Some(h), _) => {
                f.forward(&h, Some(&batch.attention_mask), &v.last_hidden_state, None)?
                    .pooled
            }
            (Fusion::Single, Some(v), _, None) => v.pooled,
            (Fusion::Single, None, _, Some(t)) => t,
            _ => {
                return Err(TrainError::Invalid(
                    "multimodal classifier: the fusion and its inputs do not match".into(),
                ));
            }
        };
        Ok(Forward {
            logits: self.classifier.forward(&features)?,
            weights,
        })
    }

    /// Sets the fusion and head parameters from a `head.safetensors` file; a missing or misshapen tensor is an
    /// error naming the file.
    pub fn load_head(&self, path: &Path) -> Result<()> {
        let saved = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| TrainError::file(path, e))?;
        for (name, var) in self.head.all() {
            let t = saved
                .get(&name)
                .ok_or_else(|| TrainError::file(path, format!("no tensor `{name}`")))?;
            if t.dims() != var.as_tensor().dims() {
                return Err(TrainError::file(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}, expected {:?}",
                        t.dims(),
                        var.as_tensor().dims()
                    ),
                ));
            }
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// Writes the fusion and head parameters to `path`.
    pub fn save_head(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> = self
            .head
            .all()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path).map_err(|e| TrainError::file(path, e))
    }
}
