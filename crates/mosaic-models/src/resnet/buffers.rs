//! Batch norm's running statistics: model state that is saved and loaded with the weights but never trained.
//!
//! They live here rather than in the [`ParamStore`](crate::ParamStore), whose list is what optimizers update;
//! [`BufferStore::all`] lists them under HF's names (`….running_mean`, `….running_var`,
//! `….num_batches_tracked`) for saving and for training checkpoints.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// The running statistics of one batch-norm layer.
#[derive(Debug)]
pub struct RunningStats {
    state: Mutex<RunningState>,
}

#[derive(Debug, Clone)]
struct RunningState {
    mean: Tensor,
    var: Tensor,
    num_batches_tracked: i64,
}

impl RunningStats {
    /// PyTorch's initial state: mean 0, variance 1, no batch seen.
    pub fn fresh(channels: usize, device: &Device) -> Result<Self> {
        Ok(Self::new(
            Tensor::zeros(channels, DType::F32, device)?,
            Tensor::ones(channels, DType::F32, device)?,
            0,
        ))
    }
    pub fn new(mean: Tensor, var: Tensor, num_batches_tracked: i64) -> Self {
        RunningStats {
            state: Mutex::new(RunningState {
                mean,
                var,
                num_batches_tracked,
            }),
        }
    }
    fn lock(&self) -> MutexGuard<'_, RunningState> {
        // A poisoned lock only means another thread panicked mid-update; the tensors are still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// `(running_mean, running_var)`, `(C,)` each.
    pub fn get(&self) -> (Tensor, Tensor) {
        let s = self.lock();
        (s.mean.clone(), s.var.clone())
    }
    pub fn num_batches_tracked(&self) -> i64 {
        self.lock().num_batches_tracked
    }
    /// PyTorch's update with momentum `m`: `running = (1 − m)·running + m·batch`, where the batch variance is
    /// the unbiased one (`var · count / (count − 1)`); `num_batches_tracked` counts the updates.
    pub fn update(
        &self,
        batch_mean: &Tensor,
        batch_var: &Tensor,
        count: usize,
        momentum: f64,
    ) -> Result<()> {
        let unbiased = (batch_var.detach() * (count as f64 / (count.max(2) - 1) as f64))?;
        let mut s = self.lock();
        s.mean = ((&s.mean * (1.0 - momentum))? + (batch_mean.detach() * momentum)?)?;
        s.var = ((&s.var * (1.0 - momentum))? + (unbiased * momentum)?)?;
        s.num_batches_tracked += 1;
        Ok(())
    }
}

/// A tensor that is saved and loaded with the weights but never trained (one of a frozen batch norm's four),
/// shared between the layer that reads it and the [`BufferStore`] that lists it, so that replacing it (resuming
/// from a checkpoint) reaches the layer.
#[derive(Debug)]
pub struct FixedTensor {
    value: Mutex<Tensor>,
}

impl FixedTensor {
    pub fn new(value: Tensor) -> Self {
        FixedTensor {
            value: Mutex::new(value.detach()),
        }
    }
    pub fn get(&self) -> Tensor {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, value: Tensor) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = value.detach();
    }
}

/// Which statistic of a batch-norm layer a buffer name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferKind {
    Mean,
    Var,
    NumBatchesTracked,
}

impl BufferKind {
    pub(crate) const ALL: [BufferKind; 3] = [
        BufferKind::Mean,
        BufferKind::Var,
        BufferKind::NumBatchesTracked,
    ];
    pub(crate) fn suffix(&self) -> &'static str {
        match self {
            BufferKind::Mean => "running_mean",
            BufferKind::Var => "running_var",
            BufferKind::NumBatchesTracked => "num_batches_tracked",
        }
    }
    /// Splits `prefix.running_mean` into `(prefix, kind)`.
    pub(crate) fn split(name: &str) -> Option<(&str, BufferKind)> {
        let (prefix, last) = name.rsplit_once('.')?;
        let kind = Self::ALL.into_iter().find(|k| k.suffix() == last)?;
        Some((prefix, kind))
    }
}

/// Batch-norm layers by name, in creation order.
type Layers = Vec<(String, Arc<RunningStats>)>;

/// The buffers of a model: batch-norm running statistics by layer, and fixed tensors by name.
#[derive(Debug, Default)]
struct Buffers {
    layers: Layers,
    /// Tensors that are saved and loaded but never trained nor updated (the four tensors of each of DETR's
    /// frozen batch norms), by HF name, in creation order.
    fixed: Vec<(String, Arc<FixedTensor>)>,
}

