//! Trainable parameters: where they come from (a checkpoint or a seeded initialiser) and where they are kept.
//!
//! Every parameter of a model is a candle [`Var`] registered under its Hugging Face name, in creation order, so
//! optimizers, freezing rules and checkpoint writers can all work from one list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::{ModelError, Result};

/// The named parameters of one model, in creation order.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    inner: Arc<Mutex<Vec<(String, Var)>>>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Var)>> {
        // A poisoned lock only means another thread panicked mid-push; the list itself is still valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn insert(&self, name: &str, var: Var) {
        self.lock().push((name.to_string(), var));
    }
    /// All parameters as `(name, var)`, in creation order.
    pub fn all(&self) -> Vec<(String, Var)> {
        self.lock().clone()
    }
    pub fn get(&self, name: &str) -> Option<Var> {
        self.lock()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
    /// The number of scalar parameters.
    pub fn num_elements(&self) -> usize {
        self.lock().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// How a parameter that the checkpoint lacks is initialised (as HF's `_init_weights` does).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    Normal(f64),
}

/// Weights read from a checkpoint, keyed by name.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a safetensors file, converting every float tensor to f32.
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|e| ModelError::Safetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let t = if t.dtype().is_float() && t.dtype() != DType::F32 {
                    t.to_dtype(DType::F32)?
                } else {
                    t
                };
                Ok((k, t))
            })
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
        })
    }
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
    pub fn pp(&self, segment: &str) -> Self {
        let mut l = self.clone();
        l.prefix = self.full(segment);
        l
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
    fn find(&self, full: &str) -> Option<&Tensor> {
        if let Some(t) = self.checkpoint.tensors.get(full) {
            return Some(t);
        }
        self.aliases.iter().find_map(|(from, to)| {
            full.strip_prefix(from.as_str())
                .and_then(|rest| self.checkpoint.tensors.get(&format!("{to}{rest}")))
        })
    }

    /// The parameter `name` (relative to this loader's prefix) with the given shape, registered as trainable.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = self.full(name);
        if let Some(existing) = self.store.get(&full) {
            return Ok(existing.as_tensor().clone());
        }
        let tensor = match self.find(&full) {
            Some(t) => {
                if t.dims() != shape {
                    return Err(ModelError::TensorShape {
                        path: self.checkpoint.path.clone(),
                        name: full,
                        expected: shape.to_vec(),
                        actual: t.dims().to_vec(),
                    });
                }
                t.to_device(&self.device)?
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
