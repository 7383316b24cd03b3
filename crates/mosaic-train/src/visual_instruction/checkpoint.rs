//! LLaVA folders of a run: the base model a run built from parts (`base/`, a whole LLaVA folder with its
//! processor files), and the `best/` / `last/` checkpoints (a LLaVA folder, or the adapter on `base/` or on the
//! recipe's model, with a `mosaic.json` saying `"task": "visual-instruction"`).

use std::path::Path;

use candle_core::Device;
use mosaic_data::Encoder;
use mosaic_models::Llava;
use mosaic_models::llava::{FeatureLayers, FeatureSelect, LlavaParts, ProjectorKind};

use super::processor::{CHATML_LLAVA_TEMPLATE, IMAGE_TOKEN, LLAVA_CHAT_TEMPLATE};
use crate::error::{Result, TrainError};

/// What a visual-instruction checkpoint's `mosaic.json` says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VisualMeta {
    /// Always `"visual-instruction"`.
    pub task: String,
    /// `"align"` or `"instruct"`.
    pub stage: String,
    pub image_field: String,
    pub max_length: usize,
    #[serde(default)]
    pub epoch: usize,
    #[serde(default)]
    pub step: usize,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// Whether `dir` holds a visual-instruction checkpoint or a LLaVA folder.
pub fn is_llava_folder(dir: &Path) -> bool {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    };
    read("mosaic.json").is_some_and(|v| v["task"] == "visual-instruction")
        || read("config.json").is_some_and(|v| v["model_type"] == "llava")
}

/// The LLaVA of a folder: its own weights, or its base model with the adapter it holds (LoRA merged).
pub fn load_model(dir: &Path, seed: u64, device: &Device) -> Result<Llava> {
    crate::adapters::load_checkpoint_model(
        dir,
        |d| Ok(Llava::from_folder(d, seed, device)?),
        |m| Ok(mosaic_peft::AdapterTarget::new(&m.params, m.mode.clone())),
    )
}

/// The folder whose processor files (tokenizer, chat template, image processor) a checkpoint or LLaVA folder
/// uses: its own, else its adapter's base model's.
pub fn processor_dir(dir: &Path) -> Result<std::path::PathBuf> {
    if dir.join("tokenizer.json").is_file() || !mosaic_peft::is_adapter_folder(dir) {
        return Ok(dir.to_path_buf());
    }
    Ok(mosaic_peft::adapter_base_model(dir)?)
}

/// Saves a checkpoint folder atomically: the model (or its adapter), the processor files of `files_dir`, and
/// `meta`.
pub fn save_checkpoint(
    model: &Llava,
    meta: &VisualMeta,
    files_dir: &Path,
    dir: &Path,
) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        model.save(staging)?;
        mosaic_models::folder::copy_tokenizer_files(files_dir, staging)?;
        crate::checkpoint::write_meta(staging, meta)
    })
}

/// Builds a LLaVA from a CLIP folder and a GPT-2 folder and writes it, with its processor files, as a whole
/// LLaVA folder `out` (the tokenizer gains `<image>`; the chat template is ChatML with image items when the
/// tokenizer has its tokens, else LLaVA-1.5's; the image processor is the CLIP folder's).
pub fn build_from_parts(
    vision: &Path,
    language: &Path,
    projector: ProjectorKind,
    seed: u64,
    out: &Path,
    device: &Device,
) -> Result<()> {
    let preprocessor = vision.join("preprocessor_config.json");
    if !preprocessor.is_file() {
        return Err(TrainError::Invalid(format!(
            "recipe key `vision_model`: {} is missing (the CLIP folder's image processor)",
            preprocessor.display()
        )));
    }
    let mut encoder = Encoder::from_file(language.join("tokenizer.json"))?;
    let image_token_index = encoder.add_special_token(IMAGE_TOKEN)?;
    let parts = LlavaParts {
        vision,
        language,
        projector,
        image_token_index,
        feature_layers: FeatureLayers::One(-2),
        feature_select: FeatureSelect::Default,
    };
    let model = Llava::from_parts(&parts, seed, device)?;
    let chatml = ["<|im_start|>", "<|im_end|>"]
        .iter()
        .all(|t| encoder.tokenizer().token_to_id(t).is_some());
    let template = if chatml {
        CHATML_LLAVA_TEMPLATE
    } else {
        LLAVA_CHAT_TEMPLATE
    };
    let vision_config = &model.config.vision;
    let processor_config = serde_json::json!({
        "processor_class": "LlavaProcessor",
        "image_token": IMAGE_TOKEN,
        "patch_size": vision_config.patch_size,
        "vision_feature_select_strategy": model.config.feature_select.as_str(),
        "num_additional_image_tokens": 1,
    });
    crate::atomic_folder::write_folder_atomically(out, |staging| {
        model.save(staging)?;
        let write = |name: &str, bytes: &[u8]| -> Result<()> {
            Ok(mosaic_models::folder::write_atomic(
                &staging.join(name),
                bytes,
            )?)
        };
        write("tokenizer.json", encoder.to_json()?.as_bytes())?;
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let src = language.join(name);
            if src.is_file() {
                let bytes = std::fs::read(&src).map_err(|e| TrainError::file(&src, e))?;
                write(name, &bytes)?;
            }
        }
        let bytes = std::fs::read(&preprocessor).map_err(|e| TrainError::file(&preprocessor, e))?;
        write("preprocessor_config.json", &bytes)?;
        write("chat_template.jinja", template.as_bytes())?;
        let text = serde_json::to_string_pretty(&processor_config)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        write("processor_config.json", text.as_bytes())
    })
}
