//! What a task plugs into the [`Trainer`](super::Trainer): its data (by example index), the loss of a
//! micro-batch, its parameters and which of them may train, validation, and how a checkpoint folder is written.
//! Everything else — batch order, accumulation, clipping, the schedule, the optimizer, FGM, evaluation and
//! checkpoint timing, early stopping, resume, signals, the metrics log — is the trainer's, once for every task.

use std::path::Path;

use candle_core::{Tensor, Var};
use mosaic_models::Mode;

use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::Freeze;

/// The loss of one micro-batch and the number of targets it covers.
pub enum BatchLoss {
    /// The sum over `count` independent targets (tokens, labels, images): the trainer divides by the whole
    /// accumulation window's count, so micro-batches add up to one big batch's mean.
    Sum { loss: Tensor, count: usize },
    /// The mean over `count` independent targets: weighted by `count / window count` when accumulating.
    Mean { loss: Tensor, count: usize },
    /// The mean over a batch whose examples are each other's negatives (InfoNCE): it cannot be split into
    /// micro-batches, so a task returning it must refuse accumulation ([`TrainTask::accumulation_refusal`]).
    InBatch { loss: Tensor, count: usize },
    /// A weighted sum of objectives (a recipe's `[loss]` table): `total` is Σ weight · objective, reduced as
    /// its variant says; `parts` are each objective's unweighted value reduced the same way (a sum over the
    /// targets for `Sum`, a mean for `Mean` / `InBatch`), which the trainer logs per step as `loss_<name>`.
    Joint {
        total: Box<BatchLoss>,
        parts: Vec<(&'static str, f64)>,
    },
}

impl BatchLoss {
    /// The number of targets the loss covers.
    pub fn count(&self) -> usize {
        match self {
            BatchLoss::Sum { count, .. }
            | BatchLoss::Mean { count, .. }
            | BatchLoss::InBatch { count, .. } => *count,
            BatchLoss::Joint { total, .. } => total.count(),
        }
    }

    /// The objectives' values as this micro-batch's shares of the window's means (the same scaling
    /// [`window_share`](BatchLoss::window_share) gives the loss); empty for a single loss.
    pub fn part_shares(
        &self,
        window_count: usize,
        window_batches: usize,
        ranks: usize,
    ) -> Vec<(&'static str, f64)> {
        let BatchLoss::Joint { total, parts } = self else {
            return Vec::new();
        };
        let total_count = window_count.max(1) as f64;
        let scale = match total.as_ref() {
            BatchLoss::Sum { .. } => 1.0 / total_count,
            _ if window_batches == 1 && ranks <= 1 => 1.0,
            BatchLoss::InBatch { .. } if window_batches == 1 => 1.0 / ranks as f64,
            other => other.count() as f64 / total_count,
        };
        parts.iter().map(|&(name, v)| (name, v * scale)).collect()
    }

    /// This micro-batch's share of the window's mean loss: `window_count` targets over all `ranks`, this rank's
    /// part of them in `window_batches` micro-batches. Summed over micro-batches and ranks (the gradients'
    /// all-reduce) the shares give one big batch's mean; an in-batch loss, which has no such split, is averaged
    /// over ranks as DDP does with each rank's own negatives.
    pub fn window_share(
        &self,
        window_count: usize,
        window_batches: usize,
        ranks: usize,
    ) -> Result<Tensor> {
        let total = window_count.max(1) as f64;
        Ok(match self {
            BatchLoss::Joint { total: inner, .. } => {
                inner.window_share(window_count, window_batches, ranks)?
            }
            BatchLoss::Sum { loss, .. } => loss.affine(1.0 / total, 0.0)?,
            BatchLoss::Mean { loss, .. } | BatchLoss::InBatch { loss, .. }
                if window_batches == 1 && ranks <= 1 =>
            {
                loss.clone()
            }
            BatchLoss::InBatch { loss, .. } if window_batches == 1 => {
                loss.affine(1.0 / ranks as f64, 0.0)?
            }
            BatchLoss::Mean { loss, count } => loss.affine(*count as f64 / total, 0.0)?,
            BatchLoss::InBatch { .. } => {
                return Err(TrainError::Invalid(
                    "an in-batch loss (negatives from the same batch) cannot be accumulated over micro-batches"
                        .into(),
                ));
            }
        })
    }
}

/// Where a validation happens.
#[derive(Debug, Clone, Copy)]
pub struct EvalPoint {
    /// The epoch (1-based) and the optimizer steps so far.
    pub epoch: usize,
    pub step: usize,
    /// The mean training loss of the epoch so far.
    pub train_loss: f64,
}

/// What one applied optimizer step covered.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Targets the loss counted (tokens, labels, images, pairs).
    pub counted: usize,
    /// Examples in the window.
    pub examples: usize,
}

