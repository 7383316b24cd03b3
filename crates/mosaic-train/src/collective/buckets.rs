//! The window's gradients, flattened into buckets of f32 and all-reduced once per optimizer step (DDP's
//! gradient buckets). candle's backward hands back every gradient at once, with no per-parameter hook, so the
//! reduction follows the backward pass rather than overlapping it; what it costs is measured ([`ReduceStats`]).

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::Collective;
use crate::error::Result;

/// DDP's default bucket, 25 MiB of f32.
pub const DEFAULT_BUCKET_ELEMENTS: usize = 25 * 1024 * 1024 / 4;

/// What one reduction moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceStats {
    /// Bytes of gradient this rank all-reduced (its send buffer; f32).
    pub bytes: usize,
    /// All-reduce calls (buckets, plus the one that agrees on which parameters have a gradient).
    pub calls: usize,
    /// Wall time of the reduction, flattening and unflattening included.
    pub seconds: f64,
}

/// Sums gradients over ranks in buckets of at most `bucket_elements` numbers.
#[derive(Debug, Clone, Copy)]
pub struct GradientBuckets {
    pub bucket_elements: usize,
}

impl Default for GradientBuckets {
    fn default() -> Self {
        GradientBuckets {
            bucket_elements: DEFAULT_BUCKET_ELEMENTS,
        }
    }
}

impl GradientBuckets {
    /// Replaces each gradient of `params` in `grads` by its sum over all ranks. A parameter that has a gradient
    /// on some rank only (an unused branch elsewhere) counts as zero where it has none, so every rank ends with
    /// the same set of gradients. A world of one returns at once.
    pub fn all_reduce(
        &self,
        collective: &dyn Collective,
        params: &[(String, Var)],
        grads: &mut GradStore,
    ) -> Result<ReduceStats> {
        if collective.world_size() <= 1 {
            return Ok(ReduceStats::default());
        }
        let started = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let vars: Vec<&Var> = params
            .iter()
            .map(|(_, v)| v)
            .filter(|v| seen.insert(v.id()))
            .collect();
        let mut present: Vec<f32> = vars
            .iter()
            .map(|v| f32::from(u8::from(grads.get(v.as_tensor()).is_some())))
            .collect();
        collective.all_reduce_sum(&mut present)?;
        let reduced: Vec<&Var> = vars
            .iter()
            .zip(&present)
            .filter(|(_, p)| **p > 0.0)
            .map(|(v, _)| *v)
            .collect();
        let mut stats = ReduceStats {
            calls: 1,
            ..ReduceStats::default()
        };
        let limit = self.bucket_elements.max(1);
        let mut start = 0;
        while start < reduced.len() {
            // A bucket: parameters in order until the limit (a larger parameter goes alone).
            let mut end = start;
            let mut elements = 0;
            while end < reduced.len()
                && (end == start || elements + reduced[end].elem_count() <= limit)
            {
                elements += reduced[end].elem_count();
                end += 1;
            }
            self.reduce_bucket(collective, &reduced[start..end], grads, elements)?;
            stats.bytes += elements * 4;
            stats.calls += 1;
            start = end;
        }
        stats.seconds = started.elapsed().as_secs_f64();
        Ok(stats)
    }

    fn reduce_bucket(
        &self,
        collective: &dyn Collective,
        vars: &[&Var],
        grads: &mut GradStore,
        elements: usize,
    ) -> Result<()> {
        let mut flat = Vec::with_capacity(elements);
        for var in vars {
            match grads.get(var.as_tensor()) {
                Some(g) => flat.extend(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
                None => flat.resize(flat.len() + var.elem_count(), 0.0),
            }
        }
        collective.all_reduce_sum(&mut flat)?;
        let mut offset = 0;
        for var in vars {
            let n = var.elem_count();
            let t = var.as_tensor();
            let summed = Tensor::from_slice(&flat[offset..offset + n], t.shape(), t.device())?
                .to_dtype(t.dtype())?;
            grads.insert(t, summed);
            offset += n;
        }
        Ok(())
    }
}
