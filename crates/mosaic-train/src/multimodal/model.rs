//! The multimodal classifier: an image tower (pooled `(B, H_v)` features and tokens; CLIP's vision tower, a ViT
//! or the CNN — see [`towers`](super::towers)), a text tower (mean-pooled `(B, H_t)` features and its token
//! states; BERT / MiniLM or CLIP's text tower), a fusion module and a two-layer
//! head (`dense → GELU → out_proj`, as RoBERTa's classification head: a linear head on an additive fusion could
//! only add up what each modality says alone, and these labels need the two together). The fusion and the head
//! are new parameters in one store of their own (`fusion.*`, `classifier.*`, initialised with the seed); the
//! towers keep their folders' stores, listed here under `vision.` and `text.`.
//!
//! Frozen towers give the same features every epoch, so [`MultimodalClassifier::cache_features`] computes them
//! once per split and the training steps run the fusion and the head alone.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use mosaic_models::dropout::Dropout;
use mosaic_models::fusion::{CrossAttentionConfig, Scoring};
use mosaic_models::layers::{Activation, Linear, Mlp};
use mosaic_models::params::{ParamLoader, ParamStore};
use mosaic_models::{ConcatFusion, CrossAttentionFusion, Mode, WeightedSumFusion, mean_pool};

use super::data::{PairBatch, PairSet};
pub use super::features::TowerFeatures;
use super::towers::{ImageTower, TextTower};
use crate::error::{Result, TrainError};
use crate::freeze::{Role, index_after};
use crate::recipe::FreezeTowers;

