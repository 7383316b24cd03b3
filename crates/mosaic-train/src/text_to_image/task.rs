//! The text → image model as the [`Trainer`](crate::trainer::Trainer) sees it: the weighted sum of the objectives
//! the recipe's `[loss]` turns on (each a mean over the batch, logged as `loss_<name>`), which parameters train,
//! validation, and the checkpoint folder.

use std::path::Path;

use candle_core::{Tensor, Var};
use mosaic_models::Mode;

use super::checkpoint::{TextToImageMeta, save_checkpoint};
use super::data::CaptionSet;
use super::model::{DECODER_PREFIX, TextToImageModel};
use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::Freeze;
use crate::trainer::{BatchLoss, CheckpointInfo, EvalPoint, TrainTask, param_ending};
use crate::visual_instruction::{VisualBatch, evaluate_loss};

const PROJECTOR: &str = "model.multi_modal_projector.";
const LANGUAGE: [&str; 2] = ["model.language_model.", "lm_head."];

/// The weights of the three objectives (0 = not computed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objectives {
    /// The decoder's mean squared error against the real image.
    pub image: f64,
    /// The LLaVA's captioning cross-entropy on the same pair.
    pub caption: f64,
    /// Symmetric InfoNCE between the mean projected image token and the text embedding.
    pub contrastive: f64,
}

impl Objectives {
    /// From [`Recipe::objective_weights`](crate::recipe::Recipe::objective_weights).
    pub fn from_weights(weights: &[(&str, f64)]) -> Self {
        let get = |name: &str| {
            weights
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, w)| *w)
        };
        Objectives {
            image: get("image"),
            caption: get("caption"),
            contrastive: get("contrastive"),
        }
    }

    /// `image × 1, caption × 0.5`: the objectives that are on.
    pub fn describe(&self) -> String {
        [
            ("image", self.image),
            ("caption", self.caption),
            ("contrastive", self.contrastive),
        ]
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(n, w)| format!("{n} × {w}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Which parts of the model train (the vision tower never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trains {
    /// The decoder: whenever the image objective is on.
    pub decoder: bool,
    /// The projector: with `freeze_towers = false`, or when the caption or contrastive objective is on (they
    /// reach no other trainable parameter with frozen towers).
    pub projector: bool,
    /// The language model (and its LM head): with `freeze_towers = false`.
    pub language: bool,
}

impl Trains {
    /// What trains for these objectives and `freeze_towers`.
    pub fn new(objectives: &Objectives, freeze_towers: bool) -> Self {
        Trains {
            decoder: objectives.image > 0.0,
            projector: !freeze_towers || objectives.caption > 0.0 || objectives.contrastive > 0.0,
            language: !freeze_towers,
        }
    }

    /// Whether any LLaVA parameter trains (then checkpoints hold the LLaVA).
    pub fn llava(&self) -> bool {
        self.projector || self.language
    }

    /// `decoder, projector (vision tower and language model frozen)`.
    pub fn describe(&self) -> String {
        let mut on = Vec::new();
        let mut off = vec!["vision tower"];
        for (name, trains) in [
            ("decoder", self.decoder),
            ("projector", self.projector),
            ("language model", self.language),
        ] {
            if trains {
                on.push(name)
            } else {
                off.push(name)
            }
        }
        format!("{} (frozen: {})", on.join(", "), off.join(", "))
    }

    fn includes(&self, name: &str) -> bool {
        (self.decoder && name.starts_with(&format!("{DECODER_PREFIX}.")))
            || (self.projector && name.starts_with(PROJECTOR))
            || (self.language && LANGUAGE.iter().any(|p| name.starts_with(p)))
    }
}

/// The objectives of a whole data set (eval mode, no graph).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TextToImageEvaluation {
    /// `Σ weight · objective` over the objectives that are on.
    pub loss: f64,
    /// Always measured (also when the image objective is off).
    pub image_mse: f64,
    /// The caption cross-entropy per token, when that objective is on.
    pub caption_loss: Option<f64>,
    /// The contrastive loss averaged over batches of `batch_size`, when that objective is on.
    pub contrastive_loss: Option<f64>,
}

