//! `--set key=value` overrides, applied to the parsed TOML before it is resolved.

use super::error::{RecipeError, invalid};
use super::schema::{Kind, ROOT_KEYS, join};
use super::suggest::suggest;

/// The dotted key of a `--set key=value` spec, trimmed as [`apply_override`] reads it; `None` without `=`.
///
/// The CLI uses it to tell which keys a user set (the embedded default recipe fills only the data files the
/// overrides leave unset).
pub fn override_key(spec: &str) -> Option<&str> {
    spec.split_once('=').map(|(key, _)| key.trim())
}

/// Applies one `--set key=value` override to a parsed recipe.
///
/// `key` is a dotted recipe key (`train.lr`, `prompt.verbalizer.positive`);
/// unknown keys are errors with a suggestion. `value` is parsed as a TOML
/// value (`3e-5`, `true`, `[0.8, 0.2]`, `"text"`); when that fails, or the
/// key takes a string and the value parses as something else, the raw text
/// is used as a string.
pub fn apply_override(root: &mut toml::Value, spec: &str) -> Result<(), RecipeError> {
    let override_err = |message: &str| RecipeError::Override {
        spec: spec.to_string(),
        message: message.to_string(),
    };
    let Some((key, raw)) = spec.split_once('=') else {
        return Err(override_err("expected key=value"));
    };
    let (key, raw) = (key.trim(), raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(override_err(
            "expected key=value, with a dotted key like train.lr",
        ));
    }
    let leaf_kind = leaf_kind(&parts, key, &format!("--set {spec}"))?;

    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    let wants_string = matches!(leaf_kind, Kind::Str | Kind::OneOf(_) | Kind::Freeze);
    let value = match parsed {
        Some(v) if !wants_string || v.is_str() => v,
        _ => toml::Value::String(raw.to_string()),
    };

    // Insert, creating tables on the way.
    let Some((leaf, path)) = parts.split_last() else {
        return Err(override_err("expected key=value"));
    };
    let mut node = root;
    for part in path {
        let toml::Value::Table(t) = node else {
            return Err(override_err("the recipe is not a table"));
        };
        let entry = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        node = entry;
    }
    let toml::Value::Table(t) = node else {
        return Err(override_err("the recipe is not a table"));
    };
    t.insert(leaf.to_string(), value);
    Ok(())
}

/// The kind of value the dotted key `parts` takes, resolved against the schema: an error with a suggestion for
/// a key recipes do not have. A label under a map (`prompt.verbalizer.positive`) takes the map's value kind.
fn leaf_kind(parts: &[&str], key: &str, origin: &str) -> Result<Kind, RecipeError> {
    let mut keys = ROOT_KEYS;
    let mut prefix = String::new();
    for (i, part) in parts.iter().enumerate() {
        let Some((_, kind)) = keys.iter().find(|(k, _)| k == part) else {
            return Err(RecipeError::UnknownKey {
                origin: origin.to_string(),
                key: join(&prefix, part),
                suggestion: suggest(&prefix, part, keys),
            });
        };
        let last = i + 1 == parts.len();
        match kind {
            _ if last => return Ok(*kind),
            Kind::Table(sub) => keys = sub,
            Kind::StrMap | Kind::WordsMap | Kind::NumberMap => {
                if i + 2 != parts.len() {
                    return Err(invalid(origin, key, "has too many parts"));
                }
                return Ok(match kind {
                    Kind::StrMap => Kind::Str,
                    Kind::NumberMap => Kind::Number,
                    _ => Kind::WordsMap,
                });
            }
            _ => {
                return Err(RecipeError::UnknownKey {
                    origin: origin.to_string(),
                    key: key.to_string(),
                    suggestion: Some(join(&prefix, part)),
                });
            }
        }
        prefix = join(&prefix, part);
    }
    Err(invalid(origin, key, "is empty"))
}
