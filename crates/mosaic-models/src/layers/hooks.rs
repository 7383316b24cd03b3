//! The hooks through which a fine-tuning method changes a model after it is built, without touching a model
//! file: each [`Linear`](super::Linear) carries an adapter slot and each
//! [`MultiHeadAttention`](super::MultiHeadAttention) a key/value prefix slot, both registered in the model's
//! [`ParamStore`](crate::params::ParamStore) under their HF module names.

use std::path::Path;
use std::sync::{Arc, RwLock};

use candle_core::Tensor;

/// How a projection's weight is laid out, as its checkpoint stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// PyTorch's `nn.Linear`: `(out, in)`, `y = x Wᵀ + b`.
    OutIn,
    /// HF's GPT-2 `Conv1D`: `(in, out)`, `y = x W + b`. The parameter keeps this layout, so loading and saving
    /// need no transposition and HF files round-trip; the product stays `x @ W`, as transformers computes it.
    InOut,
}

/// A term a fine-tuning method adds to a projection (LoRA's `(α/r)·B A x`).
pub trait LinearAdapter: std::fmt::Debug + Send + Sync {
    /// `x: [..., in]`, `base_output: [..., out]` (the frozen projection of `x`) -> `[..., out]`.
    fn forward(&self, x: &Tensor, base_output: Tensor) -> candle_core::Result<Tensor>;
}

/// Learned keys and values put in front of every row's keys and values (prefix tuning), each
/// `(1 | B, heads, P, head_dim)`; every query may attend to them.
#[derive(Debug, Clone)]
pub struct KvPrefix {
    pub keys: Tensor,
    pub values: Tensor,
}

/// A value shared by every clone of the module that holds it, set after the model is built.
#[derive(Debug)]
pub struct Slot<T> {
    inner: Arc<RwLock<Option<T>>>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            inner: Arc::new(RwLock::new(None)),
        }
    }
}

impl<T: Clone> Slot<T> {
    pub fn set(&self, value: Option<T>) {
        // A poisoned lock only means a panic elsewhere mid-write of a plain Option; the value is still whole.
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    pub fn get(&self) -> Option<T> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where a projection's adapter goes.
pub type AdapterSlot = Slot<Arc<dyn LinearAdapter>>;

/// Where an attention block's key/value prefix goes.
pub type PrefixSlot = Slot<KvPrefix>;

/// A projection as the [`ParamStore`](crate::params::ParamStore) lists it: where its adapter goes and how its
/// weight (`<name>.weight` in the store) is laid out.
#[derive(Debug, Clone)]
pub struct LinearEntry {
    pub slot: AdapterSlot,
    pub layout: WeightLayout,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// An attention block as the [`ParamStore`](crate::params::ParamStore) lists it: where its key/value prefix goes
/// and the shape a prefix must have (`heads` of `head_dim`, `(1 | B, heads, P, head_dim)`).
#[derive(Debug, Clone)]
pub struct AttentionEntry {
    pub prefix: PrefixSlot,
    pub heads: usize,
    pub head_dim: usize,
}

/// What saving an adapted model writes instead of the whole model (PEFT's `save_pretrained` writes the adapter
/// alone): set on the model's [`ParamStore`](crate::params::ParamStore) by the method that adapted it.
pub trait AdapterFiles: std::fmt::Debug + Send + Sync {
    /// Writes the adapter's files into `dir` (which exists).
    fn save(&self, dir: &Path) -> crate::error::Result<()>;
}