impl TextToImageEvaluation {
    /// `image MSE 0.0123, caption loss 1.234`.
    pub fn line(&self) -> String {
        let mut s = format!("image MSE {:.5}", self.image_mse);
        if let Some(c) = self.caption_loss {
            s += &format!(", caption loss {c:.4}");
        }
        if let Some(c) = self.contrastive_loss {
            s += &format!(", contrastive loss {c:.4}");
        }
        s + &format!(" (weighted loss {:.5})", self.loss)
    }

    /// The fields a validation returns (and `mosaic.json` keeps).
    pub fn metrics(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .collect()
    }
}

/// The text embeddings `(N, n_embd)` of every caption of `set`, in batches, without a graph.
pub fn set_text_embeddings(
    model: &TextToImageModel,
    set: &CaptionSet,
    batch_size: usize,
) -> Result<Tensor> {
    let indices: Vec<usize> = (0..set.len()).collect();
    mosaic_models::no_grad(|| {
        let parts = indices
            .chunks(batch_size.max(1))
            .map(|chunk| model.text_embeddings(&set.caption_rows(chunk)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    })
}

/// The objectives of `model` on `set` (see [`TextToImageEvaluation`]).
pub fn evaluate(
    model: &TextToImageModel,
    set: &CaptionSet,
    objectives: &Objectives,
    batch_size: usize,
) -> Result<TextToImageEvaluation> {
    let training = model.llava.mode.is_training();
    model.llava.set_training(false);
    let result = mosaic_models::no_grad(|| -> Result<TextToImageEvaluation> {
        let indices: Vec<usize> = (0..set.len()).collect();
        let (mut squared, mut contrastive, mut pairs) = (0.0, 0.0, 0usize);
        for chunk in indices.chunks(batch_size.max(2)) {
            let text = model.text_embeddings(&set.caption_rows(chunk))?;
            let error = model.generate(&text)?.sub(&set.targets_of(chunk)?)?;
            squared += error.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            if objectives.contrastive > 0.0 && chunk.len() > 1 {
                let l = model.contrastive_loss(&text, &set.pixels_of(chunk)?)?;
                contrastive += l.to_scalar::<f32>()? as f64 * chunk.len() as f64;
                pairs += chunk.len();
            }
        }
        let pixels = set.targets.elem_count() / set.targets.dim(0)?.max(1);
        let image_mse = squared / (set.len() * pixels).max(1) as f64;
        let caption_loss = if objectives.caption > 0.0 {
            Some(evaluate_loss(&model.llava, &set.visual, batch_size, model.pad_id)?.loss)
        } else {
            None
        };
        let contrastive_loss =
            (objectives.contrastive > 0.0).then(|| contrastive / pairs.max(1) as f64);
        let loss = objectives.image * image_mse
            + objectives.caption * caption_loss.unwrap_or(0.0)
            + objectives.contrastive * contrastive_loss.unwrap_or(0.0);
        Ok(TextToImageEvaluation {
            loss,
            image_mse,
            caption_loss,
            contrastive_loss,
        })
    });
    model.llava.set_training(training);
    result
}

/// The text → image model, its objectives and the data it trains and validates on.
pub struct TextToImageTask<'a> {
    pub model: &'a TextToImageModel,
    pub objectives: Objectives,
    pub trains: Trains,
    pub train: &'a CaptionSet,
    /// The training captions' text embeddings, computed once when the language model is frozen.
    pub train_text: Option<Tensor>,
    pub valid: Option<&'a CaptionSet>,
    pub eval_batch: usize,
    pub meta: &'a TextToImageMeta,
    /// The LLaVA folder the run starts from (where the processor files are).
    pub model_dir: &'a Path,
}

impl TextToImageTask<'_> {
    fn text(&self, batch: &[usize]) -> Result<Tensor> {
        match &self.train_text {
            Some(all) => {
                let rows: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
                let index = Tensor::from_vec(rows, batch.len(), all.device())?;
                Ok(all.index_select(&index, 0)?)
            }
            None => self.model.text_embeddings(&self.train.caption_rows(batch)),
        }
    }

    /// The caption objective: the LLaVA's token cross-entropy on the batch's conversations, per token.
    fn caption_loss(&self, batch: &[usize]) -> Result<Tensor> {
        let examples: Vec<_> = batch
            .iter()
            .map(|&i| &self.train.visual.examples[i])
            .collect();
        let b = VisualBatch::collate(&self.train.visual, &examples, self.model.pad_id)?;
        let (sum, count) = self.model.llava.loss_sum(
            &b.input_ids,
            Some(&b.pixel_values),
            &vec![1; examples.len()],
            Some(&b.attention_mask),
            &b.labels,
        )?;
        Ok(sum.affine(1.0 / count.max(1) as f64, 0.0)?)
    }
}

