//! The hook through which a fine-tuning method changes a projection after the model is built: each
//! [`Linear`](super::Linear) carries a shared slot, registered in the model's
//! [`ParamStore`](crate::params::ParamStore) under the projection's HF name.

use std::sync::{Arc, RwLock};

use candle_core::Tensor;

/// A term a fine-tuning method adds to a projection (LoRA's `(α/r)·B A x`).
pub trait LinearAdapter: std::fmt::Debug + Send + Sync {
    /// `x: [..., in]`, `base_output: [..., out]` (the frozen projection of `x`) -> `[..., out]`.
    fn forward(&self, x: &Tensor, base_output: Tensor) -> candle_core::Result<Tensor>;
}

/// One projection's adapter, shared by every clone of that projection.
#[derive(Debug, Clone, Default)]
pub struct AdapterSlot {
    inner: Arc<RwLock<Option<Arc<dyn LinearAdapter>>>>,
}

impl AdapterSlot {
    pub fn set(&self, adapter: Option<Arc<dyn LinearAdapter>>) {
        // A poisoned lock only means a panic elsewhere mid-write of a plain Option; the value is still whole.
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = adapter;
    }

    pub fn get(&self) -> Option<Arc<dyn LinearAdapter>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
