//! The key/value cache of a decoder: each layer's keys and values of the tokens seen so far, so a generation step
//! only runs the new tokens through the network. Keys and values are written into a buffer allocated ahead
//! (doubling when full), so a step copies only its own new keys instead of concatenating the whole past.

use candle_core::{Result, Tensor, bail};

/// One layer's buffers `(B, heads, capacity, head_dim)`, of which the first `len` positions are filled.
#[derive(Debug, Clone)]
struct LayerBuffers {
    keys: Tensor,
    values: Tensor,
    len: usize,
}

/// Per-layer keys and values, each `(B, heads, T_past, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerBuffers>>,
    /// Positions to allocate at the first append (grown by doubling past it).
    reserve: usize,
    keep_graph: bool,
}

/// The first allocation when nothing was reserved, in positions.
const MIN_CAPACITY: usize = 16;

impl KvCache {
    /// An empty cache for a model with `num_layers` layers, for generation (it stores detached tensors).
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            reserve: 0,
            keep_graph: false,
        }
    }

    /// An empty generation cache whose buffers hold `positions` tokens before they need to grow.
    pub fn with_capacity(num_layers: usize, positions: usize) -> Self {
        let mut cache = Self::new(num_layers);
        cache.reserve = positions;
        cache
    }

    /// A cache that keeps the autograd graph, for training through cached keys/values (e.g. prefix tuning:
    /// put the learned prefix in with [`set`](Self::set), then run the sequence). It concatenates: a write into
    /// a buffer has no backward pass.
    pub fn with_gradients(num_layers: usize) -> Self {
        KvCache {
            keep_graph: true,
            ..Self::new(num_layers)
        }
    }

    /// Asks for room for `positions` tokens in all (before the first append; later it is a hint for growth).
    pub fn reserve(&mut self, positions: usize) {
        self.reserve = self.reserve.max(positions);
    }

    /// Replaces the keys and values of `layer`, `(B, heads, T, head_dim)` each.
    pub fn set(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<()> {
        let len = k.dim(2)?;
        *self.slot(layer)? = Some(LayerBuffers {
            keys: k,
            values: v,
            len,
        });
        Ok(())
    }

    /// The cached keys and values of `layer`, `(B, heads, T, head_dim)` each, when it has any.
    pub fn layer(&self, layer: usize) -> Option<(Tensor, Tensor)> {
        let l = self.layers.get(layer)?.as_ref()?;
        Some((
            l.keys.narrow(2, 0, l.len).ok()?,
            l.values.narrow(2, 0, l.len).ok()?,
        ))
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }

    fn slot(&mut self, layer: usize) -> Result<&mut Option<LayerBuffers>> {
        let n = self.layers.len();
        match self.layers.get_mut(layer) {
            Some(slot) => Ok(slot),
            None => bail!("KV cache: layer {layer} out of range (the cache has {n} layers)"),
        }
    }

    /// Appends the new keys and values `(B, heads, T_new, head_dim)` of `layer` and returns all of them
    /// (past + new).
    ///
    /// A generation cache holds detached tensors: generation needs no gradients, and keeping the autograd graph
    /// of every step alive would make memory grow with each token.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let keep_graph = self.keep_graph;
        let reserve = self.reserve;
        let slot = self.slot(layer)?;
        if keep_graph {
            let (k, v) = match slot.take() {
                Some(past) => (
                    Tensor::cat(&[&past.keys.narrow(2, 0, past.len)?, k], 2)?,
                    Tensor::cat(&[&past.values.narrow(2, 0, past.len)?, v], 2)?,
                ),
                None => (k.clone(), v.clone()),
            };
            let len = k.dim(2)?;
            *slot = Some(LayerBuffers {
                keys: k.clone(),
                values: v.clone(),
                len,
            });
            return Ok((k, v));
        }
        let (k, v) = (k.detach().contiguous()?, v.detach().contiguous()?);
        let new = k.dim(2)?;
        let past = slot.take();
        let len = past.as_ref().map_or(0, |p| p.len);
        let mut buffers = match past {
            Some(p) if p.keys.dim(2)? >= len + new && p.keys.dims()[..2] == k.dims()[..2] => p,
            past => grow(past, &k, &v, (len + new).max(reserve))?,
        };
        buffers.keys.slice_set(&k, 2, len)?;
        buffers.values.slice_set(&v, 2, len)?;
        buffers.len = len + new;
        let all = (
            buffers.keys.narrow(2, 0, buffers.len)?,
            buffers.values.narrow(2, 0, buffers.len)?,
        );
        *slot = Some(buffers);
        Ok(all)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }
}

