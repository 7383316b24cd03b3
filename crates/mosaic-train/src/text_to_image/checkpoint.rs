//! Text → image checkpoints (`best/`, `last/`): `decoder.safetensors`, a `mosaic.json` saying
//! `"task": "text-to-image"` with the decoder's shape, and the LLaVA the text embedding comes from — a whole LLaVA
//! folder in the checkpoint when any of its parameters trained, else the absolute path of the folder the run
//! started from (`llava_model`).

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_models::image_decoder::DecoderConfig;

use super::model::{DECODER_FILE, TextToImageModel};
use crate::checkpoint::META_FILE;
use crate::error::{Result, TrainError};
use crate::visual_instruction::{LlavaProcessor, load_model, processor_dir};

/// What `mosaic.json` says `task` is.
pub const TASK: &str = "text-to-image";

/// What a text → image checkpoint's `mosaic.json` says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TextToImageMeta {
    /// Always `"text-to-image"`.
    pub task: String,
    /// The LLaVA folder (absolute) whose language model embeds the text, when the checkpoint holds no LLaVA of
    /// its own (nothing of it trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llava_model: Option<String>,
    pub decoder: DecoderConfig,
    /// The side of the images the decoder draws (pixels).
    pub image_size: usize,
    /// The objectives and their weights (`[loss]`).
    pub objectives: std::collections::BTreeMap<String, f64>,
    pub image_field: String,
    pub max_length: usize,
    #[serde(default)]
    pub epoch: usize,
    #[serde(default)]
    pub step: usize,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// The `mosaic.json` of a text → image checkpoint; a clear error when `dir` is not one.
pub fn read_meta(dir: &Path) -> Result<TextToImageMeta> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        TrainError::file(
            &path,
            format!("{e} (not a text-to-image checkpoint: it needs the mosaic.json a training run writes)"),
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TrainError::file(&path, e))?;
    if json["task"] != TASK {
        return Err(TrainError::file(
            &path,
            format!(
                "not a text-to-image checkpoint (its task is {})",
                json["task"]
            ),
        ));
    }
    serde_json::from_value(json).map_err(|e| TrainError::file(&path, e))
}

/// Whether `dir` holds a text → image checkpoint.
pub fn is_text_to_image_checkpoint(dir: &Path) -> bool {
    read_meta(dir).is_ok()
}

/// Saves a checkpoint folder atomically: the decoder, the LLaVA (with the processor files of `files_dir`) when
/// `meta.llava_model` is `None`, and `meta`.
pub fn save_checkpoint(
    model: &TextToImageModel,
    meta: &TextToImageMeta,
    files_dir: &Path,
    dir: &Path,
) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        std::fs::create_dir_all(staging).map_err(|e| TrainError::file(staging, e))?;
        if meta.llava_model.is_none() {
            model.llava.save(staging)?;
            mosaic_models::folder::copy_tokenizer_files(files_dir, staging)?;
        }
        model.save_decoder(&staging.join(DECODER_FILE))?;
        crate::checkpoint::write_meta(staging, meta)
    })
}

/// A loaded checkpoint: the model, its processor and what `mosaic.json` says.
pub struct LoadedTextToImage {
    pub model: TextToImageModel,
    pub processor: LlavaProcessor,
    pub meta: TextToImageMeta,
    /// The LLaVA folder it read.
    pub llava_dir: PathBuf,
}

/// Loads a text → image checkpoint folder; missing files are errors naming them.
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<LoadedTextToImage> {
    let meta = read_meta(dir)?;
    let llava_dir = match &meta.llava_model {
        Some(path) => PathBuf::from(path),
        None => dir.to_path_buf(),
    };
    if !llava_dir.join("config.json").is_file() && !mosaic_peft::is_adapter_folder(&llava_dir) {
        return Err(TrainError::file(
            llava_dir.join("config.json"),
            "missing: the LLaVA this checkpoint's text embedding comes from",
        ));
    }
    let decoder_path = dir.join(DECODER_FILE);
    if !decoder_path.is_file() {
        return Err(TrainError::file(
            &decoder_path,
            "missing: the image decoder",
        ));
    }
    let llava = load_model(&llava_dir, 0, device)?;
    let processor = LlavaProcessor::from_folder(&processor_dir(&llava_dir)?, &llava)?;
    let pad_id = processor.encoder.pad_id();
    let model = TextToImageModel::with_saved_decoder(llava, &meta.decoder, pad_id, &decoder_path)?;
    Ok(LoadedTextToImage {
        model,
        processor,
        meta,
        llava_dir,
    })
}
