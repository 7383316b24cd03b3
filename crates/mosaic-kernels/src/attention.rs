//! Scaled dot-product attention: options, argument checks, and the candle op
//! around the fused kernels of [`crate::flash`] (and of `crate::cuda`).
//!
//! The option checks ([`check_inputs`]) and the dropout RNG of
//! [`crate::dropout`] define the semantics every implementation reproduces,
//! the composed [`reference::attention`](crate::reference::attention) included.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, bail};

use crate::cpu_storage::{check_f32_cpu, cpu_f32, f32_slice};
use crate::flash::{self, BwdInputs, FlashConfig, Padding, Segments};
use crate::simd::Isa;

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
    /// Seed of the dropout mask; see [`dropout_mask`](crate::dropout_mask).
    pub seed: u64,
    /// Optional `(B, N)` segment ids of any integer dtype, for self-attention
    /// only (`Nq == Nk == N`): query `i` may attend key `j` only when
    /// `segment[b, i] == segment[b, j]` (on top of the causal and padding
    /// masks). This is how several samples packed into one sequence stay
    /// independent; the ids only need to be equal within a sample and differ
    /// between neighbours (contiguous runs make whole key blocks skippable).
    pub segment_ids: Option<Tensor>,
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
    if let Some(s) = &opts.segment_ids {
        if nq != nk {
            bail!(
                "mosaic_kernels::attention: segment_ids need self-attention (Nq == Nk), \
                 got Nq = {nq}, Nk = {nk}"
            )
        }
        if s.dims() != [b, nk] {
            bail!(
                "mosaic_kernels::attention: segment_ids must have shape ({b}, {nk}), got {:?}",
                s.dims()
            )
        }
        if !s.dtype().is_int() {
            bail!(
                "mosaic_kernels::attention: segment_ids must be an integer tensor (u32, i64, ...), \
                 got {:?}",
                s.dtype()
            )
        }
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

/// Where the fused kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// The CPU kernels of [`crate::flash`] (with `cfg.isa`).
    Cpu,
    /// The CUDA kernels of [`crate::cuda`] on device 0.
    #[cfg(feature = "cuda")]
    Cuda,
}

/// The fused attention as a candle op over `(q, k, v)`. The forward keeps the
/// per-row log-sum-exp here for the backward (the output tensor itself stays
/// exactly `(B, H, Nq, Dv)`).
struct FlashAttention {
    cfg: FlashConfig,
    backend: Backend,
    lse: OnceLock<Vec<f32>>,
}

impl FlashAttention {
    fn check_len(&self, name: &str, len: usize, want: usize) -> Result<()> {
        if len != want {
            bail!(
                "{}: `{name}` has {len} elements, expected {want}",
                self.name()
            )
        }
        Ok(())
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "mosaic-flash-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = &self.cfg;
        let q = f32_slice(self.name(), s1, l1)?;
        let k = f32_slice(self.name(), s2, l2)?;
        let v = f32_slice(self.name(), s3, l3)?;
        self.check_len("q", q.len(), c.b * c.h * c.nq * c.d)?;
        self.check_len("k", k.len(), c.b * c.h * c.nk * c.d)?;
        self.check_len("v", v.len(), c.b * c.h * c.nk * c.dv)?;
        let fwd = match self.backend {
            Backend::Cpu => flash::forward(c, q, k, v),
            #[cfg(feature = "cuda")]
            Backend::Cuda => crate::cuda::forward(c, q, k, v)?,
        };
        // A fresh op is built for every call, so this is the only `set`.
        let _ = self.lse.set(fwd.lse);
        Ok((
            CpuStorage::F32(fwd.out),
            Shape::from((c.b, c.h, c.nq, c.dv)),
        ))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(lse) = self.lse.get() else {
            bail!("{}: backward before forward", self.name())
        };
        let c = &self.cfg;
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let (out, dout) = (res.contiguous()?, grad_res.contiguous()?);
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (os, ol) = out.storage_and_layout();
        let (gs, gl) = dout.storage_and_layout();
        let inputs = BwdInputs {
            q: cpu_f32(self.name(), &qs, ql)?,
            k: cpu_f32(self.name(), &ks, kl)?,
            v: cpu_f32(self.name(), &vs, vl)?,
            out: cpu_f32(self.name(), &os, ol)?,
            dout: cpu_f32(self.name(), &gs, gl)?,
            lse,
        };
        self.check_len("out", inputs.out.len(), c.b * c.h * c.nq * c.dv)?;
        self.check_len("grad", inputs.dout.len(), c.b * c.h * c.nq * c.dv)?;
        let g = match self.backend {
            Backend::Cpu => flash::backward(c, &inputs),
            #[cfg(feature = "cuda")]
            Backend::Cuda => crate::cuda::backward(c, &inputs)?,
        };
        let dev = Device::Cpu;
        Ok((
            Some(Tensor::from_vec(g.dq, q.shape(), &dev)?),
            Some(Tensor::from_vec(g.dk, k.shape(), &dev)?),
            Some(Tensor::from_vec(g.dv, v.shape(), &dev)?),
        ))
    }
}

/// The fused attention with the given instruction set.
pub(crate) fn attention_with_isa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    isa: Isa,
) -> Result<Tensor> {
    let dims = check_inputs(q, k, v, opts)?;
    let AttnDims { b, h, nq, nk, d } = dims;
    let padding = match &opts.key_padding_mask {
        Some(m) => {
            let flat = m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Some(Padding::new(b, nk, |bi, j| flat[bi * nk + j] != 0.0))
        }
        None => None,
    };
    let segments = match &opts.segment_ids {
        Some(s) => {
            let flat = s.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
            Some(Segments::new(b, nk, &flat))
        }
        None => None,
    };
    let cfg = FlashConfig {
        b,
        h,
        nq,
        nk,
        d,
        dv: v.dim(3)?,
        scale: effective_scale(&dims, opts) as f32,
        causal: opts.causal,
        dropout: opts.dropout,
        seed: opts.seed,
        padding,
        segments,
        isa,
    };
    let backend = pick_backend(&cfg);
    let op = FlashAttention {
        cfg,
        backend,
        lse: OnceLock::new(),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// The CUDA kernels when the `cuda` feature is on, a device is usable and the
/// head dims fit; the CPU kernels otherwise.
fn pick_backend(cfg: &FlashConfig) -> Backend {
    #[cfg(feature = "cuda")]
    if crate::cuda::supports(cfg) && crate::cuda::is_available() {
        return Backend::Cuda;
    }
    let _ = cfg;
    Backend::Cpu
}

/// The fused attention: CUDA when available (feature `cuda`), otherwise the
/// best instruction set of this CPU.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Tensor> {
    attention_with_isa(q, k, v, opts, Isa::best())
}
