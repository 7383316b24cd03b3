//! A whole ResNet checkpoint — backbone plus the image-classification head — loaded from and saved to a Hugging
//! Face folder under HF's tensor names (with or without the `resnet.` prefix), running statistics included.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::buffers::{BufferKind, BufferLoader, BufferStore};
use super::config::ResNetConfig;
use super::layers::Scope;
use super::model::ResNetModel;
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::folder::{open_model, param_tensors, save_model_tensors};
use crate::hf_config::replace_labels;
use crate::layers::Linear;
use crate::params::{Checkpoint, ParamLoader, ParamStore};

/// HF's name of the backbone inside `ResNetForImageClassification`.
const BACKBONE: &str = "resnet";

/// A ResNet with its classifier (when it has labels), its parameters, its running statistics and its train/eval
/// mode. Training mode makes every batch norm use (and fold into its running averages) the batch statistics.
pub struct ResNet {
    pub config: ResNetConfig,
    pub model: ResNetModel,
    /// `classifier.1` (HF wraps it as `Sequential(Flatten, Linear)`); `None` when the config has no labels.
    pub classifier: Option<Linear>,
    /// The trainable parameters (what optimizers update).
    pub params: ParamStore,
    /// The batch-norm running statistics (saved, never trained).
    pub buffers: BufferStore,
    pub mode: Arc<Mode>,
}

impl ResNet {
    /// Loads a folder. `labels`: class names for the classifier; when they differ from the folder's (or the folder
    /// has no classifier), a fresh classifier of that size is initialised with `seed`.
    pub fn from_folder(
        dir: &Path,
        labels: Option<&[String]>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let (folder, checkpoint) = open_model(dir, device)?;
        let mut config = ResNetConfig::read(&folder.config())?;
        let new_head = labels.is_some_and(|l| l != config.labels.as_slice());
        if let Some(labels) = labels {
            let head_saved = checkpoint.contains("classifier.1.weight");
            let path = folder.config();
            replace_labels(
                &mut config.labels,
                labels.to_vec(),
                &path,
                head_saved,
                "classifier",
            );
        }
        Self::build(config, checkpoint, new_head, seed, device)
    }

    /// A randomly initialised model (HF's init: Kaiming-normal convolutions, batch norms at identity), for tests
    /// and training from scratch.
    pub fn new(config: ResNetConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, Checkpoint::default(), false, seed, device)
    }

    fn build(
        mut config: ResNetConfig,
        mut checkpoint: Checkpoint,
        new_head: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let fresh = checkpoint.is_empty();
        let with_head = !config.labels.is_empty();
        // Our names: `resnet.` + backbone name with a head (ResNetForImageClassification), bare without (ResNetModel).
        let base = if with_head { BACKBONE } else { "" };
        // A saved classifier for other labels is replaced, not loaded with the wrong shape.
        let head_fits = !new_head
            && checkpoint
                .shape("classifier.1.weight")
                .is_some_and(|w| w.first() == Some(&config.labels.len()));
        if !head_fits {
            checkpoint.remove("classifier.1.weight");
            checkpoint.remove("classifier.1.bias");
        }
        // The running statistics go to the buffer loader under our names; the rest to the parameter loader.
        let buffer_names: Vec<String> = checkpoint
            .names()
            .filter(|k| BufferKind::split(k).is_some())
            .map(str::to_string)
            .collect();
        let mut buffer_tensors = HashMap::new();
        for name in buffer_names {
            if let Some(t) = checkpoint.take(&name)? {
                let bare = name.strip_prefix("resnet.").unwrap_or(&name);
                let ours = if base.is_empty() {
                    bare.to_string()
                } else {
                    format!("{base}.{bare}")
                };
                buffer_tensors.insert(ours, t);
            }
        }
        let params = ParamStore::new();
        let buffers = BufferStore::new();
        let path = checkpoint.path.clone();
        let loader = if fresh {
            ParamLoader::fresh(params.clone(), seed, device)
        } else {
            ParamLoader::new(checkpoint, params.clone(), seed, device)
        }
        .backbone_prefix(BACKBONE, with_head)
        .allow_new(&["classifier."]);
        let buffer_loader = BufferLoader::new(buffer_tensors, fresh, path, buffers.clone(), device);
        let mode = Mode::seeded(seed);
        let model = ResNetModel::load(
            &Scope::new(loader.clone(), base, &buffer_loader, &mode),
            &config,
        )?;
        let classifier = if with_head {
            // HF draws the classifier from U(±1/√fan_in) (PyTorch's Linear default); a normal with the same
            // variance stands in for it, bias 0.
            let fan_in = config.feature_size();
            let std = 1.0 / (3.0 * fan_in as f64).sqrt();
            Some(Linear::load(
                &loader.pp("classifier.1"),
                fan_in,
                config.labels.len(),
                std,
            )?)
        } else {
            None
        };
        config.architectures = vec![
            if with_head {
                "ResNetForImageClassification"
            } else {
                "ResNetModel"
            }
            .to_string(),
        ];
        Ok(ResNet {
            config,
            model,
            classifier,
            params,
            buffers,
            mode,
        })
    }

    /// Training mode: batch norms normalise with batch statistics and update their running averages.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training)
    }

    /// Globally average-pooled features `(B, hidden_sizes.last())` of `(B, C, H, W)` f32 pixel values.
    pub fn pooled(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(self.model.forward(pixel_values)?.mean((2, 3))?)
    }

    /// Classification logits `(B, labels)`.
    pub fn logits(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let Some(classifier) = &self.classifier else {
            return Err(ModelError::Unsupported(
                "this ResNet has no classification head (no labels in config.json, none given)"
                    .into(),
            ));
        };
        Ok(classifier.forward(&self.pooled(pixel_values)?)?)
    }

    /// Every tensor of the model's state under HF names: the parameters and the batch-norm buffers.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut tensors = param_tensors(&self.params);
        tensors.extend(self.buffers.all()?);
        Ok(tensors)
    }

    /// Writes `config.json` and `model.safetensors` (parameters and running statistics) into `dir` (created if
    /// needed) under HF names, each atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model_tensors(dir, &self.state_tensors()?, &self.config.to_json())
    }
}