/// The running statistics of every batch-norm layer of a model, by layer name, in creation order, and its fixed
/// (frozen) tensors by name.
#[derive(Debug, Clone, Default)]
pub struct BufferStore {
    inner: Arc<Mutex<Buffers>>,
}

impl BufferStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> MutexGuard<'_, Buffers> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Registers the statistics of the batch-norm layer `layer` (e.g. `resnet.embedder.embedder.normalization`).
    pub fn insert(&self, layer: &str, stats: Arc<RunningStats>) {
        self.lock().layers.push((layer.to_string(), stats));
    }
    /// Registers a fixed tensor under its HF name (e.g. `….normalization.running_var` of a frozen batch norm); a
    /// name already present is replaced.
    pub fn insert_fixed(&self, name: &str, tensor: Arc<FixedTensor>) {
        let mut b = self.lock();
        match b.fixed.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = tensor,
            None => b.fixed.push((name.to_string(), tensor)),
        }
    }
    /// Every buffer as `(HF name, tensor)`: `running_mean` and `running_var` (f32, `(C,)`) and
    /// `num_batches_tracked` (i64 scalar) of each layer, then the fixed tensors.
    pub fn all(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let b = self.lock();
        out.extend(b.fixed.iter().map(|(n, t)| (n.clone(), t.get())));
        for (layer, stats) in b.layers.iter() {
            let (mean, var) = stats.get();
            let tracked = Tensor::new(stats.num_batches_tracked(), mean.device())?;
            out.push((format!("{layer}.running_mean"), mean));
            out.push((format!("{layer}.running_var"), var));
            out.push((format!("{layer}.num_batches_tracked"), tracked));
        }
        Ok(out)
    }
    /// The buffer `name` (an HF name as [`all`](Self::all) lists it).
    pub fn get(&self, name: &str) -> Option<Tensor> {
        if let Some(t) = self.fixed(name) {
            return Some(t);
        }
        let (layer, kind) = BufferKind::split(name)?;
        let stats = self.layer(layer)?;
        let (mean, var) = stats.get();
        match kind {
            BufferKind::Mean => Some(mean),
            BufferKind::Var => Some(var),
            BufferKind::NumBatchesTracked => {
                Tensor::new(stats.num_batches_tracked(), mean.device()).ok()
            }
        }
    }
    /// A fixed tensor by name.
    fn fixed_cell(&self, name: &str) -> Option<Arc<FixedTensor>> {
        let b = self.lock();
        b.fixed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }
    fn fixed(&self, name: &str) -> Option<Tensor> {
        self.fixed_cell(name).map(|t| t.get())
    }
    /// Replaces the buffer `name` (resuming from a training checkpoint); the shape must match.
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        if let Some(cell) = self.fixed_cell(name) {
            let current = cell.get();
            if current.dims() != value.dims() {
                return Err(ModelError::TensorShape {
                    path: PathBuf::new(),
                    name: name.to_string(),
                    expected: current.dims().to_vec(),
                    actual: value.dims().to_vec(),
                });
            }
            cell.set(
                value
                    .to_dtype(current.dtype())?
                    .to_device(current.device())?,
            );
            return Ok(());
        }
        let unknown = || ModelError::InvalidInput(format!("no batch-norm buffer named `{name}`"));
        let (layer, kind) = BufferKind::split(name).ok_or_else(unknown)?;
        let stats = self.layer(layer).ok_or_else(unknown)?;
        let mut s = stats.lock();
        let check = |expected: &[usize]| {
            if value.dims() == expected {
                Ok(())
            } else {
                Err(ModelError::TensorShape {
                    path: PathBuf::new(),
                    name: name.to_string(),
                    expected: expected.to_vec(),
                    actual: value.dims().to_vec(),
                })
            }
        };
        match kind {
            BufferKind::Mean => {
                check(s.mean.dims())?;
                s.mean = value
                    .to_dtype(DType::F32)?
                    .to_device(s.mean.device())?
                    .detach();
            }
            BufferKind::Var => {
                check(s.var.dims())?;
                s.var = value
                    .to_dtype(DType::F32)?
                    .to_device(s.var.device())?
                    .detach();
            }
            BufferKind::NumBatchesTracked => {
                check(&[])?;
                s.num_batches_tracked = value.to_dtype(DType::I64)?.to_scalar::<i64>()?;
            }
        }
        Ok(())
    }
    fn layer(&self, layer: &str) -> Option<Arc<RunningStats>> {
        self.lock()
            .layers
            .iter()
            .find(|(n, _)| n == layer)
            .map(|(_, s)| s.clone())
    }
    /// The number of batch-norm layers with running statistics (fixed tensors not counted).
    pub fn len(&self) -> usize {
        self.lock().layers.len()
    }
    /// Whether there is no buffer at all.
    pub fn is_empty(&self) -> bool {
        let b = self.lock();
        b.layers.is_empty() && b.fixed.is_empty()
    }
    /// Loads every buffer from `tensors` (name → tensor, e.g. a training checkpoint); names that are not buffers
    /// of this store are ignored, buffers that `tensors` lacks are left as they are.
    pub fn load_from(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, _) in self.all()? {
            if let Some(t) = tensors.get(&name) {
                self.set(&name, t)?;
            }
        }
        Ok(())
    }
}

