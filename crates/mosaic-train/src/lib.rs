//! mosaic-train: the training side of mosaic — recipes, one [`trainer::Trainer`] that runs every task (a task
//! implements [`trainer::TrainTask`]: its data, the loss of a micro-batch, its parameters, validation and
//! checkpoint folder), the tasks themselves, and the parts the trainer is made of: optimizers, schedules,
//! clipping, freezing, early stopping, resumable checkpoints and metrics.
//!
//! ```no_run
//! use mosaic_train::{pipeline, recipe::Recipe, observer::Silent};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recipe = Recipe::from_file("fixtures/recipes/cloze-tiny.toml".as_ref())?;
//! let summary = pipeline::run(&recipe, &mut Silent)?;
//! println!("{}", summary.after.unwrap().report.to_text());
//! # Ok(()) }
//! ```
//!
//! - [`optim`]: AdamW and SGD over `candle_core::Var`s, with parameter groups
//!   (no weight decay for biases and norm weights) and exportable state.
//! - [`schedule`]: learning-rate schedules with warmup (HF Transformers semantics).
//! - [`gradients`]: global-norm gradient clipping and non-finite gradient detection,
//!   plus gradient accumulation over micro-batches.
//! - [`metrics`]: scikit-learn style classification reports and seqeval-style
//!   entity-level scores.
//! - [`early_stopping`]: patience-based early stopping with resumable state.
//! - [`recipe`]: TOML training recipes with strict key checking and overrides.
//! - [`trainer`]: the one training loop and the [`trainer::TrainTask`] trait tasks implement; [`freeze`] (one
//!   rule over each model's parameter roles), [`resume`] (step checkpoints), [`run_folder`], [`run`].
//! - [`collective`]: data-parallel training's seam — all-reduce, broadcast, barrier over ranks (single process,
//!   threads, or MPI with feature `mpi`), gradient buckets, sharding by rank.
//! - [`adapters`]: `[peft]` in a run — what a task offers an adapter, attaching LoRA / prompt / prefix tuning
//!   (from `mosaic-peft`) before training, loading checkpoints that hold an adapter on their base model.
//! - [`pipeline`]: runs a recipe, picking the task from `recipe.task`.
//! - [`text_classification`] (with [`task_model`], [`evaluate`], [`checkpoint`]): head, cloze and
//!   prompt-similarity classification and token classification of BERT encoders.
//! - [`causal_lm`]: GPT-2 instruction tuning / LM training (`task = "causal-lm"`) and perplexity.
//! - [`image_classification`]: ResNet-style CNN or ViT image classifiers (`task = "image-classification"`).
//! - [`contrastive`]: CLIP contrastive fine-tuning and CoOp soft prompts (`task = "image-text-contrastive"`).
//! - [`detection`]: DETR's Hungarian matcher and set loss (as transformers' `ForObjectDetectionLoss`).

pub mod adapters;
pub mod atomic_folder;
pub mod causal_lm;
pub mod checkpoint;
pub mod collective;
pub mod contrastive;
pub mod detection;
pub mod early_stopping;
pub mod error;
pub mod evaluate;
pub mod freeze;
pub mod gradients;
pub mod image_classification;
pub mod metrics;
pub mod multimodal;
pub mod observer;
pub mod optim;
pub mod pipeline;
pub mod plot;
pub mod recipe;
pub mod recipe_optimizer;
pub mod resume;
pub mod run;
pub mod run_folder;
pub mod schedule;
pub mod task_model;
pub mod text_classification;
pub mod text_to_image;
pub mod trainer;
pub mod visual_instruction;

pub use error::{Result, TrainError};
