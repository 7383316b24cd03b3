//! From text to a [`Recipe`]: parse, apply `--set` overrides, check every key and type against the schema, fill
//! the defaults that depend on other keys, validate, and refuse keys the chosen task does not read.

use std::path::Path;

use super::check::check_table;
use super::choices::Task;
use super::error::{RecipeError, invalid};
use super::metric::default_metric;
use super::overrides::apply_override;
use super::reads::{check_read, written_keys};
use super::schema::ROOT_KEYS;
use super::sections::Recipe;
use crate::early_stopping::Mode;

impl Recipe {
    /// Parses and resolves a recipe. `origin` (usually the file path) names
    /// it in errors; its stem is the default `name`.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, RecipeError> {
        Self::from_toml_str_with_overrides(text, origin, &[] as &[&str])
    }

    /// Reads and resolves a recipe file.
    pub fn from_file(path: &Path) -> Result<Self, RecipeError> {
        Self::from_file_with_overrides(path, &[] as &[&str])
    }

    /// Reads a recipe file and applies `--set` overrides.
    pub fn from_file_with_overrides<S: AsRef<str>>(
        path: &Path,
        overrides: &[S],
    ) -> Result<Self, RecipeError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Syntax {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml_str_with_overrides(&text, &origin, overrides)
    }

    /// Parses a recipe, applies `--set` overrides in order, and resolves it.
    pub fn from_toml_str_with_overrides<S: AsRef<str>>(
        text: &str,
        origin: &str,
        overrides: &[S],
    ) -> Result<Self, RecipeError> {
        let mut value = parse_toml(text, origin)?;
        for o in overrides {
            apply_override(&mut value, o.as_ref())?;
        }
        Self::from_value(value, origin)
    }

    /// Resolves a parsed recipe: checks every key and value type, fills the
    /// defaults that depend on other keys, validates ranges, and refuses a key
    /// the chosen task or method does not read. `value` is what the user wrote
    /// (file and overrides): only those keys are held to the task, never the
    /// defaults filled in here.
    pub fn from_value(mut value: toml::Value, origin: &str) -> Result<Self, RecipeError> {
        let toml::Value::Table(root) = &mut value else {
            return Err(invalid(origin, "", "the recipe must be a table"));
        };
        check_table(root, ROOT_KEYS, "", origin)?;
        let written = written_keys(root);
        fill_defaults(root, origin)?;
        let recipe: Recipe =
            value
                .try_into()
                .map_err(|e: toml::de::Error| RecipeError::Invalid {
                    origin: origin.to_string(),
                    key: String::new(),
                    message: e.to_string(),
                })?;
        recipe.validate(origin)?;
        // After validation, so that a method that does not belong to its task is reported as such first.
        check_read(&written, recipe.task, recipe.method, origin)?;
        Ok(recipe)
    }

    /// The resolved recipe as TOML (every default written out).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe serialises to TOML")
    }

    /// The early-stopping mode and metric, for convenience.
    pub fn early_stopping(&self) -> crate::early_stopping::EarlyStopping {
        crate::early_stopping::EarlyStopping::new(
            self.train.metric.clone(),
            self.train.mode,
            self.train.patience,
            self.train.min_delta,
        )
    }
}

/// The defaults that depend on other keys: `name` from the file's stem, `output` from the name, `train.metric`
/// from the task (and method), `train.mode` from the metric. `root` has passed [`check_table`].
fn fill_defaults(root: &mut toml::Table, origin: &str) -> Result<(), RecipeError> {
    if !root.contains_key("model") {
        return Err(RecipeError::Missing {
            origin: origin.to_string(),
            key: "model".into(),
        });
    }
    if !root.contains_key("name") {
        let stem = Path::new(origin)
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty() && !s.starts_with('<'))
            .ok_or_else(|| RecipeError::Missing {
                origin: origin.to_string(),
                key: "name".into(),
            })?;
        root.insert("name".into(), toml::Value::String(stem.to_string()));
    }
    if !root.contains_key("output") {
        let name = root["name"].as_str().unwrap_or("run");
        let out = Path::new("runs").join(name).display().to_string();
        root.insert("output".into(), toml::Value::String(out));
    }
    let task = match root.get("task").and_then(|t| t.as_str()) {
        Some("token-classification") => Task::TokenClassification,
        Some("causal-lm") => Task::CausalLm,
        Some("image-text-contrastive") => Task::ImageTextContrastive,
        Some("image-classification") => Task::ImageClassification,
        Some("visual-instruction") => Task::VisualInstruction,
        Some("multimodal-classification") => Task::MultimodalClassification,
        Some("text-to-image") => Task::TextToImage,
        Some("detection") => Task::Detection,
        _ => Task::Classification,
    };
    // CoOp classifies: its default metric is accuracy, not retrieval recall.
    let coop = root.get("method").and_then(|m| m.as_str()) == Some("coop");
    let default = match task {
        Task::ImageTextContrastive if coop => "accuracy",
        _ => default_metric(task),
    };
    let train = root
        .entry("train")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    // `check_table` has made sure `train` is a table and `train.metric` a string; these are not user errors.
    let Some(train) = train.as_table_mut() else {
        return Err(invalid(origin, "train", "must be a table"));
    };
    let metric = train
        .entry("metric")
        .or_insert_with(|| toml::Value::String(default.into()))
        .as_str()
        .unwrap_or(default)
        .to_string();
    train
        .entry("mode")
        .or_insert_with(|| toml::Value::String(Mode::for_metric(&metric).as_str().into()));
    Ok(())
}

/// Parses TOML text into a value, with a clear error.
pub fn parse_toml(text: &str, origin: &str) -> Result<toml::Value, RecipeError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| RecipeError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
}