/// Hands out batch-norm running statistics by layer name: from the checkpoint, or fresh for a new model.
pub(crate) struct BufferLoader {
    /// Checkpoint buffers under the model's own names.
    tensors: HashMap<String, Tensor>,
    fresh: bool,
    path: PathBuf,
    store: BufferStore,
    device: Device,
}

impl BufferLoader {
    pub(crate) fn new(
        tensors: HashMap<String, Tensor>,
        fresh: bool,
        path: PathBuf,
        store: BufferStore,
        device: &Device,
    ) -> Self {
        BufferLoader {
            tensors,
            fresh,
            path,
            store,
            device: device.clone(),
        }
    }

    /// The fixed tensor `name` of shape `[len]` from the checkpoint (`fresh_value` everywhere for a new model),
    /// registered in the store: the never-trained tensors of a frozen batch norm.
    pub(crate) fn fixed(
        &self,
        name: &str,
        len: usize,
        fresh_value: f32,
    ) -> Result<Arc<FixedTensor>> {
        let tensor = if self.fresh {
            Tensor::full(fresh_value, len, &self.device)?
        } else {
            match self.tensors.get(name) {
                Some(t) if t.dims() == [len] => t.to_dtype(DType::F32)?.to_device(&self.device)?,
                Some(t) => {
                    return Err(ModelError::TensorShape {
                        path: self.path.clone(),
                        name: name.to_string(),
                        expected: vec![len],
                        actual: t.dims().to_vec(),
                    });
                }
                None => {
                    return Err(ModelError::MissingTensor {
                        path: self.path.clone(),
                        name: name.to_string(),
                        expected: vec![len],
                    });
                }
            }
        };
        let tensor = Arc::new(FixedTensor::new(tensor));
        self.store.insert_fixed(name, tensor.clone());
        Ok(tensor)
    }

    /// The running statistics of the batch-norm layer `layer` over `channels`, registered in the store.
    pub(crate) fn running(&self, layer: &str, channels: usize) -> Result<Arc<RunningStats>> {
        let stats = if self.fresh {
            RunningStats::fresh(channels, &self.device)?
        } else {
            let vector = |kind: BufferKind| -> Result<Tensor> {
                let name = format!("{layer}.{}", kind.suffix());
                match self.tensors.get(&name) {
                    Some(t) if t.dims() == [channels] => {
                        Ok(t.to_dtype(DType::F32)?.to_device(&self.device)?)
                    }
                    Some(t) => Err(ModelError::TensorShape {
                        path: self.path.clone(),
                        name,
                        expected: vec![channels],
                        actual: t.dims().to_vec(),
                    }),
                    None => Err(ModelError::MissingTensor {
                        path: self.path.clone(),
                        name,
                        expected: vec![channels],
                    }),
                }
            };
            // PyTorch also accepts a checkpoint without the counter (it predates it) and starts it at 0.
            let tracked = match self.tensors.get(&format!("{layer}.num_batches_tracked")) {
                Some(t) => t
                    .to_dtype(DType::I64)?
                    .flatten_all()?
                    .to_vec1::<i64>()?
                    .first()
                    .copied()
                    .unwrap_or(0),
                None => 0,
            };
            RunningStats::new(vector(BufferKind::Mean)?, vector(BufferKind::Var)?, tracked)
        };
        let stats = Arc::new(stats);
        self.store.insert(layer, stats.clone());
        Ok(stats)
    }
}
