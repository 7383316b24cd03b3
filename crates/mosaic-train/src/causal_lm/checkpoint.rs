//! Causal-LM checkpoints: a Hugging Face GPT-2 folder with the tokenizer files and a `mosaic.json` saying how the
//! data was read (`"task": "causal-lm"`, the method and instruction format), and what `mosaic eval` runs on one.

use std::path::Path;

use candle_core::Device;
use mosaic_data::Encoder;
use mosaic_models::Gpt2;
use mosaic_prompt::{ChatTemplate, InstructionFormat};

use super::data::{LmEncoder, RowFormat};
use super::held_out::{HeldOut, HeldOutScore};
use super::loss::{LmEvaluation, evaluate};
use crate::error::{Result, TrainError};

/// What a causal-LM checkpoint's `mosaic.json` says: enough to read data the way training did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LmMeta {
    /// Always `"causal-lm"`.
    pub task: String,
    /// `"instruction"` or `"lm"`.
    pub method: String,
    /// The instruction format (`alpaca`, `chatml`, `chat-template`); absent for plain LM training.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default = "default_messages_field")]
    pub messages_field: String,
    #[serde(default = "default_text_field")]
    pub text_field: String,
    pub max_length: usize,
    #[serde(default)]
    pub epoch: usize,
    #[serde(default)]
    pub step: usize,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

pub fn default_messages_field() -> String {
    "messages".into()
}

fn default_text_field() -> String {
    "text".into()
}

pub fn instruction_format(name: &str) -> Result<InstructionFormat> {
    name.parse::<InstructionFormat>()
        .map_err(|e| TrainError::Invalid(format!("data.format: {e}")))
}

/// The EOS id: the config's, else the tokenizer's `<|endoftext|>`.
fn eos_id(model: &Gpt2, encoder: &Encoder) -> Result<u32> {
    model
        .config
        .eos_token_ids
        .first()
        .copied()
        .or_else(|| encoder.tokenizer().token_to_id("<|endoftext|>"))
        .ok_or_else(|| TrainError::Invalid("the model has no eos_token_id".into()))
}

/// The encoder for `meta`'s data, on the model in `model_dir`.
pub fn lm_encoder(meta: &LmMeta, model_dir: &Path, model: &Gpt2) -> Result<LmEncoder> {
    let encoder = Encoder::from_file(model_dir.join("tokenizer.json"))?;
    let format = match meta.format.as_deref() {
        Some(name) if meta.method == "instruction" => {
            let template: ChatTemplate = instruction_format(name)?
                .template(Some(model_dir))
                .map_err(|e| TrainError::Invalid(format!("data.format: {e}")))?;
            RowFormat::Instruction {
                template: Box::new(template),
                messages_field: meta.messages_field.clone(),
            }
        }
        _ => RowFormat::Text {
            text_field: meta.text_field.clone(),
        },
    };
    let eos_id = eos_id(model, &encoder)?;
    Ok(LmEncoder {
        encoder,
        format,
        eos_id,
        max_length: meta.max_length,
    })
}

/// Saves a checkpoint folder atomically (written beside it, then swapped in).
pub fn save_checkpoint(model: &Gpt2, meta: &LmMeta, model_dir: &Path, dir: &Path) -> Result<()> {
    crate::atomic_folder::write_folder_atomically(dir, |staging| {
        model.save(staging)?;
        mosaic_models::folder::copy_tokenizer_files(model_dir, staging)?;
        crate::checkpoint::write_meta(staging, meta)
    })
}

/// The GPT-2 of a model or checkpoint folder: its own weights, or its base model with the adapter it holds.
pub fn load_model(dir: &Path, seed: u64, device: &Device) -> Result<Gpt2> {
    crate::adapters::load_checkpoint_model(
        dir,
        |d| Ok(Gpt2::from_folder(d, seed, device)?),
        |m| Ok(mosaic_peft::AdapterTarget::gpt2(m)),
    )
}

/// [`load_model`], then `adapter` (when given) on top; a folder that already holds an adapter takes no second.
fn load_model_with(dir: &Path, adapter: Option<&Path>, device: &Device) -> Result<Gpt2> {
    let model = load_model(dir, 0, device)?;
    if let Some(adapter) = adapter {
        crate::adapters::apply_extra(dir, adapter, &mosaic_peft::AdapterTarget::gpt2(&model))?;
    }
    Ok(model)
}

/// Whether `dir` holds a causal-LM checkpoint (its `mosaic.json` says `"task": "causal-lm"`).
pub fn is_causal_lm_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("mosaic.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["task"] == "causal-lm")
}

pub fn read_meta(dir: &Path) -> Result<LmMeta> {
    let meta_path = dir.join("mosaic.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| TrainError::file(&meta_path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::file(&meta_path, e))
}

/// Exact match of a causal-LM checkpoint's greedy answers to the instructions of a JSONL file (per `type` too);
/// `None` for a checkpoint trained on plain text, which has no answers to compare.
/// `adapter`: an adapter folder applied on top of the checkpoint's model (`--adapter`).
pub fn exact_match_checkpoint(
    dir: &Path,
    adapter: Option<&Path>,
    data: &Path,
    device: &Device,
) -> Result<Option<HeldOutScore>> {
    let meta = read_meta(dir)?;
    if meta.method != "instruction" {
        return Ok(None);
    }
    let model = load_model_with(dir, adapter, device)?;
    let encoder = lm_encoder(&meta, dir, &model)?;
    let held_out = HeldOut::load(&encoder, data, model.config.n_positions)?;
    held_out.score(&model, &encoder).map(Some)
}

/// Loss and perplexity of a causal-LM checkpoint on a JSONL file read the way training read its data.
/// `adapter`: an adapter folder applied on top of the checkpoint's model (`--adapter`).
pub fn evaluate_checkpoint(
    dir: &Path,
    adapter: Option<&Path>,
    data: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<LmEvaluation> {
    let meta = read_meta(dir)?;
    let model = load_model_with(dir, adapter, device)?;
    let encoder = lm_encoder(&meta, dir, &model)?;
    let (examples, _) = encoder.load(data)?;
    let pad = encoder.encoder.pad_id();
    evaluate(&model, &examples, batch_size, pad, device)
}
