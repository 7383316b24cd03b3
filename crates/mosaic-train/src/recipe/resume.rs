//! The resume check: a run continues only under the recipe it started with.
//!
//! Resuming restores the optimizer, the schedule and the data order from a checkpoint; a recipe that changed in
//! anything else (the learning rate, the data, the batch size) would silently continue a different run. Two keys
//! are exempt:
//! - `train.epochs`: extending (or shortening) a run is what resuming is for.
//! - `output`: the run folder is the one being resumed — its `recipe.toml` is the started recipe — so the
//!   current `output` names the same folder, possibly spelt differently (relative or absolute, a trailing `/`);
//!   comparing spellings would only refuse legitimate resumes.

use super::error::RecipeError;
use super::sections::Recipe;

/// The keys that may differ between a run's recipe and the one it is resumed with.
const MAY_CHANGE: &[&str] = &["train.epochs", "output"];

impl Recipe {
    /// Checks that `self` (the recipe a run is resumed with, resolved as for a fresh start) equals `started`
    /// (the run folder's `recipe.toml`, as [`Recipe::to_toml_string`] wrote it) in every key but `train.epochs`
    /// and `output`. The error names the first key that differs, in `recipe.toml` order, with both values.
    pub fn check_resume(&self, started: &Recipe) -> Result<(), RecipeError> {
        let now = as_table(self)?;
        let then = as_table(started)?;
        match first_difference("", &now, &then) {
            None => Ok(()),
            Some((key, now, then)) => Err(RecipeError::ResumeMismatch {
                key,
                started: show(then),
                now: show(now),
            }),
        }
    }
}

/// The recipe as a TOML table, as `recipe.toml` holds it.
fn as_table(recipe: &Recipe) -> Result<toml::Table, RecipeError> {
    match toml::Value::try_from(recipe) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err(invalid_resume("the recipe is not a table".into())),
        Err(e) => Err(invalid_resume(e.to_string())),
    }
}

fn invalid_resume(message: String) -> RecipeError {
    RecipeError::Invalid {
        origin: "--resume".into(),
        key: String::new(),
        message,
    }
}

/// A value as the message shows it: TOML, or `unset`.
fn show(v: Option<&toml::Value>) -> String {
    v.map_or_else(|| "unset".into(), toml::Value::to_string)
}

type Difference<'a> = (String, Option<&'a toml::Value>, Option<&'a toml::Value>);

/// The first dotted key under `prefix` whose values differ (tables compared key by key, so the deepest key is
/// named), skipping [`MAY_CHANGE`]. Keys of `now` come first in their order, then those only `then` has.
fn first_difference<'a>(
    prefix: &str,
    now: &'a toml::Table,
    then: &'a toml::Table,
) -> Option<Difference<'a>> {
    let only_then = then.keys().filter(|k| !now.contains_key(*k));
    for key in now.keys().chain(only_then) {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if MAY_CHANGE.contains(&full.as_str()) {
            continue;
        }
        match (now.get(key), then.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                if let Some(d) = first_difference(&full, a, b) {
                    return Some(d);
                }
            }
            (a, b) if a != b => return Some((full, a, b)),
            _ => {}
        }
    }
    None
}
