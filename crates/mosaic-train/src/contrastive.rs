//! `task = "image-text-contrastive"`: adapting CLIP to image-text data.
//!
//! - `method = "contrastive"` ([`fine_tune`]): both towers and `logit_scale` train on symmetric InfoNCE over
//!   each batch of image-caption pairs (every other caption / image of the batch is a negative);
//!   `logit_scale` is clamped at `ln(100)` after each optimizer step. Each epoch is evaluated on the validation
//!   pairs: loss and recall@1/5 image → text and text → image (`recall_at_1`, their mean, is the default
//!   `train.metric`).
//! - `method = "coop"` ([`prompt_tuning`]): CoOp. Both towers are frozen; only `prompt.context_tokens`
//!   (default 4) context vectors in front of each class name train, on the cross-entropy of the class logits
//!   (`logit_scale` fixed). The class names are the data's labels (`data.label_field`). Reported: zero-shot
//!   accuracy with the hand-written `prompt.template` (default `"a photo of a {}."`) before, CoOp's after.
//!
//! Data: JSONL/CSV records with an image path relative to the file (`data.image_field`, default `image`) and a
//! caption (`data.caption_field`, default `caption`) or a label (`data.label_field`). Before / after figures are
//! on `data.test` when given, else on `data.valid`. The run folder holds `recipe.toml`, `metrics.jsonl`,
//! `report.json`, `training.svg` and `best/` and `last/` checkpoints ([`checkpoint`]), which
//! [`evaluate_checkpoint`] (`mosaic eval`) reads back.

pub mod checkpoint;
pub mod coop;
pub mod data;
pub mod epoch_loop;
pub mod fine_tune;
pub mod info_nce;
pub mod prompt_tuning;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use mosaic_data::image::ImageProcessor;
use mosaic_models::{Clip, ModelSource};

pub use checkpoint::{
    CONTEXT_FILE, CheckpointEvaluation, ClipMeta, evaluate_checkpoint, is_contrastive_checkpoint,
};
use data::CaptionTokenizer;
pub use data::Fields;
pub use info_nce::{PairEvaluation, info_nce};

use crate::clip::{clip_grad_norm, grad_norm};
use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::optim::{Optimizer, default_no_decay};
use crate::pipeline::{RunOptions, RunSummary};
use crate::recipe::{Freeze, Method, NonFinite, Recipe, TrainSection};
use crate::recipe_optimizer::recipe_optimizer;
use crate::schedule::LrSchedule;

/// The `train.metric` values method "contrastive" measures (recall is the mean of both directions).
pub const CONTRASTIVE_METRICS: &[&str] = &["recall_at_1", "recall_at_5", "loss"];

/// The `train.metric` values method "coop" measures.
pub const COOP_METRICS: &[&str] = &[
    "accuracy",
    "loss",
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "precision_micro",
    "precision_macro",
    "precision_weighted",
    "recall_micro",
    "recall_macro",
    "recall_weighted",
];

/// Trains `recipe` and writes its run folder.
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    let t = &recipe.train;
    let unsupported = |key: &str, why: &str| {
        Err(TrainError::Invalid(format!(
            "recipe key `{key}`: {why} for image-text-contrastive recipes"
        )))
    };
    if options.resume {
        return unsupported("--resume", "resuming is not supported yet");
    }
    if t.grad_accum > 1 {
        return unsupported(
            "train.grad_accum",
            "gradient accumulation is not supported (InfoNCE's negatives come from one batch: raise \
             train.batch_size instead)",
        );
    }
    if t.freeze != Freeze::None {
        return unsupported(
            "train.freeze",
            "freezing is not supported (method \"coop\" freezes both towers)",
        );
    }
    if t.fgm_epsilon.is_some() {
        return unsupported("train.fgm_epsilon", "FGM is not supported");
    }
    if t.eval_every.is_some() {
        return unsupported("train.eval_every", "evaluation runs once per epoch");
    }
    let (measured, method): (&[&str], &str) = match recipe.method {
        Method::Coop => (COOP_METRICS, "coop"),
        _ => (CONTRASTIVE_METRICS, "contrastive"),
    };
    if !measured.contains(&t.metric.as_str()) {
        return Err(TrainError::Invalid(format!(
            "recipe key `train.metric`: `{}` is not measured by method \"{method}\" (use one of {})",
            t.metric,
            measured.join(", ")
        )));
    }
    let device = Device::Cpu;
    let base = BaseModel::load(recipe, observer, &device)?;
    match recipe.method {
        Method::Coop => prompt_tuning::run(recipe, &base, &device, observer),
        _ => fine_tune::run(recipe, &base, &device, observer),
    }
}

/// The recipe's data fields.
pub fn fields(recipe: &Recipe) -> Fields {
    let d = &recipe.data;
    Fields {
        image_field: d.image_field.clone().unwrap_or_else(|| "image".into()),
        caption_field: d.caption_field.clone().unwrap_or_else(|| "caption".into()),
        label_field: d.label_field.clone(),
    }
}

/// The model a run starts from: its folder, the CLIP model (seeded with `train.seed`), its caption tokenizer and
/// image preprocessing.
pub struct BaseModel {
    pub dir: PathBuf,
    pub clip: Clip,
    pub tokenizer: CaptionTokenizer,
    pub processor: ImageProcessor,
}

