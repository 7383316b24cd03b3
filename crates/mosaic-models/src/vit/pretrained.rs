//! A whole ViT checkpoint — encoder plus the head its folder was saved with — loaded from and saved to a
//! Hugging Face folder under HF's tensor names (with or without the `vit.` prefix).

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::config::VitConfig;
use super::model::{VitModel, VitOutput};
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::folder::{open_model, save_model};
use crate::hf_config::replace_labels;
use crate::layers::Linear;
use crate::params::{Checkpoint, ParamLoader, ParamStore};

/// Which head sits on the encoder (HF's `architectures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitTask {
    /// `ViTModel`: encoder (+ pooler when the checkpoint has one), no head.
    Base,
    /// `ViTForImageClassification`: a linear classifier on the final [CLS] state.
    ImageClassification,
}

impl VitTask {
    pub fn architecture(&self) -> &'static str {
        match self {
            VitTask::Base => "ViTModel",
            VitTask::ImageClassification => "ViTForImageClassification",
        }
    }
    fn from_architecture(name: &str) -> Option<Self> {
        match name {
            "ViTModel" => Some(VitTask::Base),
            "ViTForImageClassification" => Some(VitTask::ImageClassification),
            _ => None,
        }
    }
}

/// A ViT with its head, its parameters and its train/eval mode.
pub struct Vit {
    pub config: VitConfig,
    pub task: VitTask,
    pub encoder: VitModel,
    pub classifier: Option<Linear>,
    pub params: ParamStore,
    pub mode: Arc<Mode>,
}

impl Vit {
    /// Loads a folder. `task`: the head to build (`None`: the one the folder was saved with). `labels`: class
    /// names for the classifier (a new classifier is initialised with `seed` when the folder has none).
    pub fn from_folder(
        dir: &Path,
        task: Option<VitTask>,
        labels: Option<Vec<String>>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let (folder, checkpoint) = open_model(dir, device)?;
        let mut config = VitConfig::read(&folder.config())?;
        let has_classifier = checkpoint.contains("classifier.weight");
        let saved_task = config
            .architectures
            .iter()
            .find_map(|a| VitTask::from_architecture(a))
            .unwrap_or(if has_classifier {
                VitTask::ImageClassification
            } else {
                VitTask::Base
            });
        let task = task.unwrap_or(saved_task);
        if let Some(labels) = labels {
            let path = folder.config();
            replace_labels(
                &mut config.labels,
                labels,
                &path,
                has_classifier,
                "classifier",
            );
        }
        Self::build(config, task, checkpoint, seed, device)
    }

    /// A randomly initialised model, for tests and training from scratch.
    pub fn new(config: VitConfig, task: VitTask, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, task, Checkpoint::default(), seed, device)
    }

    fn build(
        mut config: VitConfig,
        task: VitTask,
        checkpoint: Checkpoint,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let fresh = checkpoint.is_empty();
        // A saved classifier for other labels is replaced, not loaded with the wrong shape.
        let classifier_fits = checkpoint
            .shape("classifier.weight")
            .is_some_and(|w| w.first() == Some(&config.labels.len()));
        let mut checkpoint = checkpoint;
        if !classifier_fits {
            checkpoint.remove("classifier.weight");
            checkpoint.remove("classifier.bias");
        }
        let store = ParamStore::new();
        let base_prefix = match task {
            VitTask::Base => "",
            VitTask::ImageClassification => "vit",
        };
        let loader = ParamLoader::for_checkpoint(checkpoint, store.clone(), seed, device)
            .backbone_prefix("vit", task != VitTask::Base)
            .allow_new(&["classifier."]);
        let base = if base_prefix.is_empty() {
            loader.clone()
        } else {
            loader.pp(base_prefix)
        };
        let with_pooler =
            task == VitTask::Base && (fresh || base.checkpoint_has("pooler.dense.weight"));
        let mode = Mode::seeded(seed);
        let encoder = VitModel::load(&base, &config, &mode, with_pooler)?;
        let classifier = match task {
            VitTask::ImageClassification => {
                if config.labels.is_empty() {
                    return Err(ModelError::Unsupported(
                        "an image-classification head needs labels (id2label in config.json, or given by the recipe)"
                            .into(),
                    ));
                }
                Some(Linear::load(
                    &loader.pp("classifier"),
                    config.hidden_size,
                    config.labels.len(),
                    config.initializer_range,
                )?)
            }
            VitTask::Base => None,
        };
        config.architectures = vec![task.architecture().to_string()];
        Ok(Vit {
            config,
            task,
            encoder,
            classifier,
            params: store,
            mode,
        })
    }

    /// Training mode turns dropout on.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training)
    }

    /// Runs the encoder on `(B, C, S, S)` pixel values.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<VitOutput> {
        self.encoder.forward(pixel_values)
    }

    /// Classification logits `(B, labels)` from the final [CLS] state.
    pub fn logits(&self, last_hidden_state: &Tensor) -> Result<Tensor> {
        let Some(classifier) = &self.classifier else {
            return Err(ModelError::Unsupported(
                "this model has no classification head".into(),
            ));
        };
        let cls = last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(classifier.forward(&cls)?)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed) under HF names.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model(dir, &self.params, &self.config.to_json())
    }
}
