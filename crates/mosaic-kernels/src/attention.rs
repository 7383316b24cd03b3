//! Scaled dot-product attention.
//!
//! The public entry point [`attention`](crate::attention) dispatches to an
//! implementation module. Today that is [`naive`]: an unfused but fully
//! differentiable composition of candle matmuls, a fused *scale + mask* custom
//! op and [`softmax_last_dim`](crate::softmax_last_dim). A fused flash-style
//! kernel can replace it by adding a sibling module and changing
//! [`attention`] only; the option checks ([`check_inputs`]), the keep-mask
//! construction ([`KeepMask`]) and the dropout RNG ([`dropout_mask`] /
//! [`dropout_keep`]) are shared and define the semantics any implementation
//! must reproduce.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::util::{check_f32_cpu, f32_slice, for_each_row};

/// Value written into masked attention scores before the softmax.
///
/// It is finite (half of `f32::MIN`, so it cannot overflow to `-inf` when
/// combined with ordinary scores), hence a row whose keys are *all* masked
/// yields a uniform distribution instead of NaN; such a row gets no gradient
/// with respect to `q`/`k`.
pub const MASK_VALUE: f32 = f32::MIN / 2.0;

/// Options for [`attention`](crate::attention).
#[derive(Debug, Clone, Default)]
pub struct AttentionOptions {
    /// Multiplier applied to `q kᵀ`; `None` means `1 / sqrt(D)`.
    pub scale: Option<f64>,
    /// Causal masking. Query `i` may attend key `j` iff `j <= i + (Nk - Nq)`
    /// (bottom-right aligned, which is the usual lower-triangular mask when
    /// `Nq == Nk` and the right thing for a query block at the end of a
    /// longer key sequence).
    pub causal: bool,
    /// Optional `(B, Nk)` key padding mask of any float or integer dtype:
    /// non-zero = attend, zero = padding.
    pub key_padding_mask: Option<Tensor>,
    /// Dropout probability on the attention probabilities, in `[0, 1)`.
    /// There is no separate train flag: set it to `0.0` for evaluation.
    pub dropout: f32,
    /// Seed of the dropout mask; see [`dropout_mask`].
    pub seed: u64,
}

/// Validated attention dimensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnDims {
    pub b: usize,
    pub h: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
}

