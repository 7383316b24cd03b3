//! Reading and writing Hugging Face model folders, never leaving a half-written file behind.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::params::{Checkpoint, ParamStore};

/// The files of a Hugging Face model folder.
#[derive(Debug, Clone)]
pub struct HfFolder {
    pub dir: PathBuf,
}

/// Files that describe the tokenizer and preprocessing; copied along when a model is saved.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "modules.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "processor_config.json",
];

impl HfFolder {
    /// A folder that must exist and hold `config.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
            });
        }
        let folder = HfFolder {
            dir: dir.to_path_buf(),
        };
        if !folder.config().exists() {
            return Err(ModelError::MissingFile {
                path: folder.config(),
            });
        }
        Ok(folder)
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn weights(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
    /// `max_seq_length` from sentence-transformers' `sentence_bert_config.json`, when present.
    pub fn sentence_max_length(&self) -> Option<usize> {
        let text = std::fs::read_to_string(self.dir.join("sentence_bert_config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("max_seq_length")?.as_u64().map(|n| n as usize)
    }
}

/// Opens a model folder for loading: the folder (for its `config.json`) and its memory-mapped weights.
pub fn open_model(dir: &Path, device: &Device) -> Result<(HfFolder, Checkpoint)> {
    let folder = HfFolder::open(dir)?;
    let checkpoint = Checkpoint::read(&folder.weights(), device)?;
    Ok((folder, checkpoint))
}

/// The parameters as tensors under their HF names, for saving.
pub fn param_tensors(params: &ParamStore) -> HashMap<String, Tensor> {
    params
        .all()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect()
}

/// Writes a model folder from its parameters and `config` into `dir` (created if needed); while an adapter is
/// attached to `params` ([`ParamStore::set_adapter_files`]) the adapter's files instead, as PEFT saves a
/// `PeftModel`. Every model saves through here.
pub fn save_model(dir: &Path, params: &ParamStore, config: &serde_json::Value) -> Result<()> {
    save_model_as(dir, params, config, str::to_string)
}

/// As [`save_model`], with each tensor written under `file_name(its name)`: for models whose file layout
/// differs from their in-memory names (LLaVA). An adapter keeps its own names.
pub fn save_model_as(
    dir: &Path,
    params: &ParamStore,
    config: &serde_json::Value,
    file_name: impl Fn(&str) -> String,
) -> Result<()> {
    match params.adapter_files() {
        Some(files) => {
            std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
            files.save(dir)
        }
        None => {
            let tensors = param_tensors(params)
                .into_iter()
                .map(|(name, t)| (file_name(&name), t))
                .collect();
            save_model_tensors(dir, &tensors, config)
        }
    }
}

/// Writes a model folder: `model.safetensors` from `tensors` and `config.json` from `config`, each atomically,
/// into `dir` (created if needed).
pub fn save_model_tensors(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    config: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    save_safetensors(tensors, &dir.join("model.safetensors"))?;
    let json = serde_json::to_string_pretty(config)
        .map_err(|e| ModelError::Unsupported(format!("cannot serialise config: {e}")))?;
    write_atomic(&dir.join("config.json"), json.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file in the same folder, fsynced and renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::io(path, e));
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Saves tensors as safetensors at `path`, atomically.
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = temp_path(path);
    let contiguous = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    if let Err(e) = candle_core::safetensors::save(&contiguous, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        });
    }
    let synced = std::fs::File::open(&tmp).and_then(|f| f.sync_all());
    if let Err(e) = synced.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::io(path, e));
    }
    Ok(())
}

/// Copies the tokenizer/preprocessing files that exist in `from` into `to`.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| ModelError::io(&src, e))?;
            write_atomic(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}
