//! Trainable parameters: where they come from (a checkpoint or a seeded initialiser) and where they are kept.
//!
//! Every parameter of a model is a candle [`Var`] registered under its Hugging Face name, in creation order, so
//! optimizers, freezing rules and checkpoint writers can all work from one list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};

pub use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::layers::{AdapterFiles, AttentionEntry, LinearEntry, Slot};

#[derive(Debug, Default)]
struct Entries {
    /// In creation order.
    vars: Vec<(String, Var)>,
    /// Name → position in `vars`.
    index: HashMap<String, usize>,
    /// Every projection, by the projection's name, in creation order.
    linears: Vec<(String, LinearEntry)>,
    /// Every attention block, by the block's name, in creation order.
    attentions: Vec<(String, AttentionEntry)>,
    /// The position offset of every learned position table, by its name.
    position_offsets: Vec<(String, Slot<usize>)>,
    /// Where virtual input tokens go (BERT's embeddings), by module name.
    input_prompts: Vec<(String, Slot<Tensor>)>,
    /// Set while an adapter is attached: saving the model then writes the adapter's files instead.
    adapter_files: Option<Arc<dyn AdapterFiles>>,
}

/// The named parameters of one model, in creation order; lookups by name take constant time.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    inner: Arc<Mutex<Entries>>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock only means another thread panicked mid-push; the list itself is still valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Registers `var` under `name`; a name already present is replaced in its place.
    pub fn insert(&self, name: &str, var: Var) {
        let mut entries = self.lock();
        match entries.index.get(name) {
            Some(&i) => entries.vars[i].1 = var,
            None => {
                let i = entries.vars.len();
                entries.index.insert(name.to_string(), i);
                entries.vars.push((name.to_string(), var));
            }
        }
    }
    /// Removes the parameter `name` (e.g. an adapter's, once merged), keeping the others' order.
    pub fn remove(&self, name: &str) -> Option<Var> {
        let mut entries = self.lock();
        let i = entries.index.remove(name)?;
        let (_, var) = entries.vars.remove(i);
        for (_, j) in entries.index.iter_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        Some(var)
    }
    /// All parameters as `(name, var)`, in creation order.
    pub fn all(&self) -> Vec<(String, Var)> {
        self.lock().vars.clone()
    }
    pub fn get(&self, name: &str) -> Option<Var> {
        let entries = self.lock();
        entries.index.get(name).map(|&i| entries.vars[i].1.clone())
    }
    /// The number of scalar parameters.
    pub fn num_elements(&self) -> usize {
        self.lock().vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
    /// Records a projection under its name (e.g. `...attention.self.query`).
    pub(crate) fn register_linear(&self, name: &str, entry: LinearEntry) {
        self.lock().linears.push((name.to_string(), entry));
    }
    /// Every projection of the model by name, in creation order: where LoRA attaches.
    pub fn linears(&self) -> Vec<(String, LinearEntry)> {
        self.lock().linears.clone()
    }
    /// Marks the model adapted (saving writes `files` instead of the whole model), or with `None` whole again.
    pub fn set_adapter_files(&self, files: Option<Arc<dyn AdapterFiles>>) {
        self.lock().adapter_files = files;
    }
    /// What saving the model writes while an adapter is attached.
    pub fn adapter_files(&self) -> Option<Arc<dyn AdapterFiles>> {
        self.lock().adapter_files.clone()
    }
    /// Records an attention block under its name (e.g. `...layer.0.attention`).
    pub(crate) fn register_attention(&self, name: &str, entry: AttentionEntry) {
        self.lock().attentions.push((name.to_string(), entry));
    }
    /// Every attention block by name, in creation order: where prefix tuning attaches.
    pub fn attentions(&self) -> Vec<(String, AttentionEntry)> {
        self.lock().attentions.clone()
    }
    /// Records a learned position table's offset under the table's name.
    pub(crate) fn register_position_offset(&self, name: &str, slot: Slot<usize>) {
        self.lock().position_offsets.push((name.to_string(), slot));
    }
    /// Records where virtual input tokens go (an encoder's embeddings).
    pub(crate) fn register_input_prompt(&self, name: &str, slot: Slot<Tensor>) {
        self.lock().input_prompts.push((name.to_string(), slot));
    }
    /// Where prompt tuning puts its virtual tokens in an encoder's input.
    pub fn input_prompts(&self) -> Vec<(String, Slot<Tensor>)> {
        self.lock().input_prompts.clone()
    }
    /// The position offset of every learned position table: where prefix and prompt tuning shift positions.
    pub fn position_offsets(&self) -> Vec<(String, Slot<usize>)> {
        self.lock().position_offsets.clone()
    }
}

/// How a parameter that the checkpoint lacks is initialised (as HF's `_init_weights` does).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    Normal(f64),
}

/// Hands out parameters by name: from the checkpoint when it has them, else (when allowed) freshly initialised.
#[derive(Clone)]
pub struct ParamLoader {
    prefix: String,
    checkpoint: Arc<Checkpoint>,
    /// Name prefixes that the checkpoint may lack (new task heads); anything else missing is an error.
    new_ok: Arc<Vec<String>>,
    /// Alternative prefixes under which a checkpoint may store a name (e.g. with or without `bert.`).
    aliases: Arc<Vec<(String, String)>>,
    store: ParamStore,
    rng: Arc<Mutex<StdRng>>,
    device: Device,
}