/// How the two modalities are joined (`fusion` in the recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusionKind {
    /// `[image | text]` pooled features → `Linear → GELU`.
    Concat,
    /// Text tokens attend to image tokens, pooled over the real text tokens.
    CrossAttention,
    /// A softmax-weighted sum of the projected pooled features (learned static weights, reported).
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
    pub image: ImageTower,
    pub text: TextTower,
    pub kind: FusionKind,
    fusion: Fusion,
    classifier: Mlp,
    /// `fusion.*` and `classifier.*`.
    pub head: ParamStore,
    /// The dropout stream of the fusion (and of the towers when they train).
    pub mode: Arc<Mode>,
    /// Which towers stay frozen (`freeze_towers`).
    pub freeze: FreezeTowers,
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
        freeze: FreezeTowers,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let image = ImageTower::load(vision_dir, seed, device)?;
        let text = TextTower::load(text_dir, seed, device)?;
        if !freeze.image_frozen() && matches!(image, ImageTower::ResNet(_)) {
            return Err(TrainError::Invalid(format!(
                "{}: a ResNet image tower is used frozen only here (its batch-norm statistics are not part of a \
                 multimodal checkpoint); set `freeze_towers = true` or `\"image\"`",
                vision_dir.display()
            )));
        }
        let hv = image.width();
        let ht = text.width();
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
                let mut cfg = CrossAttentionConfig::new([ht, hv], ht, text.heads());
                cfg.dropout = 0.1;
                (
                    Fusion::CrossAttention(Box::new(CrossAttentionFusion::load(&fl, &cfg, &mode)?)),
                    ht,
                )
            }
            FusionKind::ImageOnly => (Fusion::Single, hv),
            FusionKind::TextOnly => (Fusion::Single, ht),
        };
        let cl = loader.pp("classifier");
        let classifier = Mlp::new(
            Linear::load(&cl.pp("dense"), width, width, 0.02)?,
            Linear::load(&cl.pp("out_proj"), width, num_labels, 0.02)?,
            Activation::Gelu,
            Dropout::new(0.0, mode.clone()),
        );
        // Frozen towers stay in eval mode: no dropout in features that do not train.
        image.set_training(false);
        text.set_training(false);
        Ok(MultimodalClassifier {
            image,
            text,
            kind,
            fusion,
            classifier,
            head,
            mode,
            freeze,
        })
    }

    /// Dropout on (`true`) or off: the fusion's, and each tower's only when it trains.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training);
        if !self.freeze.image_frozen() {
            self.image.set_training(training);
        }
        if !self.freeze.text_frozen() {
            self.text.set_training(training);
        }
    }

    /// Whether any tower trains.
    pub fn towers_train(&self) -> bool {
        self.freeze != FreezeTowers::Both
    }

    /// The parameters that may train: the fusion and head, and the towers that are not frozen.
    pub fn trainable_pool(&self) -> Vec<(String, Var)> {
        self.params()
            .into_iter()
            .filter(|(n, _)| {
                !(n.starts_with("vision.") && self.freeze.image_frozen()
                    || n.starts_with("text.") && self.freeze.text_frozen())
            })
            .collect()
    }

    /// Every parameter used: `vision.*` (of a CLIP folder, the vision tower's only), `text.*` (likewise),
    /// `fusion.*`, `classifier.*`.
    pub fn params(&self) -> Vec<(String, Var)> {
        let mut out: Vec<(String, Var)> = self
            .image
            .params()
            .into_iter()
            .map(|(n, v)| (format!("vision.{n}"), v))
            .collect();
        out.extend(
            self.text
                .params()
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
        } else if let Some(index) =
            index_after(name, "encoder.layer.").or_else(|| index_after(name, "encoder.layers."))
        {
            // BERT and ViT say `encoder.layer.N`, CLIP's towers `encoder.layers.N`.
            let count = if name.starts_with("text.") {
                self.text.num_layers()
            } else {
                self.image.num_layers()
            };
            Role::Layer { index, count }
        } else {
            Role::Other
        }
    }

    /// What the towers say about `batch`: the image's features when `image` and the text's when `text` (and the
    /// fusion reads them).
    pub fn tower_features(
        &self,
        batch: &PairBatch,
        image: bool,
        text: bool,
    ) -> Result<TowerFeatures> {
        let (image_pooled, image_tokens) = if image && self.kind != FusionKind::TextOnly {
            let v = self.image.features(&batch.pixels)?;
            (Some(v.pooled), Some(v.tokens))
        } else {
            (None, None)
        };
        let text_tokens = if text && self.kind != FusionKind::ImageOnly {
            Some(self.text.token_states(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
            )?)
        } else {
            None
        };
        Ok(TowerFeatures {
            image_pooled,
            image_tokens,
            text_tokens,
            text_mask: batch.attention_mask.clone(),
        })
    }

    /// Computes every example's features from the frozen towers once (eval mode, no graph) and keeps them in
    /// `set`, so training and evaluation run only the towers that train, the fusion and the head. Does nothing
    /// when both towers train.
    pub fn cache_features(&self, set: &mut PairSet, batch_size: usize) -> Result<()> {
        let (image, text) = (self.freeze.image_frozen(), self.freeze.text_frozen());
        if !(image || text) || set.is_empty() {
            return Ok(());
        }
        let max_t = set.max_tokens();
        let indices: Vec<usize> = (0..set.len()).collect();
        let mut parts: Vec<TowerFeatures> = Vec::new();
        mosaic_models::no_grad(|| -> Result<()> {
            for chunk in indices.chunks(batch_size.max(1)) {
                let batch = set.batch_padded(chunk, max_t)?;
                parts.push(self.tower_features(&batch, image, text)?);
            }
            Ok(())
        })?;
        let cat = |get: &dyn Fn(&TowerFeatures) -> Option<Tensor>| -> Result<Option<Tensor>> {
            let pieces: Option<Vec<Tensor>> = parts.iter().map(get).collect();
            Ok(match pieces {
                // `index_select` on the cached rows needs contiguous storage (a ViT's [CLS] slice is a view).
                Some(p) => Some(Tensor::cat(&p, 0)?.contiguous()?),
                None => None,
            })
        };
        let features = TowerFeatures {
            image_pooled: cat(&|f| f.image_pooled.clone())?,
            image_tokens: cat(&|f| f.image_tokens.clone())?,
            text_tokens: cat(&|f| f.text_tokens.clone())?,
            text_mask: Tensor::cat(
                &parts
                    .iter()
                    .map(|f| f.text_mask.clone())
                    .collect::<Vec<_>>(),
                0,
            )?,
        };
        set.set_features(features);
        Ok(())
    }

    /// `batch` → logits `(B, labels)` (and the weighted sum's weights): the frozen towers' features from the
    /// split's cache when it has them, the others computed now.
    pub fn forward(&self, batch: &PairBatch) -> Result<Forward> {
        let Some(cached) = &batch.features else {
            return self.fuse(&self.tower_features(batch, true, true)?);
        };
        let image_cached = cached.image_pooled.is_some();
        let text_cached = cached.text_tokens.is_some();
        if (image_cached || self.kind == FusionKind::TextOnly)
            && (text_cached || self.kind == FusionKind::ImageOnly)
        {
            return self.fuse(cached);
        }
        let live = self.tower_features(batch, !image_cached, !text_cached)?;
        let (text_tokens, text_mask) = if text_cached {
            (cached.text_tokens.clone(), cached.text_mask.clone())
        } else {
            (live.text_tokens, live.text_mask)
        };
        self.fuse(&TowerFeatures {
            image_pooled: cached.image_pooled.clone().or(live.image_pooled),
            image_tokens: cached.image_tokens.clone().or(live.image_tokens),
            text_tokens,
            text_mask,
        })
    }

    /// Tower features → fusion → head.
    pub fn fuse(&self, f: &TowerFeatures) -> Result<Forward> {
        let text_pooled = match &f.text_tokens {
            Some(h) => Some(mean_pool(h, &f.text_mask)?),
            None => None,
        };
        let mut weights = None;
        let features = match (
            &self.fusion,
            &f.image_pooled,
            &f.image_tokens,
            &f.text_tokens,
            text_pooled,
        ) {
            (Fusion::Concat(fusion), Some(v), _, _, Some(t)) => fusion.forward(&[v.clone(), t])?,
            (Fusion::WeightedSum(fusion), Some(v), _, _, Some(t)) => {
                let out = fusion.forward(&[v.clone(), t])?;
                weights = Some(out.weights);
                out.fused
            }
            (Fusion::CrossAttention(fusion), _, Some(tokens), Some(h), _) => {
                fusion.forward(h, Some(&f.text_mask), tokens, None)?.pooled
            }
            (Fusion::Single, Some(v), _, _, None) => v.clone(),
            (Fusion::Single, None, _, _, Some(t)) => t,
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
