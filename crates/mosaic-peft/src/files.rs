//! PEFT's adapter folder: `adapter_config.json` and `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight`, and `base_model.model.<name>` for a module saved whole).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use mosaic_models::dropout::Mode;
use mosaic_models::folder::{save_safetensors, write_atomic};
use mosaic_models::layers::AdapterFiles;
use mosaic_models::params::Checkpoint;
use mosaic_models::{ModelError, ParamStore};

use crate::adapter::{Adapter, AdapterTarget};
use crate::config::{ADAPTER_CONFIG, AdapterConfig};
use crate::error::{PeftError, Result};
use crate::lora::Lora;

/// The file PEFT keeps an adapter's tensors in.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The prefix PEFT's `PeftModel` puts before the base model's module names.
const PEFT_PREFIX: &str = "base_model.model.";

fn lora_key(module: &str, factor: &str) -> String {
    format!("{PEFT_PREFIX}{module}.{factor}.weight")
}

/// PEFT saves DoRA's magnitude without a `.weight`.
fn magnitude_key(module: &str) -> String {
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

impl Lora {
    /// Applies the adapter saved in `dir` (by PEFT or by mosaic) to the model of `store`: its config chooses the
    /// projections, its tensors set `A`, `B` and the modules saved whole. A tensor the model has no place for,
    /// or of another shape, is an error naming it (an adapter made for another base model).
    pub fn load(store: &ParamStore, mode: Arc<Mode>, dir: &Path) -> Result<Self> {
        let config = AdapterConfig::read(dir)?;
        let lora = Lora::apply(store, mode, config, 0)?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let device = lora
            .trainable()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let file = Checkpoint::read(&path, &device)?;
        let mut unused: BTreeSet<String> = file.names().map(str::to_string).collect();
        let mut set = |key: &str, var: &Var| -> Result<()> {
            let tensor = file
                .load(key)?
                .ok_or_else(|| PeftError::file(&path, format!("no tensor `{key}`")))?;
            if tensor.dims() != var.dims() {
                return Err(PeftError::file(
                    &path,
                    format!(
                        "tensor `{key}` has shape {:?} but the model's is {:?}: the adapter was made for another base model",
                        tensor.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&tensor.to_dtype(DType::F32)?)?;
            unused.remove(key);
            Ok(())
        };
        for module in lora.targets() {
            if let Some((a, b, magnitude)) = lora.factors(&module) {
                set(&lora_key(&module, "lora_A"), a)?;
                set(&lora_key(&module, "lora_B"), b)?;
                if let Some(m) = magnitude {
                    set(&magnitude_key(&module), m)?;
                }
            }
        }
        for (name, var) in lora.saved() {
            let key = format!("{PEFT_PREFIX}{name}");
            if file.contains(&key) {
                set(&key, var)?;
            }
        }
        if let Some(key) = unused.into_iter().next() {
            return Err(PeftError::file(
                &path,
                format!(
                    "tensor `{key}` has no place in this model: the adapter was made for another base model or task"
                ),
            ));
        }
        Ok(lora)
    }
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

/// Loads `dir` as a whole model, or — when it is an adapter folder — its base model (`base_model_name_or_path`
/// of its config: a folder or a hub id) with the adapter applied. `load` builds the model from a folder, `target`
/// says where an adapter attaches.
pub fn load_model_or_adapter<M>(
    dir: &Path,
    load: impl FnOnce(&Path) -> mosaic_models::Result<M>,
    target: impl Fn(&M) -> AdapterTarget,
) -> Result<(M, Option<Adapter>)> {
    if !is_adapter_folder(dir) {
        return Ok((load(dir)?, None));
    }
    let base_dir = adapter_base_model(dir)?;
    let model = load(&base_dir)?;
    let adapter = Adapter::load(&target(&model), dir)?;
    Ok((model, Some(adapter)))
}