/// New buffers shaped like `k`/`v` with room for at least `needed` positions, the filled past copied in.
fn grow(past: Option<LayerBuffers>, k: &Tensor, v: &Tensor, needed: usize) -> Result<LayerBuffers> {
    let (b, heads, _, dk) = k.dims4()?;
    let dv = v.dim(3)?;
    let (old, len, old_capacity) = match past {
        Some(p) => {
            if p.keys.dims()[..2] != [b, heads] {
                bail!(
                    "KV cache: new keys {:?} do not match the cached ones {:?}",
                    k.dims(),
                    p.keys.dims()
                )
            }
            let (len, capacity) = (p.len, p.keys.dim(2)?);
            (Some(p), len, capacity)
        }
        None => (None, 0, 0),
    };
    let capacity = needed.max(2 * old_capacity).max(MIN_CAPACITY);
    let keys = Tensor::zeros((b, heads, capacity, dk), k.dtype(), k.device())?;
    let values = Tensor::zeros((b, heads, capacity, dv), v.dtype(), v.device())?;
    if let Some(old) = old
        && len > 0
    {
        keys.slice_set(&old.keys.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
        values.slice_set(&old.values.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(LayerBuffers { keys, values, len })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, IndexOp};

    use super::*;

    fn step(t0: usize, n: usize) -> Tensor {
        Tensor::arange(t0 as f32, (t0 + n) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, n, 1))
            .unwrap()
            .broadcast_as((2, 3, n, 4))
            .unwrap()
            .contiguous()
            .unwrap()
    }

    #[test]
    fn appends_equal_one_concatenation_across_growth() {
        let mut cache = KvCache::new(1);
        let mut expected = Vec::new();
        let mut seen = 0;
        for n in [5, 1, 1, 12, 1, 30] {
            let k = step(seen, n);
            expected.push(k.clone());
            let (keys, values) = cache.append(0, &k, &k.affine(2.0, 0.0).unwrap()).unwrap();
            seen += n;
            let want = Tensor::cat(&expected.iter().collect::<Vec<_>>(), 2).unwrap();
            let diff = keys.sub(&want).unwrap().abs().unwrap().sum_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            let diff = values.i((.., .., seen - 1, ..)).unwrap().sum_all().unwrap();
            assert_eq!(
                diff.to_scalar::<f32>().unwrap(),
                2.0 * (seen - 1) as f32 * 24.0
            );
            assert_eq!(cache.seq_len(), seen);
        }
    }

    #[test]
    fn a_reserved_cache_does_not_reallocate() {
        let mut cache = KvCache::with_capacity(1, 40);
        let capacity = |cache: &KvCache| cache.layers[0].as_ref().unwrap().keys.dim(2).unwrap();
        cache.append(0, &step(0, 3), &step(0, 3)).unwrap();
        assert_eq!(capacity(&cache), 40);
        cache.append(0, &step(3, 30), &step(3, 30)).unwrap();
        assert_eq!(capacity(&cache), 40);
        cache.append(0, &step(33, 10), &step(33, 10)).unwrap();
        assert_eq!(capacity(&cache), 80, "grows by doubling");
    }

    #[test]
    fn a_layer_out_of_range_is_an_error() {
        let mut cache = KvCache::new(2);
        assert!(cache.append(2, &step(0, 1), &step(0, 1)).is_err());
    }
}
