//! Image-classification checkpoints: a Hugging Face folder (`config.json` with `id2label`, `model.safetensors`,
//! `preprocessor_config.json`) plus `mosaic.json` saying `"task": "image-classification"`, the labels and the data
//! fields; and what `mosaic eval` / `mosaic predict` do with one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::image::{ImageProcessor, resolve_inside};
use serde::{Deserialize, Serialize};

use super::data::{Fields, PixelSet, image_error, read_dataset};
use super::evaluate::{argmax, evaluate, probabilities};
use super::model::ImageClassifier;
use crate::checkpoint::{META_FILE, read_meta_text, write_meta};
use crate::error::{Result, TrainError};
use crate::evaluate::Evaluation;

/// The `task` value of an image-classification `mosaic.json`.
pub const TASK: &str = "image-classification";

/// `mosaic.json` of an image-classification checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// Always [`TASK`].
    pub task: String,
    /// `vit` or `resnet`.
    pub model_type: String,
    /// Class names in id order (as `config.json`'s `id2label`).
    pub labels: Vec<String>,
    /// The JSONL column holding the image path.
    pub image_field: String,
    /// The JSONL column holding the label.
    pub label_field: String,
    /// Where the model came from.
    pub base_model: String,
    /// `pretrained` or `random`.
    pub init: String,
    pub epoch: usize,
    pub step: usize,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl ImageMeta {
    pub fn fields(&self) -> Fields {
        Fields {
            image: self.image_field.clone(),
            label: self.label_field.clone(),
        }
    }
}

/// Whether `dir` holds an image-classification checkpoint (its `mosaic.json` says so).
pub fn is_image_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(META_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["task"] == TASK)
}

/// Saves `model`, the preprocessing of `model_dir` and `meta` into `dir`: written beside it, then swapped in, so
/// a crash never leaves a half-written checkpoint where a complete one was.
pub fn save(model: &ImageClassifier, meta: &ImageMeta, model_dir: &Path, dir: &Path) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        model.save(staging)?;
        mosaic_models::folder::copy_tokenizer_files(model_dir, staging)?;
        write_meta(staging, meta)
    })
}

/// A checkpoint loaded for evaluation or prediction (eval mode).
pub struct ImageCheckpoint {
    pub model: ImageClassifier,
    pub meta: ImageMeta,
    pub processor: ImageProcessor,
    pub dir: PathBuf,
}

impl ImageCheckpoint {
    /// Loads a folder written by [`save`].
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let (meta_path, text) = read_meta_text(dir)?;
        let meta: ImageMeta =
            serde_json::from_str(&text).map_err(|e| TrainError::file(&meta_path, e))?;
        if meta.task != TASK {
            return Err(TrainError::file(
                &meta_path,
                format!("task is `{}`, not `{TASK}`", meta.task),
            ));
        }
        let model = crate::adapters::load_checkpoint_model(
            dir,
            |d| match d == dir {
                true => ImageClassifier::open(d, device),
                // An adapter checkpoint: the base model with a head for the checkpoint's labels.
                false => ImageClassifier::load(d, &meta.labels, false, 0, device),
            },
            ImageClassifier::adapter_target,
        )?;
        if model.labels() != meta.labels.as_slice() {
            return Err(TrainError::file(
                dir.join("config.json"),
                format!(
                    "id2label {:?} disagrees with {META_FILE}'s labels {:?}",
                    model.labels(),
                    meta.labels
                ),
            ));
        }
        model.set_training(false);
        let processor = ImageProcessor::from_folder(dir).map_err(image_error)?;
        Ok(ImageCheckpoint {
            model,
            meta,
            processor,
            dir: dir.to_path_buf(),
        })
    }

    /// The classification report on `data`: an image folder or a JSONL/CSV file with the checkpoint's fields.
    /// A label the checkpoint does not know is an error naming its folder or line.
    pub fn evaluate(&self, data: &Path, batch_size: usize, device: &Device) -> Result<Evaluation> {
        let set = read_dataset(data, Some(&self.meta.labels), &self.meta.fields())?;
        let pixels = PixelSet::from_dataset(&set, &self.processor, device)?;
        evaluate(&self.model, &pixels, &self.meta.labels, batch_size)
    }

    /// Adds `label` (the most probable class) and `scores` (class → probability) to each JSONL row of `input`,
    /// whose image field names an image relative to `input`'s folder (never outside it).
    pub fn predict(
        &self,
        input: &Path,
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let field = &self.meta.image_field;
        let text = std::fs::read_to_string(input).map_err(|e| TrainError::file(input, e))?;
        let root = input
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut rows = Vec::new();
        let mut paths = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |m: String| TrainError::Invalid(format!("{}:{}: {m}", input.display(), i + 1));
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
            let serde_json::Value::Object(row) = value else {
                return Err(at("expected a JSON object".into()));
            };
            let image = row
                .get(field.as_str())
                .and_then(|v| v.as_str())
                .ok_or_else(|| at(format!("no string field `{field}` (the image path)")))?;
            let path = resolve_inside(root, image).ok_or_else(|| {
                at(format!(
                    "image path `{image}` is outside the data root {} (refused)",
                    root.display()
                ))
            })?;
            paths.push(path);
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(TrainError::file(input, "no rows"));
        }
        let pixels = PixelSet::decode(paths, vec![0; rows.len()], &self.processor, device)?;
        self.model.set_training(false);
        let indices: Vec<usize> = (0..rows.len()).collect();
        let mut at = 0;
        for chunk in indices.chunks(batch_size.max(1)) {
            let (batch, _) = pixels.batch(chunk)?;
            for probs in probabilities(&self.model, &batch)? {
                let best = argmax(&probs);
                let scores: serde_json::Map<String, serde_json::Value> = self
                    .meta
                    .labels
                    .iter()
                    .zip(&probs)
                    .map(|(l, p)| (l.clone(), serde_json::json!(p)))
                    .collect();
                let row = &mut rows[at];
                at += 1;
                row.insert("label".into(), serde_json::json!(self.meta.labels[best]));
                row.insert("scores".into(), serde_json::Value::Object(scores));
            }
        }
        Ok(rows)
    }
}
