//! The counter-based dropout RNG that every attention implementation (the
//! SIMD and CUDA kernels, the composed reference) reproduces exactly.

use candle_core::{Device, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// SplitMix64 output number `index` (0-based) of a generator seeded with `seed`.
#[inline]
fn splitmix64(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether element `index` (row-major) survives dropout with probability `p`
/// under `seed`: it does iff `u >= p`, where `u` is the top 24 bits of
/// SplitMix64 output `index` scaled to `[0, 1)`. Counter based, so any kernel
/// (tiled, parallel, fused) can reproduce the mask element by element.
#[inline]
pub(crate) fn dropout_keep(seed: u64, index: u64, p: f32) -> bool {
    let u = (splitmix64(seed, index) >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
    u >= p
}

/// The dropout multiplier used by [`attention`](crate::attention): an f32 CPU
/// tensor of `shape` (for attention: the `(B, H, Nq, Nk)` probabilities)
/// whose elements are `0` (dropped) or `1 / (1 - p)` (kept), deterministic in
/// `seed` (see the module docs of the crate for the exact RNG). `p` must be in
/// `[0, 1)`.
pub fn dropout_mask(shape: impl Into<Shape>, p: f32, seed: u64) -> Result<Tensor> {
    let shape = shape.into();
    if !(0.0..1.0).contains(&p) {
        bail!("mosaic_kernels::dropout_mask: p must be in [0, 1), got {p}")
    }
    let keep_scale = 1.0 / (1.0 - p);
    const CHUNK: usize = 4096;
    let mut data = vec![0f32; shape.elem_count()];
    data.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (o, v) in chunk.iter_mut().enumerate() {
                let idx = (c * CHUNK + o) as u64;
                *v = if dropout_keep(seed, idx, p) {
                    keep_scale
                } else {
                    0.0
                };
            }
        });
    Tensor::from_vec(data, shape, &Device::Cpu)
}
