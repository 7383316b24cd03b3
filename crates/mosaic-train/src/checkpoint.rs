//! Run checkpoints: an HF model folder (config.json, model.safetensors, tokenizer files) plus `mosaic.json`, which
//! says how to turn the model's outputs into labels (task, method, labels, prompt). Written into a temporary
//! folder and renamed into place, so a crash never leaves a half-written checkpoint where a complete one was.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::{EncodedDataset, Encoder, TextConfig, TextDataset, TokenConfig, TokenDataset};
use mosaic_models::{Bert, BertTask};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::recipe::Task;
use crate::task_model::{Scoring, TaskModel};

/// `mosaic.json`: everything besides the weights that predicting with a checkpoint needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    pub task: Task,
    pub labels: Vec<String>,
    pub scoring: Scoring,
    /// The prompt template the inputs were rendered with (`{text}` = the input text), if any.
    pub template: Option<String>,
    pub text_field: String,
    #[serde(default = "default_label_field")]
    pub label_field: String,
    pub tokens_field: String,
    #[serde(default = "default_tags_field")]
    pub tags_field: String,
    pub max_length: usize,
    /// Where the base model came from.
    pub base_model: String,
    pub epoch: usize,
    pub step: usize,
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

fn default_label_field() -> String {
    "label".into()
}
fn default_tags_field() -> String {
    "tags".into()
}

pub const META_FILE: &str = "mosaic.json";

/// The HF task class a scoring rule needs.
pub fn bert_task(task: Task, scoring: &Scoring) -> BertTask {
    match (task, scoring) {
        (Task::TokenClassification, _) => BertTask::TokenClassification,
        (_, Scoring::Head) => BertTask::SequenceClassification,
        (_, Scoring::Cloze { .. }) => BertTask::MaskedLm,
        (_, Scoring::PromptSimilarity { .. }) => BertTask::Base,
    }
}

/// Saves `model` and `meta` into `dir` atomically; `tokenizer_from` supplies the tokenizer files.
pub fn save(
    model: &TaskModel,
    meta: &CheckpointMeta,
    tokenizer_from: &Path,
    dir: &Path,
) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        model.bert.save(staging)?;
        mosaic_models::folder::copy_tokenizer_files(tokenizer_from, staging)?;
        write_meta(staging, meta)
    })
}

/// The checkpoint folder `dir`'s `mosaic.json`: its path and text (an error asking whether `dir` is a checkpoint
/// folder when it cannot be read).
pub fn read_meta_text(dir: &Path) -> Result<(PathBuf, String)> {
    let meta_path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta_path).map_err(|e| {
        TrainError::file(
            &meta_path,
            format!("cannot read ({e}); is this a mosaic checkpoint folder?"),
        )
    })?;
    Ok((meta_path, text))
}

/// Writes `meta` as the checkpoint folder `dir`'s `mosaic.json`.
pub fn write_meta(dir: &Path, meta: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(meta)
        .map_err(|e| TrainError::Invalid(format!("cannot serialise {META_FILE}: {e}")))?;
    mosaic_models::folder::write_atomic(&dir.join(META_FILE), json.as_bytes())?;
    Ok(())
}

/// A checkpoint loaded for evaluation or prediction.
pub struct LoadedCheckpoint {
    pub model: TaskModel,
    pub meta: CheckpointMeta,
    pub encoder: Encoder,
    pub dir: PathBuf,
}

/// Loads a checkpoint folder written by [`save`].
pub fn load(dir: &Path, device: &Device) -> Result<LoadedCheckpoint> {
    let (meta_path, text) = read_meta_text(dir)?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| TrainError::file(&meta_path, format!("malformed: {e}")))?;
    let task = bert_task(meta.task, &meta.scoring);
    let labels = match task {
        BertTask::SequenceClassification | BertTask::TokenClassification => {
            Some(meta.labels.clone())
        }
        _ => None,
    };
    let bert = crate::adapters::load_checkpoint_model(
        dir,
        |d| Ok(Bert::from_folder(d, Some(task), labels, 0, device)?),
        |b| Ok(mosaic_peft::AdapterTarget::new(&b.params, b.mode.clone())),
    )?;
    let encoder = Encoder::from_file(dir.join("tokenizer.json"))?;
    let model = TaskModel::new(
        bert,
        meta.task,
        meta.scoring.clone(),
        meta.labels.clone(),
        encoder.pad_id(),
    );
    Ok(LoadedCheckpoint {
        model,
        meta,
        encoder,
        dir: dir.to_path_buf(),
    })
}

impl LoadedCheckpoint {
    /// Renders the checkpoint's template (if any) around each text.
    pub fn render(&self, texts: &[String]) -> Result<Vec<String>> {
        let Some(source) = &self.meta.template else {
            return Ok(texts.to_vec());
        };
        let mask = crate::task_model::mask_token(&self.encoder);
        let template = mosaic_prompt::Template::parse(source)?.with_mask_token(mask);
        texts
            .iter()
            .map(|t| Ok(template.render_with(|slot| (slot == "text").then_some(t.as_str()))?))
            .collect()
    }

    /// Loads a labelled file with the checkpoint's fields and labels (an unknown label is an error) and tokenizes it.
    pub fn load_data(&self, path: &Path) -> Result<EncodedDataset> {
        let labels = Some(self.meta.labels.clone());
        match self.meta.task {
            Task::Classification => {
                let cfg = TextConfig {
                    text_field: self.meta.text_field.clone(),
                    label_field: self.meta.label_field.clone(),
                    labels,
                    format: None,
                };
                let data = TextDataset::load(path, &cfg)?;
                let texts: Vec<String> = data.examples.iter().map(|e| e.text.clone()).collect();
                let rendered = self.render(&texts)?;
                let mut i = 0;
                let data = data.map_text(|_| {
                    i += 1;
                    rendered[i - 1].clone()
                });
                Ok(self
                    .encoder
                    .encode_text_dataset(&data, self.meta.max_length)?)
            }
            Task::CausalLm
            | Task::ImageClassification
            | Task::ImageTextContrastive
            | Task::VisualInstruction
            | Task::MultimodalClassification
            | Task::TextToImage
            | Task::Detection => Err(crate::TrainError::Invalid(format!(
                "a {:?} checkpoint has no labelled text to load: it has its own runner",
                self.meta.task
            ))),
            Task::TokenClassification => {
                let cfg = TokenConfig {
                    tokens_field: self.meta.tokens_field.clone(),
                    tags_field: self.meta.tags_field.clone(),
                    labels,
                    format: None,
                };
                let data = TokenDataset::load(path, &cfg)?;
                Ok(self
                    .encoder
                    .encode_token_dataset(&data, self.meta.max_length)?)
            }
        }
    }
}