/// Checks dtypes, ranks and shapes of the attention arguments and options.
pub(crate) fn check_inputs(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<AttnDims> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        check_f32_cpu("attention", name, t)?;
        if t.rank() != 4 {
            bail!(
                "mosaic_kernels::attention: `{name}` must have shape (B, H, N, D), got {:?}",
                t.dims()
            )
        }
    }
    let (b, h, nq, d) = q.dims4()?;
    let (kb, kh, nk, kd) = k.dims4()?;
    let (vb, vh, vn, _dv) = v.dims4()?;
    if (kb, kh, kd) != (b, h, d) || (vb, vh, vn) != (b, h, nk) {
        bail!(
            "mosaic_kernels::attention: incompatible shapes q {:?}, k {:?}, v {:?} \
             (expected q (B,H,Nq,D), k (B,H,Nk,D), v (B,H,Nk,Dv))",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    if nk == 0 || d == 0 {
        bail!("mosaic_kernels::attention: need at least one key and D > 0")
    }
    if let Some(m) = &opts.key_padding_mask
        && m.dims() != [b, nk]
    {
        bail!(
            "mosaic_kernels::attention: key_padding_mask must have shape ({b}, {nk}), got {:?}",
            m.dims()
        )
    }
    if let Some(s) = opts.scale
        && !s.is_finite()
    {
        bail!("mosaic_kernels::attention: scale must be finite, got {s}")
    }
    let p = opts.dropout;
    if !(0.0..1.0).contains(&p) {
        bail!("mosaic_kernels::attention: dropout must be in [0, 1), got {p}")
    }
    Ok(AttnDims { b, h, nq, nk, d })
}

/// The effective score scale.
pub(crate) fn effective_scale(dims: &AttnDims, opts: &AttentionOptions) -> f64 {
    opts.scale.unwrap_or(1.0 / (dims.d as f64).sqrt())
}

/// Which (query, key) pairs may interact: `data[(bi * nq + i) * nk + j]` is 1
/// for "attend", with `bi = 0` when the mask is shared across the batch
/// (causal only) and `bi = b` when it carries a key padding mask.
#[derive(Debug, Clone)]
pub(crate) struct KeepMask {
    pub data: Arc<Vec<u8>>,
    pub per_batch: bool,
}

impl KeepMask {
    /// Builds the keep mask for the options, `None` when nothing is masked.
    pub(crate) fn new(dims: &AttnDims, opts: &AttentionOptions) -> Result<Option<Self>> {
        let AttnDims { b, nq, nk, .. } = *dims;
        let padding = match &opts.key_padding_mask {
            Some(m) => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        if padding.is_none() && !opts.causal {
            return Ok(None);
        }
        let mb = if padding.is_some() { b } else { 1 };
        let mut data = vec![1u8; mb * nq * nk];
        for bi in 0..mb {
            for i in 0..nq {
                let row = &mut data[(bi * nq + i) * nk..(bi * nq + i + 1) * nk];
                for (j, keep) in row.iter_mut().enumerate() {
                    let causal_ok = !opts.causal || j + nq <= i + nk;
                    let pad_ok = padding.as_ref().is_none_or(|p| p[bi * nk + j] != 0.0);
                    *keep = u8::from(causal_ok && pad_ok);
                }
            }
        }
        Ok(Some(Self {
            data: Arc::new(data),
            per_batch: padding.is_some(),
        }))
    }
}

/// Element-wise `keep ? x * scale : fill` over `(B, H, Nq, Nk)` scores.
///
/// Used with `fill = MASK_VALUE` in the forward pass; its backward is the same
/// op with `fill = 0` applied to the incoming gradient.
#[derive(Clone)]
struct ScaleMask {
    scale: f32,
    fill: f32,
    mask: Option<KeepMask>,
    dims: AttnDims,
}

impl CustomOp1 for ScaleMask {
    fn name(&self) -> &'static str {
        "mosaic-attention-scale-mask"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), storage, layout)?;
        let AttnDims { b, h, nq, nk, .. } = self.dims;
        if layout.dims() != [b, h, nq, nk] {
            bail!(
                "{}: unexpected scores shape {:?}",
                self.name(),
                layout.dims()
            )
        }
        let mut out = vec![0f32; x.len()];
        if !out.is_empty() {
            let (scale, fill) = (self.scale, self.fill);
            for_each_row(&mut out, nk, |r, y| {
                let x = &x[r * nk..(r + 1) * nk];
                match &self.mask {
                    None => y.iter_mut().zip(x).for_each(|(yi, &xi)| *yi = xi * scale),
                    Some(m) => {
                        let (bi, i) = (r / (h * nq), r % nq);
                        let mrow = if m.per_batch { bi * nq + i } else { i };
                        let keep = &m.data[mrow * nk..(mrow + 1) * nk];
                        for ((yi, &xi), &k) in y.iter_mut().zip(x).zip(keep) {
                            *yi = if k != 0 { xi * scale } else { fill };
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let bwd = Self {
            fill: 0.0,
            ..self.clone()
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&bwd)?))
    }
}

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

/// Unfused, differentiable attention: matmul, fused scale+mask, softmax,
/// dropout, matmul.
pub(crate) mod naive {
    use super::*;

    pub(crate) fn attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
    ) -> Result<Tensor> {
        let dims = check_inputs(q, k, v, opts)?;
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let scores = q.matmul(&k.t()?)?;
        let scores = scores.apply_op1(ScaleMask {
            scale: effective_scale(&dims, opts) as f32,
            fill: MASK_VALUE,
            mask: KeepMask::new(&dims, opts)?,
            dims,
        })?;
        let mut probs = crate::softmax_last_dim(&scores)?;
        if opts.dropout > 0.0 {
            probs = probs.mul(&dropout_mask(probs.shape(), opts.dropout, opts.seed)?)?;
        }
        probs.matmul(&v)
    }
}

/// Current attention implementation.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Tensor> {
    naive::attention(q, k, v, opts)
}
