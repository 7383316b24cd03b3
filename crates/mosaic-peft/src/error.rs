//! What can go wrong adapting a model or reading an adapter.

use std::path::PathBuf;

use mosaic_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// A file at fault (an `adapter_config.json` key, an adapter tensor).
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A configuration that cannot apply to this model (a target matching nothing, `r = 0`).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl PeftError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        PeftError::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, PeftError>;