/// The `mosaic.json` fields of a checkpoint that change during training.
#[derive(Debug, Clone, Default)]
pub struct CheckpointInfo {
    /// The epoch (1-based) and step it was taken at.
    pub epoch: usize,
    pub step: usize,
    /// The validation metrics it was chosen by (empty for `last/`).
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

impl CheckpointInfo {
    /// The metrics as numbers (what most checkpoints' `mosaic.json` holds).
    pub fn f64_metrics(&self) -> std::collections::BTreeMap<String, f64> {
        self.metrics
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect()
    }
}

/// Metrics as the JSON fields [`TrainTask::validate`] returns.
pub fn metrics_json(
    metrics: &std::collections::BTreeMap<String, f64>,
) -> serde_json::Map<String, serde_json::Value> {
    metrics
        .iter()
        .map(|(k, v)| (k.clone(), (*v).into()))
        .collect()
}

/// The parameter whose name ends with `suffix` (the embedding matrix FGM perturbs), or why there is none.
pub fn param_ending(params: Vec<(String, Var)>, suffix: &str) -> std::result::Result<Var, String> {
    params
        .into_iter()
        .find(|(n, _)| n.ends_with(suffix))
        .map(|(_, v)| v)
        .ok_or_else(|| format!("the model has no `…{suffix}` embedding matrix to perturb"))
}

/// One kind of training run, as the [`Trainer`](super::Trainer) sees it.
pub trait TrainTask {
    /// How many training examples there are; batches are lists of indices below this.
    fn train_len(&self) -> usize;

    /// The smallest batch worth a step (InfoNCE needs one negative: 2); shorter last batches are dropped.
    fn min_batch(&self) -> usize {
        1
    }

    /// Why gradients cannot be accumulated over micro-batches, when they cannot.
    fn accumulation_refusal(&self) -> Option<String> {
        None
    }

    /// Runs before each epoch's first window (also when a run resumes mid-epoch): e.g. draws the epoch's
    /// augmented images.
    fn start_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// How many targets the loss of the training examples `batch` counts (what [`BatchLoss::count`] will say).
    fn count(&self, batch: &[usize]) -> usize;

    /// The loss of the training examples `batch`, differentiable in the trained parameters.
    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss>;

    /// Runs after each applied optimizer step (e.g. clamping CLIP's temperature); returns extra fields for that
    /// step's `metrics.jsonl` record.
    fn after_step(&self, _stats: &StepStats) -> Result<Vec<(&'static str, serde_json::Value)>> {
        Ok(Vec::new())
    }

    /// Dropout and batch statistics on (`true`) or off.
    fn set_training(&self, training: bool);

    /// The model's dropout stream (seeded with `train.seed`, saved in resumable checkpoints).
    fn dropout(&self) -> &Mode;

    /// Every parameter by name, trainable or not (what a resumable checkpoint restores).
    fn parameters(&self) -> Vec<(String, Var)>;

    /// Model state that is not a parameter but changes in training (batch-norm running statistics).
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
    /// Restores [`buffers`](TrainTask::buffers) from a resumable checkpoint.
    fn restore_buffers(&self, _saved: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }

    /// The parameters that train under `freeze` (an error when the strategy does not apply to this model).
    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>>;

    /// The model an adapter (`[peft]`) wraps, or why this task cannot train one.
    fn adaptable(&self) -> std::result::Result<crate::adapters::Adaptable, String> {
        Err("this task cannot train an adapter".into())
    }

    /// Whether a parameter gets no weight decay (default: biases and norm weights, HF's rule).
    fn no_decay(&self, name: &str) -> bool {
        crate::optim::default_no_decay(name)
    }

    /// The embedding matrix FGM perturbs, or why this task has none.
    fn fgm_embeddings(&self) -> std::result::Result<Var, String>;

    /// The validation metrics (printed to the observer as the task likes), or `None` without a validation set.
    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>>;

    /// Writes a checkpoint folder (`best/` or `last/`) atomically.
    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(v: f32) -> Tensor {
        Tensor::new(v, &candle_core::Device::Cpu).unwrap()
    }

    fn assert_parts(got: Vec<(&'static str, f64)>, want: &[(&str, f64)]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((n, v), (wn, wv)) in got.iter().zip(want) {
            assert_eq!(n, wn);
            assert!((v - wv).abs() < 1e-12, "{n}: {v} vs {wv}");
        }
    }

    #[test]
    fn joint_parts_are_scaled_like_the_total() {
        // Two micro-batches of 2 and 3 targets: a sum's parts are divided by the window's 5 targets …
        let sum = BatchLoss::Joint {
            total: Box::new(BatchLoss::Sum {
                loss: scalar(4.0),
                count: 2,
            }),
            parts: vec![("image", 3.0), ("caption", 2.0)],
        };
        assert_eq!(sum.count(), 2);
        assert_parts(
            sum.part_shares(5, 2, 1),
            &[("image", 0.6), ("caption", 0.4)],
        );
        let share = sum
            .window_share(5, 2, 1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((share - 0.8).abs() < 1e-6);
        // … a mean's are weighted by the micro-batch's share of the targets, or kept alone in its window.
        let mean = BatchLoss::Joint {
            total: Box::new(BatchLoss::Mean {
                loss: scalar(1.0),
                count: 3,
            }),
            parts: vec![("image", 0.5)],
        };
        assert_parts(mean.part_shares(5, 2, 1), &[("image", 0.3)]);
        assert_parts(mean.part_shares(3, 1, 1), &[("image", 0.5)]);
        let single = BatchLoss::Sum {
            loss: scalar(1.0),
            count: 1,
        };
        assert!(single.part_shares(1, 1, 1).is_empty());
    }
}
