//! The key/value cache of a decoder: each layer's keys and values of the tokens seen so far, so a generation step
//! only runs the new token through the network.

use candle_core::{Result, Tensor, bail};

/// Per-layer keys and values, each `(B, heads, T_past, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    keep_graph: bool,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers, for generation (it stores detached tensors).
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            keep_graph: false,
        }
    }

    /// A cache that keeps the autograd graph, for training through cached keys/values (e.g. prefix tuning:
    /// put the learned prefix in with [`set`](Self::set), then run the sequence).
    pub fn with_gradients(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            keep_graph: true,
        }
    }

    /// Replaces the keys and values of `layer`.
    pub fn set(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<()> {
        let n = self.layers.len();
        let Some(slot) = self.layers.get_mut(layer) else {
            bail!("KV cache: layer {layer} out of range (the cache has {n} layers)")
        };
        *slot = Some((k, v));
        Ok(())
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    /// Appends the new keys and values of `layer` and returns all of them (past + new).
    ///
    /// A generation cache holds detached tensors: generation needs no gradients, and keeping the autograd graph
    /// of every step alive would make memory grow with each token.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = self.layers.len();
        let Some(slot) = self.layers.get_mut(layer) else {
            bail!("KV cache: layer {layer} out of range (the cache has {n} layers)")
        };
        let (k, v) = if self.keep_graph {
            (k.clone(), v.clone())
        } else {
            (k.detach(), v.detach())
        };
        let (k, v) = match slot.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, &k], 2)?,
                Tensor::cat(&[&past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }
}
