//! Typed errors of the training crate.

use std::path::PathBuf;

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] mosaic_models::ModelError),
    #[error(transparent)]
    Peft(#[from] mosaic_peft::PeftError),
    #[error(transparent)]
    Data(#[from] mosaic_data::DataError),
    #[error(transparent)]
    Prompt(#[from] mosaic_prompt::PromptError),
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    /// Data-parallel training: a collective failed, timed out, or the ranks disagree.
    #[error("data parallel: {0}")]
    Collective(String),
    #[error(
        "interrupted at step {step}; a resumable checkpoint was saved (continue with `mosaic train --resume`)"
    )]
    Interrupted { step: usize },
    #[error(
        "non-finite {what} at step {step}{}; stopped (the last good checkpoint is kept)",
        param.as_ref().map(|p| format!(" (first in `{p}`)")).unwrap_or_default()
    )]
    NonFinite {
        what: &'static str,
        step: usize,
        param: Option<String>,
    },
}

/// Result alias of the training crate.
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        TrainError::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
