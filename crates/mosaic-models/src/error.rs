//! Typed errors of the models crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: missing (a Hugging Face model folder needs config.json and model.safetensors)"
    )]
    MissingFile { path: PathBuf },
    #[error("{path}: malformed config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: unknown model type `{model_type}` (supported: {supported})")]
    UnknownModelType {
        path: PathBuf,
        model_type: String,
        supported: &'static str,
    },
    #[error("{path}: cannot read safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{0}")]
    Unsupported(String),
    /// An argument out of range (a sampling parameter, a prompt id outside the vocabulary, ...).
    #[error("{0}")]
    InvalidInput(String),
    #[error("model source `{source_spec}`: {message}")]
    Source {
        source_spec: String,
        message: String,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the models crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
