//! What every Hugging Face `config.json` reader here shares: reading the file, parsing it to a JSON object,
//! checking `model_type`, the common key checks (a known activation, positive sizes) and the `id2label` /
//! `label2id` class maps. Each model's config module adds its own keys on top; sharing these keeps the errors
//! worded the same whichever model a folder holds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ModelError, Result};
use crate::layers::Activation;

/// The text of `config.json`; a missing file is [`ModelError::MissingFile`] rather than a bare I/O error.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    if !path.exists() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))
}

/// Builds the "malformed config" error for `path` from a one-line message.
pub(crate) fn malformed(path: &Path) -> impl Fn(String) -> ModelError + Copy + '_ {
    move |message| ModelError::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// Parses `text` as the JSON object a `config.json` must be.
pub(crate) fn parse_object(text: &str, path: &Path) -> Result<Map<String, Value>> {
    let bad = malformed(path);
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(bad("expected a JSON object".into())),
    }
}

/// The typed view `T` of a config object; serde's message (naming the key at fault) becomes the error.
pub(crate) fn fields<T: DeserializeOwned>(object: Map<String, Value>, path: &Path) -> Result<T> {
    serde_json::from_value(Value::Object(object)).map_err(|e| malformed(path)(e.to_string()))
}

/// Fails unless the config's `model_type` is `expected`; an absent or empty one is named as missing.
pub(crate) fn check_model_type(
    path: &Path,
    found: Option<&str>,
    expected: &'static str,
) -> Result<()> {
    let found = found.unwrap_or_default();
    if found == expected {
        return Ok(());
    }
    Err(ModelError::UnknownModelType {
        path: path.to_path_buf(),
        model_type: if found.is_empty() {
            "(none: the `model_type` key is missing)".into()
        } else {
            found.to_string()
        },
        supported: expected,
    })
}

/// Fails unless `name`, the value of `key`, is an activation [`Activation::from_hf`] knows.
pub(crate) fn require_activation(key: &str, name: &str) -> std::result::Result<(), String> {
    match Activation::from_hf(name) {
        Some(_) => Ok(()),
        None => Err(format!("key `{key}`: unknown activation `{name}`")),
    }
}

/// Fails on the first of these sizes that is zero, naming its key.
pub(crate) fn require_positive(sizes: &[(&str, usize)]) -> std::result::Result<(), String> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(format!("key `{key}` must be positive")),
        None => Ok(()),
    }
}

/// `id2label` as a list in id order; the ids must be exactly `0..n`.
pub(crate) fn labels_from_id2label(
    map: &BTreeMap<String, String>,
) -> std::result::Result<Vec<String>, String> {
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        let id: usize = k
            .parse()
            .map_err(|_| format!("key `id2label`: `{k}` is not an integer id"))?;
        pairs.push((id, v.clone()));
    }
    pairs.sort();
    if pairs.iter().enumerate().any(|(i, (id, _))| *id != i) {
        return Err("key `id2label`: ids are not 0..n".into());
    }
    Ok(pairs.into_iter().map(|(_, v)| v).collect())
}

/// `id2label` and `label2id` for `labels`.
fn label_maps(labels: &[String]) -> (Value, Value) {
    let id2label: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
        .collect();
    let label2id: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), serde_json::json!(i)))
        .collect();
    (id2label.into(), label2id.into())
}

/// Writes `architectures` and, when there are labels, both label maps into a config object about to be saved.
pub(crate) fn set_architectures_and_labels(
    object: &mut Map<String, Value>,
    architectures: &[String],
    labels: &[String],
) {
    object.insert("architectures".into(), serde_json::json!(architectures));
    if !labels.is_empty() {
        let (id2label, label2id) = label_maps(labels);
        object.insert("id2label".into(), id2label);
        object.insert("label2id".into(), label2id);
    }
}

/// Sets a head's class names from the caller, warning when they replace different saved ones while the saved
/// head exists (`head_saved`): that head is then initialised anew. `head` names it in the warning.
pub(crate) fn replace_labels(
    saved: &mut Vec<String>,
    labels: Vec<String>,
    config_path: &Path,
    head_saved: bool,
    head: &str,
) {
    if !saved.is_empty() && *saved != labels && head_saved {
        tracing::warn!(
            "{}: replacing the saved labels {:?} with {:?}; the {head} is re-initialised",
            config_path.display(),
            saved,
            labels
        );
    }
    *saved = labels;
}
