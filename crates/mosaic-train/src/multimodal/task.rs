//! The multimodal classifier as the [`Trainer`](crate::trainer::Trainer) sees it: the summed cross-entropy of a
//! batch of image-text pairs, counted by pairs; validation loss and accuracy; a checkpoint of the new
//! parameters (`head.safetensors`) and a `mosaic.json` pointing at the two tower folders.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Var;
use mosaic_models::Mode;

use super::data::PairSet;
use super::model::MultimodalClassifier;
use crate::error::{Result, TrainError};
use crate::evaluate::{Evaluation, Report};
use crate::image_classification::evaluate::argmax;
use crate::metrics::ClassificationReport;
use crate::observer::Observer;
use crate::recipe::Freeze;
use crate::trainer::{BatchLoss, CheckpointInfo, EvalPoint, TrainTask, metrics_json};

/// The checkpoint file of the fusion and head parameters.
pub const HEAD_FILE: &str = "head.safetensors";

/// What a multimodal checkpoint's `mosaic.json` says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MultimodalMeta {
    /// Always `"multimodal-classification"`.
    pub task: String,
    pub fusion: String,
    pub labels: Vec<String>,
    /// The CLIP folder of the vision tower and the BERT folder of the text encoder (absolute paths).
    pub vision_model: String,
    pub text_model: String,
    pub fields: super::data::Fields,
    pub max_length: usize,
    #[serde(default)]
    pub epoch: usize,
    #[serde(default)]
    pub step: usize,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// An evaluation, with the mean weighted-sum fusion weights `[image, text]` when the fusion has them.
pub struct MultimodalEvaluation {
    pub evaluation: Evaluation,
    pub mean_weights: Option<[f64; 2]>,
}

/// Loss, accuracy and the classification report of `model` on `set` (eval mode, no graph).
pub fn evaluate(
    model: &MultimodalClassifier,
    set: &PairSet,
    labels: &[String],
    batch_size: usize,
) -> Result<MultimodalEvaluation> {
    if set.is_empty() {
        return Err(TrainError::Invalid(
            "cannot evaluate on an empty data set".into(),
        ));
    }
    model.set_training(false);
    mosaic_models::no_grad(|| {
        let mut loss_sum = 0.0;
        let mut predictions = Vec::with_capacity(set.len());
        let mut weight_sum = [0.0f64; 2];
        let mut has_weights = false;
        let indices: Vec<usize> = (0..set.len()).collect();
        for chunk in indices.chunks(batch_size.max(1)) {
            let batch = set.batch(chunk)?;
            let out = model.forward(&batch)?;
            let (sum, _) = mosaic_kernels::cross_entropy_sum(&out.logits, &batch.labels, 0.0)?;
            loss_sum += sum.to_scalar::<f32>()? as f64;
            let probs = mosaic_kernels::softmax_last_dim(&out.logits)?.to_vec2::<f32>()?;
            predictions.extend(probs.into_iter().map(|p| (argmax(&p), p)));
            if let Some(w) = out.weights {
                has_weights = true;
                for row in w.to_vec2::<f32>()? {
                    weight_sum[0] += row[0] as f64;
                    weight_sum[1] += row[1] as f64;
                }
            }
        }
        let y_pred: Vec<usize> = predictions.iter().map(|(p, _)| *p).collect();
        let report = ClassificationReport::compute(labels, &set.labels, &y_pred)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        let n = set.len() as f64;
        let loss = loss_sum / n;
        let metrics = crate::evaluate::classification_metrics(loss, &report);
        Ok(MultimodalEvaluation {
            evaluation: Evaluation {
                loss,
                metrics,
                report: Report::Classification(report),
                predictions,
            },
            mean_weights: has_weights.then(|| [weight_sum[0] / n, weight_sum[1] / n]),
        })
    })
}

/// Where a checkpoint keeps towers that trained: a CLIP folder and a BERT folder beside `head.safetensors`.
pub const VISION_DIR: &str = "vision";
pub const TEXT_DIR: &str = "text";

/// Saves a checkpoint folder atomically: `head.safetensors` and `mosaic.json`, and, when the towers train, the
/// two tower folders (`vision/`, `text/`: HF folders with their tokenizer and preprocessor files) that
/// `mosaic.json` then names instead of the folders training started from.
pub fn save(model: &MultimodalClassifier, meta: &MultimodalMeta, dir: &Path) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        std::fs::create_dir_all(staging).map_err(|e| TrainError::file(staging, e))?;
        model.save_head(&staging.join(HEAD_FILE))?;
        let mut meta = meta.clone();
        if !model.freeze.image_frozen() {
            let vision = staging.join(VISION_DIR);
            model.image.save(&vision)?;
            mosaic_models::folder::copy_tokenizer_files(Path::new(&meta.vision_model), &vision)?;
            meta.vision_model = VISION_DIR.into();
        }
        if !model.freeze.text_frozen() {
            let text = staging.join(TEXT_DIR);
            model.text.save(&text)?;
            mosaic_models::folder::copy_tokenizer_files(Path::new(&meta.text_model), &text)?;
            meta.text_model = TEXT_DIR.into();
        }
        crate::checkpoint::write_meta(staging, &meta)
    })
}

/// A multimodal classifier and the pairs it trains and validates on.
pub struct MultimodalTask<'a> {
    pub model: &'a MultimodalClassifier,
    pub train: &'a PairSet,
    pub valid: Option<&'a PairSet>,
    pub labels: &'a [String],
    pub eval_batch: usize,
    /// `train.metric`, for the validation message.
    pub metric: &'a str,
    pub meta: &'a MultimodalMeta,
}

impl TrainTask for MultimodalTask<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch.len()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let b = self.train.batch(batch)?;
        let out = self.model.forward(&b)?;
        let (loss, _) = mosaic_kernels::cross_entropy_sum(&out.logits, &b.labels, 0.0)?;
        Ok(BatchLoss::Sum {
            loss,
            count: batch.len(),
        })
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn dropout(&self) -> &Mode {
        &self.model.mode
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.model.params()
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        if !self.model.towers_train() {
            if freeze != Freeze::None {
                return Err(TrainError::Invalid(format!(
                    "recipe key `train.freeze`: \"{freeze}\" needs a tower that trains (`freeze_towers = false`, \
                     \"image\" or \"text\"); with both towers frozen only the fusion and the head train"
                )));
            }
            return Ok(self.model.head_params());
        }
        crate::freeze::select(self.model.trainable_pool(), freeze, |name| {
            self.model.role(name)
        })
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        if self.model.freeze.text_frozen() {
            return Err(
                "FGM perturbs the text tower's word embeddings, which are frozen; set `freeze_towers = false` \
                 or \"image\""
                    .into(),
            );
        }
        crate::trainer::param_ending(
            self.model.params(),
            "text.embeddings.word_embeddings.weight",
        )
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let e = evaluate(self.model, valid, self.labels, self.eval_batch)?.evaluation;
        let metric = |name: &str| e.metrics.get(name).copied().unwrap_or(f64::NAN);
        let chosen = if matches!(self.metric, "accuracy" | "loss") {
            String::new()
        } else {
            format!(", {} {:.4}", self.metric, metric(self.metric))
        };
        observer.message(&format!(
            "epoch {} (step {}): valid loss {:.4}, accuracy {:.4}{chosen}",
            at.epoch,
            at.step,
            e.loss,
            metric("accuracy"),
        ));
        Ok(Some(metrics_json(&e.metrics)))
    }

    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.f64_metrics();
        save(self.model, &meta, dir)
    }
}
