//! PEFT's adapter folder: `adapter_config.json` and `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight`, and `base_model.model.<name>` for a module saved whole).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};
use mosaic_models::ModelError;
use mosaic_models::folder::{save_safetensors, write_atomic};
use mosaic_models::layers::AdapterFiles;

use crate::config::ADAPTER_CONFIG;
use crate::error::{PeftError, Result};

/// The file PEFT keeps an adapter's tensors in.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The prefix PEFT's `PeftModel` puts before the base model's module names.
pub(crate) const PEFT_PREFIX: &str = "base_model.model.";

pub(crate) fn lora_key(module: &str, factor: &str) -> String {
    format!("{PEFT_PREFIX}{module}.{factor}.weight")
}

/// PEFT saves DoRA's magnitude without a `.weight`.
pub(crate) fn magnitude_key(module: &str) -> String {
    format!("{PEFT_PREFIX}{module}.lora_magnitude_vector")
}

/// What an adapted model's save writes: the config and the adapter's tensors, each atomically.
#[derive(Debug)]
pub(crate) struct LoraFiles {
    pub config: serde_json::Value,
    /// `(module, A, B, DoRA magnitude)`.
    pub factors: Vec<(String, Var, Var, Option<Var>)>,
    /// `modules_to_save` parameters by store name.
    pub saved: Vec<(String, Var)>,
}

impl AdapterFiles for LoraFiles {
    fn save(&self, dir: &Path) -> mosaic_models::Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (module, a, b, magnitude) in &self.factors {
            tensors.insert(lora_key(module, "lora_A"), a.as_tensor().clone());
            tensors.insert(lora_key(module, "lora_B"), b.as_tensor().clone());
            if let Some(m) = magnitude {
                tensors.insert(magnitude_key(module), m.as_tensor().clone());
            }
        }
        for (name, var) in &self.saved {
            tensors.insert(format!("{PEFT_PREFIX}{name}"), var.as_tensor().clone());
        }
        save_safetensors(&tensors, &dir.join(ADAPTER_WEIGHTS))?;
        let json = serde_json::to_string_pretty(&self.config).map_err(|e| {
            ModelError::Unsupported(format!("cannot serialise {ADAPTER_CONFIG}: {e}"))
        })?;
        write_atomic(&dir.join(ADAPTER_CONFIG), json.as_bytes())
    }
}

/// Whether `dir` holds a PEFT adapter (rather than a whole model).
pub fn is_adapter_folder(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// The base model folder an adapter folder's `base_model_name_or_path` names (a folder or a hub id).
pub fn adapter_base_model(dir: &Path) -> Result<std::path::PathBuf> {
    let config = crate::config::read_json(&dir.join(ADAPTER_CONFIG))?;
    let base = config
        .get("base_model_name_or_path")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            PeftError::file(
                dir.join(ADAPTER_CONFIG),
                "no `base_model_name_or_path`: give the base model explicitly",
            )
        })?;
    Ok(mosaic_models::ModelSource::parse(base).resolve()?)
}
