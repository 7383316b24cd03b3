//! The one error type of recipes and overrides.

use super::choices::{Method, Task};

/// An error in a recipe or an override. `origin` names where it came from
/// (the file, or `--set ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// The text is not valid TOML.
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    /// A key that recipes do not have.
    #[error("{origin}: unknown key `{key}`{}", did_you_mean(.suggestion))]
    UnknownKey {
        origin: String,
        key: String,
        suggestion: Option<String>,
    },
    /// A required key is absent.
    #[error("{origin}: missing required key `{key}`")]
    Missing { origin: String, key: String },
    /// A value of the wrong type or out of range.
    #[error("{origin}: `{key}` {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    /// A malformed `--set` override.
    #[error("--set `{spec}`: {message}")]
    Override { spec: String, message: String },
    /// A key the recipe's task (or, where another method of the task reads it, its method) does not read.
    /// `readers` names who does: `causal-lm`, `classification with method "cloze"`.
    #[error(
        "{origin}: recipe key `{key}`: {} does not read it (only {})",
        task_phrase(.task, .method),
        readers_phrase(.readers)
    )]
    NotRead {
        origin: String,
        key: String,
        task: Task,
        method: Option<Method>,
        readers: Vec<String>,
    },
    /// `--resume` with a recipe that differs from the one the run started with (its `recipe.toml`) in a key
    /// other than `train.epochs`. The values are TOML, `unset` for a key one side lacks.
    #[error(
        "--resume: recipe key `{key}` is {now} now, but the run started with {started} \
         (only `train.epochs` may change when resuming)"
    )]
    ResumeMismatch {
        key: String,
        started: String,
        now: String,
    },
}

/// `task "causal-lm"`, or `task "causal-lm" with method "lm"`.
fn task_phrase(task: &Task, method: &Option<Method>) -> String {
    let task = task.as_str();
    match method {
        Some(m) => format!("task \"{task}\" with method \"{}\"", m.as_str()),
        None => format!("task \"{task}\""),
    }
}

/// `a does`, `a and b do`, `a, b and c do`.
fn readers_phrase(readers: &[String]) -> String {
    match readers {
        [] => "no task does".into(),
        [one] => format!("{one} does"),
        [init @ .., last] => format!("{} and {last} do", init.join(", ")),
    }
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

impl RecipeError {
    /// The dotted key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            RecipeError::UnknownKey { key, .. }
            | RecipeError::Missing { key, .. }
            | RecipeError::Invalid { key, .. }
            | RecipeError::NotRead { key, .. }
            | RecipeError::ResumeMismatch { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A [`RecipeError::Invalid`] for `key` of `origin`.
pub(super) fn invalid(origin: &str, key: &str, message: impl Into<String>) -> RecipeError {
    RecipeError::Invalid {
        origin: origin.to_string(),
        key: key.to_string(),
        message: message.into(),
    }
}