impl ParamLoader {
    /// A loader over `checkpoint`; parameters are registered in `store`; `seed` drives fresh initialisation.
    pub fn new(checkpoint: Checkpoint, store: ParamStore, seed: u64, device: &Device) -> Self {
        ParamLoader {
            prefix: String::new(),
            checkpoint: Arc::new(checkpoint),
            new_ok: Arc::new(Vec::new()),
            aliases: Arc::new(Vec::new()),
            store,
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            device: device.clone(),
        }
    }
    /// A loader with no checkpoint: every parameter is freshly initialised.
    pub fn fresh(store: ParamStore, seed: u64, device: &Device) -> Self {
        let mut loader = Self::new(Checkpoint::default(), store, seed, device);
        loader.new_ok = Arc::new(vec![String::new()]);
        loader
    }
    /// [`fresh`](Self::fresh) when `checkpoint` is empty, else [`new`](Self::new).
    pub fn for_checkpoint(
        checkpoint: Checkpoint,
        store: ParamStore,
        seed: u64,
        device: &Device,
    ) -> Self {
        if checkpoint.is_empty() {
            Self::fresh(store, seed, device)
        } else {
            Self::new(checkpoint, store, seed, device)
        }
    }
    pub fn allow_new(mut self, prefixes: &[&str]) -> Self {
        let mut v = (*self.new_ok).clone();
        v.extend(prefixes.iter().map(|s| s.to_string()));
        self.new_ok = Arc::new(v);
        self
    }
    /// When `name` starting with `from` is absent, also look for it with `from` replaced by `to`.
    pub fn alias(mut self, from: &str, to: &str) -> Self {
        let mut v = (*self.aliases).clone();
        v.push((from.to_string(), to.to_string()));
        self.aliases = Arc::new(v);
        self
    }
    /// Reads a checkpoint saved with or without a task class's backbone prefix (`bert`, `vit`, `resnet`):
    /// `ours_prefixed` says whether this model's names carry `prefix.`; the file's names are checked.
    pub fn backbone_prefix(self, prefix: &str, ours_prefixed: bool) -> Self {
        let dotted = format!("{prefix}.");
        let file_prefixed = self.checkpoint.names().any(|k| k.starts_with(&dotted));
        match (ours_prefixed, file_prefixed) {
            (false, true) => self.alias("", &dotted),
            (true, false) => self.alias(&dotted, ""),
            _ => self,
        }
    }
    pub fn pp(&self, segment: &str) -> Self {
        let mut l = self.clone();
        l.prefix = self.full(segment);
        l
    }
    /// This loader's prefix: the HF name of the module it loads (`bert.encoder.layer.0.attention.self.query`).
    pub fn name(&self) -> &str {
        &self.prefix
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn store(&self) -> &ParamStore {
        &self.store
    }
    pub fn checkpoint_has(&self, name: &str) -> bool {
        self.find(&self.full(name)).is_some()
    }
    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }
    /// The name under which the checkpoint stores `full`, trying the aliases.
    fn find(&self, full: &str) -> Option<String> {
        if self.checkpoint.contains(full) {
            return Some(full.to_string());
        }
        self.aliases.iter().find_map(|(from, to)| {
            full.strip_prefix(from.as_str())
                .map(|rest| format!("{to}{rest}"))
                .filter(|name| self.checkpoint.contains(name))
        })
    }

    /// The parameter `name` (relative to this loader's prefix) with the given shape, registered as trainable.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = self.full(name);
        if let Some(existing) = self.store.get(&full) {
            return Ok(existing.as_tensor().clone());
        }
        let tensor = match self.find(&full) {
            Some(stored) => {
                let actual = self.checkpoint.shape(&stored).unwrap_or_default();
                if actual != shape {
                    return Err(ModelError::TensorShape {
                        path: self.checkpoint.path.clone(),
                        name: full,
                        expected: shape.to_vec(),
                        actual: actual.to_vec(),
                    });
                }
                match self.checkpoint.load(&stored)? {
                    Some(t) => t.to_device(&self.device)?,
                    None => {
                        return Err(ModelError::MissingTensor {
                            path: self.checkpoint.path.clone(),
                            name: full,
                            expected: shape.to_vec(),
                        });
                    }
                }
            }
            None if self.new_ok.iter().any(|p| full.starts_with(p.as_str())) => {
                self.init(shape, init)?
            }
            None => {
                return Err(ModelError::MissingTensor {
                    path: self.checkpoint.path.clone(),
                    name: full,
                    expected: shape.to_vec(),
                });
            }
        };
        let var = Var::from_tensor(&tensor)?;
        self.store.insert(&full, var.clone());
        Ok(var.as_tensor().clone())
    }

    fn init(&self, shape: &[usize], init: Init) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                (0..n)
                    .map(|_| {
                        // Box–Muller: rand has no normal distribution without rand_distr.
                        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                        let u2: f64 = rng.random();
                        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std)
                            as f32
                    })
                    .collect()
            }
        };
        Ok(Tensor::from_vec(data, shape, &self.device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_name_keep_creation_order() {
        let store = ParamStore::new();
        for i in 0..1000 {
            let v = Var::new(&[i as f32], &Device::Cpu).unwrap();
            store.insert(&format!("layer.{i}.weight"), v);
        }
        let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "layer.0.weight");
        assert_eq!(names[999], "layer.999.weight");
        let v = store.get("layer.500.weight").unwrap();
        assert_eq!(v.as_tensor().to_vec1::<f32>().unwrap(), [500.0]);
        assert!(store.get("layer.1000.weight").is_none());
        // Replacing keeps the position.
        store.insert("layer.3.weight", Var::new(&[-1f32], &Device::Cpu).unwrap());
        assert_eq!(store.all()[3].0, "layer.3.weight");
        assert_eq!(store.all().len(), 1000);
    }
}
