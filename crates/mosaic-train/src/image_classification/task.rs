//! An image classifier as the [`Trainer`](crate::trainer::Trainer) sees it: the summed cross-entropy of a
//! batch of decoded (and, with `[data.augment]`, freshly augmented each epoch) images, counted by images.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{Tensor, Var};
use mosaic_data::image::{ImageAugmentation, ImageProcessor};

use super::checkpoint::{ImageMeta, save};
use super::data::PixelSet;
use super::evaluate::evaluate;
use super::model::ImageClassifier;
use mosaic_models::Mode;

use crate::error::Result;
use crate::observer::Observer;
use crate::recipe::Freeze;
use crate::trainer::{BatchLoss, CheckpointInfo, EvalPoint, TrainTask, metrics_json};

/// An image classifier and the images it trains and validates on.
pub struct ImageTask<'a> {
    pub model: &'a ImageClassifier,
    pub train: &'a PixelSet,
    pub valid: Option<&'a PixelSet>,
    pub labels: &'a [String],
    pub augmentation: Option<(&'a ImageAugmentation, &'a ImageProcessor)>,
    pub eval_batch: usize,
    /// `train.metric`, for the validation message.
    pub metric: &'a str,
    pub meta: &'a ImageMeta,
    pub model_dir: &'a Path,
    /// Parameters of rank ≤ 1 (biases and norm weights): no weight decay. HF's name rule misses ResNet's
    /// `normalization.weight`, so the rule here is the shape.
    pub no_decay: HashSet<String>,
    /// This epoch's augmented copy of the training images.
    pub epoch_set: Option<PixelSet>,
}

impl<'a> ImageTask<'a> {
    /// The names of the parameters of rank ≤ 1.
    pub fn rank_one_names(params: &[(String, Var)]) -> HashSet<String> {
        params
            .iter()
            .filter(|(_, v)| v.as_tensor().rank() <= 1)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn epoch_set(&self) -> &PixelSet {
        self.epoch_set.as_ref().unwrap_or(self.train)
    }
}

impl TrainTask for ImageTask<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn start_epoch(&mut self, epoch: usize) -> Result<()> {
        // Seeded by the seed, the epoch and the image: a resumed epoch draws the same images.
        if let Some((augmentation, processor)) = self.augmentation {
            self.epoch_set = Some(self.train.augmented(augmentation, processor, epoch)?);
        }
        Ok(())
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch.len()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let (pixels, labels) = self.epoch_set().batch(batch)?;
        let logits = self.model.logits(&pixels)?;
        let (loss, _) = mosaic_kernels::cross_entropy_sum(&logits, &labels, 0.0)?;
        Ok(BatchLoss::Sum {
            loss,
            count: batch.len(),
        })
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn dropout(&self) -> &Mode {
        self.model.mode()
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.model.params()
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.model.buffers()
    }

    fn restore_buffers(&self, saved: &HashMap<String, Tensor>) -> Result<()> {
        self.model.restore_buffers(saved)
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        crate::freeze::select(self.model.params(), freeze, |name| self.model.role(name))
    }

    fn no_decay(&self, name: &str) -> bool {
        self.no_decay.contains(name)
    }

    fn adaptable(&self) -> std::result::Result<crate::adapters::Adaptable, String> {
        let target = self.model.adapter_target().map_err(|e| e.to_string())?;
        Ok(crate::adapters::Adaptable {
            params: target.params,
            mode: target.mode,
            // PEFT has no image task type: a ViT adapter is a plain PeftModel with the classifier saved whole.
            task_type: None,
            default_targets: crate::adapters::BERT_TARGETS,
            heads: &["classifier"],
            base_model: self.model_dir.to_path_buf(),
            virtual_tokens: None,
            prompt_tuning_refusal: Some("it needs text tokens; use LoRA or prefix tuning on a ViT"),
        })
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        Err("FGM perturbs word embeddings; image models have none".into())
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let e = evaluate(self.model, valid, self.labels, self.eval_batch)?;
        let metric = |name: &str| e.metrics.get(name).copied().unwrap_or(f64::NAN);
        observer.message(&format!(
            "epoch {} (step {}): valid loss {:.4}, accuracy {:.4}, {} {:.4}",
            at.epoch,
            at.step,
            e.loss,
            metric("accuracy"),
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
        save(self.model, &meta, self.model_dir, dir)
    }
}
