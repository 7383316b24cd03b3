//! A DETR as the [`Trainer`](crate::trainer::Trainer) sees it: the set loss of a padded batch of images (the
//! Hungarian-matched cross-entropy, L1 and GIoU terms over the final and every auxiliary decoder layer), a mean
//! over the batch's images, with the final layer's `ce`, `bbox` and `giou` terms logged per step; validation is
//! COCO mAP on the validation split.

use std::collections::HashSet;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mosaic_data::image::{DetrAugmentation, DetrImageProcessor};
use mosaic_models::Mode;
use mosaic_models::detr::Detr;

use super::checkpoint::{DetectionMeta, save};
use super::data::DetectionSet;
use super::evaluate::evaluate;
use super::set_loss::DetrLoss;
use crate::error::Result;
use crate::freeze::{Role, index_after};
use crate::observer::Observer;
use crate::recipe::Freeze;
use crate::trainer::{BatchLoss, CheckpointInfo, EvalPoint, TrainTask, metrics_json};

/// A DETR, its loss and the images it trains and validates on.
pub struct DetectionTask<'a> {
    pub model: &'a Detr,
    pub loss: &'a DetrLoss,
    pub processor: &'a DetrImageProcessor,
    pub train: &'a DetectionSet,
    pub valid: Option<&'a DetectionSet>,
    /// Seeded flips / crops of the training images, drawn afresh each epoch.
    pub augmentation: Option<&'a DetrAugmentation>,
    pub eval_batch: usize,
    /// `train.metric`, for the validation message.
    pub metric: &'a str,
    pub meta: &'a DetectionMeta,
    /// The `preprocessor_config.json` copied into checkpoints.
    pub processor_file: &'a Path,
    /// Whether DETR's own default freezing (the backbone's stem and first stage) applies: for a pretrained
    /// backbone; a randomly initialised one trains whole.
    pub default_frozen: bool,
    pub device: &'a Device,
    /// The epoch being trained, for the augmentation's random streams.
    pub epoch: usize,
    /// Parameters of rank ≤ 1 (biases and norm weights): no weight decay. HF's name rule misses the backbone's
    /// `normalization.weight`, so the rule here is the shape.
    pub no_decay: HashSet<String>,
}

impl DetectionTask<'_> {
    /// What a parameter is part of, for `train.freeze`: the CNN backbone counts as the embeddings (so
    /// `freeze = "embeddings"` freezes the whole backbone), the class and box heads as the head, the encoder and
    /// decoder layers as two stacks, the decoder's final layer norm as the final norm.
    pub fn role(&self, name: &str) -> Role {
        let cfg = &self.model.config;
        if name.starts_with("model.backbone.") {
            Role::Embedding
        } else if name.starts_with("class_labels_classifier.")
            || name.starts_with("bbox_predictor.")
        {
            Role::Head
        } else if let Some(index) = index_after(name, "model.encoder.layers.") {
            Role::Layer {
                index,
                count: cfg.encoder_layers,
            }
        } else if let Some(index) = index_after(name, "model.decoder.layers.") {
            Role::Layer {
                index,
                count: cfg.decoder_layers,
            }
        } else if name.starts_with("model.decoder.layernorm.") {
            Role::Final
        } else {
            Role::Other
        }
    }
}

impl TrainTask for DetectionTask<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn start_epoch(&mut self, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch.len()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        // Each epoch's images get their own random streams (the epoch times the set size, plus the image), so a
        // resumed epoch draws the same augmentations.
        let augmentation = self
            .augmentation
            .map(|a| (a, (self.epoch * self.train.len()) as u64));
        let inputs = self
            .train
            .collate(self.processor, batch, augmentation, self.device)?;
        let out = self
            .model
            .forward(&inputs.pixel_values, Some(&inputs.pixel_mask))?;
        let aux: Vec<_> = out
            .auxiliary
            .iter()
            .map(|p| (p.logits.clone(), p.pred_boxes.clone()))
            .collect();
        let loss = self
            .loss
            .forward(&out.logits, &out.pred_boxes, &aux, &inputs.targets)?;
        let part = |name: &str| loss.loss_dict.get(name).copied().unwrap_or(f64::NAN);
        Ok(BatchLoss::Joint {
            total: Box::new(BatchLoss::Mean {
                loss: loss.loss,
                count: batch.len(),
            }),
            parts: vec![
                ("ce", part("loss_ce")),
                ("bbox", part("loss_bbox")),
                ("giou", part("loss_giou")),
            ],
        })
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn dropout(&self) -> &Mode {
        &self.model.mode
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.model.params.all()
    }

    /// The backbone's batch-norm statistics: running averages that training updates when the norms train
    /// (`init = "random"`), fixed tensors otherwise; either way a resumed run continues from them.
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.model.buffers.all()?)
    }

    fn restore_buffers(&self, saved: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        Ok(self.model.buffers.load_from(saved)?)
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        let params: Vec<(String, Var)> = self
            .model
            .params
            .all()
            .into_iter()
            .filter(|(name, _)| !(self.default_frozen && Detr::frozen_by_default(name)))
            .collect();
        crate::freeze::select(params, freeze, |name| self.role(name))
    }

    fn no_decay(&self, name: &str) -> bool {
        self.no_decay.contains(name)
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        Err("FGM perturbs word embeddings; a DETR has none".into())
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let e = evaluate(
            self.model,
            self.processor,
            valid,
            self.loss,
            self.eval_batch,
            self.device,
        )?;
        let metric = |name: &str| e.metrics.get(name).copied().unwrap_or(f64::NAN);
        observer.message(&format!(
            "epoch {} (step {}): valid loss {:.4}, mAP {:.4}, mAP@.5 {:.4}, {} {:.4}",
            at.epoch,
            at.step,
            e.loss,
            metric("map"),
            metric("map50"),
            self.metric,
            metric(self.metric)
        ));
        Ok(Some(metrics_json(&e.metrics)))
    }

    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.f64_metrics();
        save(self.model, &meta, self.processor_file, dir)
    }
}