impl BaseModel {
    /// Resolves `recipe.model` (saying which, in a message) and loads it.
    pub fn load(recipe: &Recipe, observer: &mut dyn Observer, device: &Device) -> Result<Self> {
        let source = ModelSource::parse(&recipe.model);
        observer.message(&format!("model: {}", source.spec()));
        let dir = source.resolve()?;
        let clip = Clip::from_folder(&dir, recipe.train.seed, device)?;
        let tokenizer = CaptionTokenizer::load(&dir, &clip)?;
        let processor =
            ImageProcessor::from_folder(&dir).map_err(|e| TrainError::Invalid(e.to_string()))?;
        Ok(BaseModel {
            dir,
            clip,
            tokenizer,
            processor,
        })
    }
}

/// The recipe's `data.train` (an error naming the key when it is missing).
pub fn train_path(recipe: &Recipe) -> Result<&Path> {
    recipe
        .data
        .train
        .as_deref()
        .ok_or_else(|| TrainError::Invalid("recipe key `data.train`: no data given".into()))
}

/// Whether a parameter is excluded from weight decay: biases and norms (as the HF `Trainer`), and
/// `logit_scale` and the vision class embedding (as CLIP training code does: decaying a temperature or a single
/// token vector toward zero has no regularising meaning).
pub fn no_decay(name: &str) -> bool {
    default_no_decay(name) || name == "logit_scale" || name.ends_with("class_embedding")
}

/// One optimizer step after another: backward, clipping, the non-finite guard, the schedule.
pub struct Stepper {
    params: Vec<(String, Var)>,
    optimizer: Box<dyn Optimizer>,
    schedule: LrSchedule,
    max_grad_norm: f64,
    on_nonfinite: NonFinite,
    /// Optimizer steps taken.
    pub step: usize,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepDone {
    pub lr: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
}

impl Stepper {
    /// An optimizer over `params` as `cfg` says, for `total_steps` steps.
    pub fn new(params: Vec<(String, Var)>, cfg: &TrainSection, total_steps: usize) -> Result<Self> {
        let optimizer = recipe_optimizer(params.clone(), cfg, no_decay)?;
        Ok(Stepper {
            params,
            optimizer,
            schedule: LrSchedule::new(cfg.schedule, cfg.lr, cfg.warmup, total_steps),
            max_grad_norm: cfg.max_grad_norm,
            on_nonfinite: cfg.on_nonfinite,
            step: 0,
        })
    }

    /// Backpropagates `loss` and steps the optimizer. `None`: the loss or a gradient was not finite and
    /// `train.on_nonfinite = "skip"` (the step is skipped, with a warning); with `"stop"` that is an error.
    pub fn apply(
        &mut self,
        loss: &Tensor,
        observer: &mut dyn Observer,
    ) -> Result<Option<StepDone>> {
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let mut grads = loss.backward()?;
        let (norm, bad) = if self.max_grad_norm > 0.0 {
            let report = clip_grad_norm(&self.params, &mut grads, self.max_grad_norm)?;
            (report.total_norm, report.non_finite)
        } else {
            grad_norm(&self.params, &grads)?
        };
        if !value.is_finite() || bad.is_some() {
            if self.on_nonfinite == NonFinite::Skip {
                observer.message(&format!(
                    "warning: non-finite loss or gradient at step {}; step skipped",
                    self.step + 1
                ));
                return Ok(None);
            }
            return Err(TrainError::NonFinite {
                what: if value.is_finite() {
                    "gradient"
                } else {
                    "loss"
                },
                step: self.step + 1,
                param: bad,
            });
        }
        let lr = self.schedule.lr_at(self.step);
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        self.step += 1;
        Ok(Some(StepDone {
            lr,
            grad_norm: norm,
        }))
    }
}

/// Tracks the best value of `train.metric` and early stopping's patience.
pub struct Selection {
    metric: String,
    higher_is_better: bool,
    min_delta: f64,
    patience: usize,
    best: Option<f64>,
    stale: usize,
}

impl Selection {
    pub fn new(cfg: &TrainSection) -> Self {
        Selection {
            metric: cfg.metric.clone(),
            higher_is_better: cfg.mode == crate::early_stopping::Mode::Max,
            min_delta: cfg.min_delta,
            patience: cfg.patience,
            best: None,
            stale: 0,
        }
    }

    /// The metric's value in `metrics` (an error naming `train.metric` when the method has no such metric).
    pub fn value(&self, metrics: &std::collections::BTreeMap<String, f64>) -> Result<f64> {
        metrics.get(&self.metric).copied().ok_or_else(|| {
            TrainError::Invalid(format!(
                "recipe key `train.metric`: `{}` is not measured by this method (it measures {})",
                self.metric,
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Records an evaluation; true when it is the best so far (the checkpoint to keep).
    pub fn improved(&mut self, value: f64) -> bool {
        let better = match self.best {
            None => true,
            Some(b) if self.higher_is_better => value > b + self.min_delta,
            Some(b) => value < b - self.min_delta,
        };
        if better {
            self.best = Some(value);
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        better
    }

    /// Whether early stopping says stop (`train.patience` evaluations without improvement; 0 = never).
    pub fn should_stop(&self) -> bool {
        self.patience > 0 && self.stale >= self.patience
    }

    /// The metric's name.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// The best value seen.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
}