impl TrainTask for TextToImageTask<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn min_batch(&self) -> usize {
        if self.objectives.contrastive > 0.0 {
            2
        } else {
            1
        }
    }

    fn accumulation_refusal(&self) -> Option<String> {
        (self.objectives.contrastive > 0.0).then(|| {
            "gradient accumulation is not supported with the contrastive objective (its negatives are the \
             other pairs of the batch): set train.grad_accum = 1 or `[loss] contrastive = 0`"
                .into()
        })
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch.len()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let text = self.text(batch)?;
        let o = &self.objectives;
        let mut parts = Vec::new();
        let mut total: Option<Tensor> = None;
        let mut add = |name: &'static str, weight: f64, loss: Tensor| -> Result<()> {
            parts.push((name, loss.to_scalar::<f32>()? as f64));
            let weighted = loss.affine(weight, 0.0)?;
            total = Some(match total.take() {
                Some(t) => (t + weighted)?,
                None => weighted,
            });
            Ok(())
        };
        if o.image > 0.0 {
            let targets = self.train.targets_of(batch)?;
            add("image", o.image, self.model.image_loss(&text, &targets)?)?;
        }
        if o.caption > 0.0 {
            add("caption", o.caption, self.caption_loss(batch)?)?;
        }
        if o.contrastive > 0.0 {
            let pixels = self.train.pixels_of(batch)?;
            let loss = self.model.contrastive_loss(&text, &pixels)?;
            add("contrastive", o.contrastive, loss)?;
        }
        let loss = total.ok_or_else(|| {
            TrainError::Invalid("[loss]: every objective has weight 0; nothing to train".into())
        })?;
        let count = batch.len();
        let total = if o.contrastive > 0.0 {
            BatchLoss::InBatch { loss, count }
        } else {
            BatchLoss::Mean { loss, count }
        };
        Ok(BatchLoss::Joint {
            total: Box::new(total),
            parts,
        })
    }

    fn set_training(&self, training: bool) {
        self.model.llava.set_training(training);
    }

    fn dropout(&self) -> &Mode {
        &self.model.llava.mode
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        let mut all = self.model.llava.params.all();
        all.extend(self.model.decoder_params.all());
        all
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        if freeze != Freeze::None {
            return Err(TrainError::Invalid(format!(
                "train.freeze = \"{freeze}\": text-to-image does not read it; `freeze_towers` and `[loss]` say \
                 what trains (the decoder; the projector with the caption or contrastive objective; the \
                 language model and projector with freeze_towers = false)"
            )));
        }
        Ok(self
            .parameters()
            .into_iter()
            .filter(|(name, _)| self.trains.includes(name))
            .collect())
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        if !self.trains.language {
            return Err(
                "FGM perturbs the language model's word embeddings; set `freeze_towers = false`"
                    .into(),
            );
        }
        param_ending(self.model.llava.params.all(), "wte.weight")
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let e = evaluate(self.model, valid, &self.objectives, self.eval_batch)?;
        observer.message(&format!("epoch {}: valid {}", at.epoch, e.line()));
        Ok(Some(e.metrics()))
    }

    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.metrics.clone();
        save_checkpoint(self.model, &meta, self.model_dir, dir)
    }
}
