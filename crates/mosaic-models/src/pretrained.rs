//! A whole BERT checkpoint — encoder plus the task head its folder was saved with — loaded from and saved to a
//! Hugging Face folder under HF's tensor names (with or without the `bert.` prefix).

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::bert::{BertModel, MaskedLmHead};
use crate::config::BertConfig;
use crate::dropout::{Dropout, Mode};
use crate::error::{ModelError, Result};
use crate::folder::{open_model, save_model};
use crate::hf_config::replace_labels;
use crate::layers::Linear;
use crate::params::{Checkpoint, ParamLoader, ParamStore};

/// Which head sits on the encoder (HF's `architectures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertTask {
    /// `BertModel`: encoder (+ pooler), no head.
    Base,
    /// `BertForMaskedLM`.
    MaskedLm,
    /// `BertForSequenceClassification`.
    SequenceClassification,
    /// `BertForTokenClassification`.
    TokenClassification,
}

impl BertTask {
    pub fn architecture(&self) -> &'static str {
        match self {
            BertTask::Base => "BertModel",
            BertTask::MaskedLm => "BertForMaskedLM",
            BertTask::SequenceClassification => "BertForSequenceClassification",
            BertTask::TokenClassification => "BertForTokenClassification",
        }
    }
    fn from_architecture(name: &str) -> Option<Self> {
        match name {
            "BertModel" => Some(BertTask::Base),
            "BertForMaskedLM" | "BertForPreTraining" => Some(BertTask::MaskedLm),
            "BertForSequenceClassification" => Some(BertTask::SequenceClassification),
            "BertForTokenClassification" => Some(BertTask::TokenClassification),
            _ => None,
        }
    }
}

const MLM_PROBE: &str = "cls.predictions.transform.dense.weight";

/// A BERT with its head, its parameters and its train/eval mode.
pub struct Bert {
    pub config: BertConfig,
    pub task: BertTask,
    pub encoder: BertModel,
    pub mlm: Option<MaskedLmHead>,
    pub classifier: Option<Linear>,
    classifier_dropout: Dropout,
    pub params: ParamStore,
    pub mode: Arc<Mode>,
}

impl Bert {
    /// Loads a folder. `task`: the head to build (`None`: the one the folder was saved with). `labels`: class
    /// names for a classification head (a new head is initialised with `seed` when the folder has none).
    pub fn from_folder(
        dir: &Path,
        task: Option<BertTask>,
        labels: Option<Vec<String>>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let (folder, checkpoint) = open_model(dir, device)?;
        let mut config = BertConfig::read(&folder.config())?;
        let has_mlm =
            checkpoint.contains(MLM_PROBE) || checkpoint.contains(&format!("bert.{MLM_PROBE}"));
        let saved_task = config
            .architectures
            .iter()
            .find_map(|a| BertTask::from_architecture(a))
            .unwrap_or(if has_mlm {
                BertTask::MaskedLm
            } else {
                BertTask::Base
            });
        let task = task.unwrap_or(saved_task);
        if task == BertTask::MaskedLm && !has_mlm {
            return Err(ModelError::Unsupported(format!(
                "{}: this model has no masked-LM head (no `cls.predictions.*` tensors); fill-mask and cloze need one",
                folder.weights().display()
            )));
        }
        if let Some(labels) = labels {
            let head_saved = saved_task == task;
            let path = folder.config();
            replace_labels(
                &mut config.labels,
                labels,
                &path,
                head_saved,
                "classification head",
            );
        }
        Self::build(config, task, checkpoint, seed, device)
    }

    /// A randomly initialised model (HF's `_init_weights`), for tests and pretraining from scratch.
    pub fn new(config: BertConfig, task: BertTask, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, task, Checkpoint::default(), seed, device)
    }

    fn build(
        mut config: BertConfig,
        task: BertTask,
        checkpoint: Checkpoint,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let fresh = checkpoint.is_empty();
        let store = ParamStore::new();
        // Our names follow the task's HF class: `bert.` for heads, none for the bare encoder.
        let base_prefix = if task == BertTask::Base { "" } else { "bert" };
        let mut loader = ParamLoader::for_checkpoint(checkpoint, store.clone(), seed, device)
            .backbone_prefix("bert", task != BertTask::Base)
            .alias("cls.predictions.bias", "cls.predictions.decoder.bias")
            .allow_new(&["classifier."]);
        if task == BertTask::SequenceClassification {
            loader = loader.allow_new(&["bert.pooler."]);
        }
        let base = if base_prefix.is_empty() {
            loader.clone()
        } else {
            loader.pp(base_prefix)
        };
        let with_pooler = match task {
            BertTask::Base => base.checkpoint_has("pooler.dense.weight") || fresh,
            BertTask::SequenceClassification => true,
            _ => false,
        };
        let mode = Mode::seeded(seed);
        let encoder = BertModel::load(&base, &config, &mode, with_pooler)?;
        let mlm = if task == BertTask::MaskedLm {
            Some(MaskedLmHead::load(
                &loader.pp("cls").pp("predictions"),
                &config,
                encoder.embeddings.word_embeddings.weight(),
            )?)
        } else {
            None
        };
        let num_labels = config.labels.len();
        let classifier = match task {
            BertTask::SequenceClassification | BertTask::TokenClassification => {
                if num_labels == 0 {
                    return Err(ModelError::Unsupported(
                        "a classification head needs labels (id2label in config.json, or given by the recipe)"
                            .into(),
                    ));
                }
                Some(Linear::load(
                    &loader.pp("classifier"),
                    config.hidden_size,
                    num_labels,
                    config.initializer_range,
                )?)
            }
            _ => None,
        };
        config.architectures = vec![task.architecture().to_string()];
        let p = config
            .classifier_dropout
            .unwrap_or(config.hidden_dropout_prob);
        Ok(Bert {
            classifier_dropout: Dropout::new(p, mode.clone()),
            config,
            task,
            encoder,
            mlm,
            classifier,
            params: store,
            mode,
        })
    }

    /// Training mode turns dropout on.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training)
    }

    /// Last hidden state (B, T, H).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.encoder
            .forward(input_ids, token_type_ids, attention_mask)
    }

    /// Masked-LM logits (B, T, V) for hidden states from [`hidden_states`](Self::hidden_states).
    pub fn mlm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.mlm {
            Some(head) => Ok(head.forward(hidden)?),
            None => Err(ModelError::Unsupported(
                "this model has no masked-LM head".into(),
            )),
        }
    }

    /// Classification logits: (B, L) for sequence classification, (B, T, L) for token classification.
    pub fn classifier_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let Some(classifier) = &self.classifier else {
            return Err(ModelError::Unsupported(
                "this model has no classification head".into(),
            ));
        };
        let features = match self.task {
            BertTask::SequenceClassification => match self.encoder.pool(hidden)? {
                Some(pooled) => pooled,
                None => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            },
            _ => hidden.clone(),
        };
        Ok(classifier.forward(&self.classifier_dropout.forward(&features)?)?)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed) under HF names.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model(dir, &self.params, &self.config.to_json())
    }
}
