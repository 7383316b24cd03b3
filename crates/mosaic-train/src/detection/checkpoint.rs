//! Detection checkpoints: a Hugging Face `DetrForObjectDetection` folder (`config.json` with `id2label` from the
//! data's categories, `model.safetensors`, `preprocessor_config.json`) plus `mosaic.json` saying
//! `"task": "detection"` with the COCO category id of every label; and what `mosaic detect` / `mosaic eval` do
//! with one. A plain HF DETR folder (no `mosaic.json`) opens too: its label ids are taken as its category ids, as
//! the COCO-trained facebook/detr-* checkpoints number them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::image::{DetrImageProcessor, DetrProcessorConfig, RgbImage};
use mosaic_models::detr::{Detection, Detr};
use serde::{Deserialize, Serialize};

use super::data::{DetectionSet, category_list, collate, image_error};
use super::evaluate::{coco_detections, detect_batch, detect_set, evaluate, score};
use super::set_loss::DetrLoss;
use crate::checkpoint::{META_FILE, read_meta_text, write_meta};
use crate::error::{Result, TrainError};
use crate::evaluate::Evaluation;

/// The `task` value of a detection `mosaic.json`.
pub const TASK: &str = "detection";

/// The processor settings file of a model folder.
pub const PROCESSOR_FILE: &str = "preprocessor_config.json";

/// `mosaic.json` of a detection checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionMeta {
    /// Always [`TASK`].
    pub task: String,
    /// `detr`.
    pub model_type: String,
    /// Class names in label order (as `config.json`'s `id2label`).
    pub labels: Vec<String>,
    /// The COCO category id of each label (`category_ids[label]`), for results files.
    pub category_ids: Vec<i64>,
    /// Where the model came from.
    pub base_model: String,
    /// `pretrained` or `random`.
    pub init: String,
    pub epoch: usize,
    pub step: usize,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// Whether `dir` holds a detection checkpoint (its `mosaic.json` says so).
pub fn is_detection_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(META_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["task"] == TASK)
}

/// Whether `dir` is a DETR model folder (its `config.json` says `model_type = "detr"`).
pub fn is_detr_folder(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["model_type"] == "detr")
}

/// Writes `model`, the processor settings file `processor_file` and `meta` into `dir`: beside it, then swapped
/// in, so a crash never leaves a half-written checkpoint where a complete one was.
pub fn save(model: &Detr, meta: &DetectionMeta, processor_file: &Path, dir: &Path) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        model.save(staging)?;
        let text =
            std::fs::read(processor_file).map_err(|e| TrainError::file(processor_file, e))?;
        mosaic_models::folder::write_atomic(&staging.join(PROCESSOR_FILE), &text)?;
        write_meta(staging, meta)
    })
}

/// A DETR loaded for detection or evaluation (eval mode).
pub struct DetectionCheckpoint {
    pub model: Detr,
    pub processor: DetrImageProcessor,
    /// The checkpoint's `mosaic.json`, or one made up from `config.json` for a plain HF folder.
    pub meta: DetectionMeta,
    pub dir: PathBuf,
}

impl DetectionCheckpoint {
    /// Opens a detection checkpoint or a plain HF DETR folder. Without `preprocessor_config.json`, DETR's
    /// default processor settings (shortest edge 800, longest 1333) apply.
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.join("config.json").exists() {
            return Err(TrainError::file(
                dir,
                "is not a model folder (no config.json)",
            ));
        }
        if !is_detr_folder(dir) {
            return Err(TrainError::file(
                dir.join("config.json"),
                "is not a DETR (model_type must be \"detr\")",
            ));
        }
        let model = Detr::from_folder(dir, None, 0, device)?;
        model.set_training(false);
        let meta = if dir.join(META_FILE).exists() {
            let (path, text) = read_meta_text(dir)?;
            let meta: DetectionMeta = serde_json::from_str(&text).map_err(|e| {
                TrainError::file(&path, format!("not a detection mosaic.json: {e}"))
            })?;
            if meta.task != TASK || meta.category_ids.len() != model.config.labels.len() {
                return Err(TrainError::file(
                    &path,
                    format!(
                        "expected task \"{TASK}\" and one category id per label ({} labels in config.json), got \
                         task {:?} with {} category ids",
                        model.config.labels.len(),
                        meta.task,
                        meta.category_ids.len()
                    ),
                ));
            }
            meta
        } else {
            DetectionMeta {
                task: TASK.into(),
                model_type: "detr".into(),
                labels: model.config.labels.clone(),
                category_ids: (0..model.config.labels.len() as i64).collect(),
                base_model: dir.display().to_string(),
                init: "pretrained".into(),
                epoch: 0,
                step: 0,
                metrics: BTreeMap::new(),
            }
        };
        let processor = if dir.join(PROCESSOR_FILE).exists() {
            DetrImageProcessor::from_folder(dir).map_err(image_error)?
        } else {
            DetrImageProcessor::new(DetrProcessorConfig::default())
        };
        Ok(DetectionCheckpoint {
            model,
            processor,
            meta,
            dir: dir.to_path_buf(),
        })
    }

    /// The detections of each image whose score passes `threshold` (strictly), boxes `[x0, y0, x1, y1]` in the
    /// image's own pixels, as `post_process_object_detection` with the original sizes returns them. Images run
    /// `batch_size` at a time.
    pub fn detect(
        &self,
        images: &[RgbImage],
        threshold: f32,
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<Vec<Detection>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch_size.max(1)) {
            let examples = chunk
                .iter()
                .map(|image| self.processor.process(image, &[]).map_err(image_error))
                .collect::<Result<Vec<_>>>()?;
            let inputs = collate(&self.processor, examples, device)?;
            out.extend(detect_batch(&self.model, &inputs, threshold, None)?.0);
        }
        Ok(out)
    }

    /// The label name of a label id.
    pub fn label(&self, id: usize) -> &str {
        self.meta.labels.get(id).map_or("?", String::as_str)
    }

    /// The COCO category id of a label id.
    pub fn category_id(&self, id: usize) -> Option<i64> {
        self.meta.category_ids.get(id).copied()
    }

    /// COCO mAP of the checkpoint on a COCO ground-truth file (images relative to it). With the checkpoint's
    /// categories (same ids and names) the set loss is computed too; otherwise label ids map to category ids
    /// through `mosaic.json` and detections of categories the file lacks are dropped.
    pub fn evaluate(&self, data: &Path, batch_size: usize, device: &Device) -> Result<Evaluation> {
        let set = DetectionSet::load(data, &self.processor, None)?;
        let ours: Vec<(i64, String)> = self
            .meta
            .category_ids
            .iter()
            .copied()
            .zip(self.meta.labels.iter().cloned())
            .collect();
        if category_list(&set.coco) == ours {
            let loss = DetrLoss::new(super::loss_config(&self.model)?)?;
            return evaluate(
                &self.model,
                &self.processor,
                &set,
                &loss,
                batch_size,
                device,
            );
        }
        if !ours.iter().any(|(id, _)| set.coco.label(*id).is_some()) {
            return Err(TrainError::file(
                data,
                format!(
                    "shares no category id with the checkpoint {} (its ids: {:?})",
                    self.dir.display(),
                    self.meta.category_ids
                ),
            ));
        }
        let (detections, _) = detect_set(
            &self.model,
            &self.processor,
            &set,
            batch_size,
            0.0,
            None,
            device,
        )?;
        let results = coco_detections(&set, &detections, |l| self.category_id(l));
        score(&set, &results, None)
    }
}
