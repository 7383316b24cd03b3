//! mosaic-train: the training side of mosaic.
//!
//! - [`optim`]: AdamW and SGD over `candle_core::Var`s, with parameter groups
//!   (no weight decay for biases and norm weights) and exportable state.
//! - [`schedule`]: learning-rate schedules with warmup (HF Transformers semantics).
//! - [`clip`]: global-norm gradient clipping and non-finite gradient detection,
//!   plus gradient accumulation over micro-batches.
//! - [`metrics`]: scikit-learn style classification reports and seqeval-style
//!   entity-level scores.
//! - [`early_stopping`]: patience-based early stopping with resumable state.
//! - [`recipe`]: TOML training recipes with strict key checking and overrides.

pub mod clip;
pub mod early_stopping;
pub mod metrics;
pub mod optim;
pub mod recipe;
pub mod schedule;
