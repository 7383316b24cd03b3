//! The run folder every task writes: `recipe.toml`, `metrics.jsonl` (one JSON record per line, kept in memory
//! too for the plot and for resumable checkpoints), `report.json`, `training.svg`, and the `best/`, `last/` and
//! `checkpoints/` folders the trainer fills. In a data-parallel run only rank 0 writes it; the other ranks hold
//! a folder that keeps the records in memory and writes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::plot::write_training_plot;
use crate::recipe::Recipe;

/// The open run folder.
pub struct RunFolder {
    pub output: PathBuf,
    metrics_path: PathBuf,
    /// `None` on a rank that does not write.
    metrics: Option<std::fs::File>,
    history: Vec<serde_json::Value>,
}

impl RunFolder {
    /// Creates `recipe.output`, writes `recipe.toml` and starts `metrics.jsonl` — on rank 0 of `collective`;
    /// another rank's folder writes nothing.
    pub fn create(recipe: &Recipe, collective: &dyn Collective) -> Result<Self> {
        let output = recipe.output.clone();
        let metrics_path = output.join("metrics.jsonl");
        if !collective.writes() {
            return Ok(RunFolder {
                output,
                metrics_path,
                metrics: None,
                history: Vec::new(),
            });
        }
        std::fs::create_dir_all(&output).map_err(|e| TrainError::file(&output, e))?;
        mosaic_models::folder::write_atomic(
            &output.join("recipe.toml"),
            recipe.to_toml_string().as_bytes(),
        )?;
        let metrics =
            std::fs::File::create(&metrics_path).map_err(|e| TrainError::file(&metrics_path, e))?;
        Ok(RunFolder {
            output,
            metrics_path,
            metrics: Some(metrics),
            history: Vec::new(),
        })
    }

    /// Rewrites `metrics.jsonl` as it stood at a resumable checkpoint (later lines are dropped).
    pub fn restore(&mut self, history: &[serde_json::Value]) -> Result<()> {
        if self.metrics.is_some() {
            self.metrics = Some(
                std::fs::File::create(&self.metrics_path)
                    .map_err(|e| TrainError::file(&self.metrics_path, e))?,
            );
        }
        self.history.clear();
        for record in history {
            self.log(record.clone())?;
        }
        Ok(())
    }

    /// Every record logged so far.
    pub fn history(&self) -> &[serde_json::Value] {
        &self.history
    }

    /// Appends a record to `metrics.jsonl`.
    pub fn log(&mut self, record: serde_json::Value) -> Result<()> {
        if let Some(file) = &mut self.metrics {
            writeln!(file, "{record}").map_err(|e| TrainError::file(&self.metrics_path, e))?;
        }
        self.history.push(record);
        Ok(())
    }

    /// Writes `report.json` and `training.svg` (training loss, and `metric` per evaluation).
    pub fn finish(&self, report: &serde_json::Value, metric: &str) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        let text =
            serde_json::to_string_pretty(report).map_err(|e| TrainError::Invalid(e.to_string()))?;
        mosaic_models::folder::write_atomic(&self.output.join("report.json"), text.as_bytes())?;
        write_training_plot(&self.history, metric, &self.output.join("training.svg"))
    }

    /// Whether this process writes the folder (rank 0); the trainer and tasks skip their files otherwise.
    pub fn writes(&self) -> bool {
        self.metrics.is_some()
    }

    /// A path in the run folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.output.join(name)
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.output
    }
}

/// A held-out evaluation's `metrics.jsonl` record: `fields` with `type = "eval"`, the split, and `before` (when
/// `when` says "before…") or `final` set, as the runs that score a held-out split before and after training log it.
pub fn held_out_record(
    mut fields: serde_json::Value,
    split: &str,
    when: &str,
) -> serde_json::Value {
    fields["type"] = "eval".into();
    fields["split"] = split.into();
    let flag = if when.starts_with("before") {
        "before"
    } else {
        "final"
    };
    fields[flag] = true.into();
    fields
}

/// The `metrics.jsonl` record of an evaluation: `{"type": "eval", "split": ..., <metric>: <value>...}`.
pub fn eval_record(metrics: &BTreeMap<String, f64>, split: &str) -> serde_json::Value {
    let mut record = serde_json::json!({ "type": "eval", "split": split });
    for (k, v) in metrics {
        record[k] = (*v).into();
    }
    record
}
