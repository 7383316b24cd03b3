//! Loading a multimodal-classification checkpoint (`head.safetensors` + `mosaic.json`, and `vision/` + `text/`
//! when the towers trained) for `mosaic eval` and `mosaic predict`.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::Encoder;
use mosaic_data::image::ImageProcessor;

use super::TASK;
use super::data::{PairReader, PairSet};
use super::model::{FusionKind, MultimodalClassifier};
use super::task::{HEAD_FILE, MultimodalEvaluation, MultimodalMeta, evaluate};
use crate::checkpoint::{META_FILE, read_meta_text};
use crate::error::{Result, TrainError};

/// Whether `dir` holds a multimodal-classification checkpoint.
pub fn is_multimodal_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(META_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["task"] == TASK)
}

/// A checkpoint ready to score pairs: the classifier (towers frozen, eval mode), what it was trained with,
/// and the image processor and tokenizer of its towers.
pub struct LoadedMultimodal {
    pub model: MultimodalClassifier,
    pub meta: MultimodalMeta,
    pub processor: ImageProcessor,
    pub encoder: Encoder,
}

/// A tower folder named in `mosaic.json`: relative names are inside the checkpoint.
fn tower_dir(checkpoint: &Path, named: &str) -> PathBuf {
    let p = Path::new(named);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        checkpoint.join(p)
    }
}

/// Loads the checkpoint folder `dir`; a missing or foreign `mosaic.json`, tower folder or head tensor is an
/// error naming it.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedMultimodal> {
    let (meta_path, text) = read_meta_text(dir)?;
    let meta: MultimodalMeta =
        serde_json::from_str(&text).map_err(|e| TrainError::file(&meta_path, e))?;
    if meta.task != TASK {
        return Err(TrainError::file(
            &meta_path,
            format!("task is `{}`, not `{TASK}`", meta.task),
        ));
    }
    let vision_dir = tower_dir(dir, &meta.vision_model);
    let text_dir = tower_dir(dir, &meta.text_model);
    for (what, d) in [("vision tower", &vision_dir), ("text encoder", &text_dir)] {
        if !d.is_dir() {
            return Err(TrainError::file(
                &meta_path,
                format!("the {what} folder {} does not exist", d.display()),
            ));
        }
    }
    let kind = FusionKind::parse(Some(&meta.fusion))?;
    let model = MultimodalClassifier::load(
        &vision_dir,
        &text_dir,
        kind,
        meta.labels.len(),
        crate::recipe::FreezeTowers::Both,
        0,
        device,
    )?;
    model.load_head(&dir.join(HEAD_FILE))?;
    let processor = ImageProcessor::from_folder(&vision_dir)
        .map_err(crate::image_classification::data::image_error)?;
    let encoder = Encoder::from_file(text_dir.join("tokenizer.json"))?;
    Ok(LoadedMultimodal {
        model,
        meta,
        processor,
        encoder,
    })
}

impl LoadedMultimodal {
    /// Reads a JSONL file of pairs as the checkpoint's training data was read; `labelled` says whether every
    /// row must carry a known label.
    pub fn read(&self, path: &Path, labelled: bool, batch_size: usize) -> Result<PairSet> {
        let reader = PairReader {
            fields: &self.meta.fields,
            labels: &self.meta.labels,
            processor: &self.processor,
            encoder: &self.encoder,
            max_length: self.meta.max_length,
            needs_labels: labelled,
        };
        let mut set = reader.load(path, &Device::Cpu)?;
        self.model.cache_features(&mut set, batch_size)?;
        Ok(set)
    }

    /// Loss, accuracy and the classification report on the labelled pairs of `path`.
    pub fn evaluate(&self, path: &Path, batch_size: usize) -> Result<MultimodalEvaluation> {
        let set = self.read(path, true, batch_size)?;
        evaluate(&self.model, &set, &self.meta.labels, batch_size)
    }

    /// Each pair's predicted label and class probabilities (in `meta.labels` order), in file order.
    pub fn predict(&self, path: &Path, batch_size: usize) -> Result<Vec<(String, Vec<f32>)>> {
        let set = self.read(path, false, batch_size)?;
        self.model.set_training(false);
        let indices: Vec<usize> = (0..set.len()).collect();
        let mut out = Vec::with_capacity(set.len());
        mosaic_models::no_grad(|| -> Result<()> {
            for chunk in indices.chunks(batch_size.max(1)) {
                let logits = self.model.forward(&set.batch(chunk)?)?.logits;
                let probs = mosaic_kernels::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
                for p in probs {
                    let best = crate::image_classification::evaluate::argmax(&p);
                    out.push((self.meta.labels[best].clone(), p));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}
