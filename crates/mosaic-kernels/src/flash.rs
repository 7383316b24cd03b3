//! Flash-style fused attention on the CPU (forward and backward).
//!
//! Forward, for each (batch, head, block of [`BLOCK_Q`] queries), in parallel:
//! walk the key blocks of [`BLOCK_K`] keys, compute the scores `S = (scale Q) Kᵀ`
//! of the block, keep a running row max `m` and denominator `l` (online
//! softmax), rescale the output accumulator and add `P V`. Only the output and
//! the per-row log-sum-exp `lse = m + ln l` are kept, so memory is O(N) per
//! head. Key blocks that are entirely padding, entirely above the causal
//! diagonal, or whose segments cannot meet the query block's (packed
//! sequences, see [`Segments`]) are skipped.
//!
//! Backward, for each (batch, head) in parallel: recompute `P = exp(S - lse)`
//! block by block and accumulate
//! `dV += Pdᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP ∘ keep − D)` with
//! `D = rowsum(dO ∘ O)`, `dQ += dS K`, `dK += dSᵀ (scale Q)` (`Pd` is `P` after
//! dropout, `keep` the dropout multiplier).
//!
//! Semantics match [`reference::attention`](crate::reference::attention)
//! exactly: masked scores get probability 0, a row with no visible key at all
//! averages every value uniformly (what the finite [`MASK_VALUE`](crate::MASK_VALUE)
//! gives) and passes no gradient to `q`/`k`, and dropout uses the counter-based
//! keep decision of [`dropout_mask`](crate::dropout_mask) on the flat
//! `(B, H, Nq, Nk)` index.
//!
//! All products go through [`gemm`](crate::gemm) micro-kernels compiled for the
//! best instruction set at hand ([`Isa`]). Work is split by shape only, never
//! by thread count, so results are deterministic.

use rayon::prelude::*;

use crate::attention::dropout_keep;
use crate::gemm::{MatRef, PanelRef, gemm, pack_transposed, packed_len, panel_width};
use crate::simd::{Isa, Simd, SimdFn, dispatch, rows};

/// Queries per block (a multiple of the 6-row micro-tile).
pub(crate) const BLOCK_Q: usize = 48;
/// Keys per block (a multiple of every ISA's panel width).
pub(crate) const BLOCK_K: usize = 128;

/// Shapes and options of one attention call.
#[derive(Debug, Clone)]
pub(crate) struct FlashConfig {
    pub b: usize,
    pub h: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
    pub causal: bool,
    pub dropout: f32,
    pub seed: u64,
    pub padding: Option<Padding>,
    /// Segment ids (self-attention only, `nq == nk`).
    pub segments: Option<Segments>,
    pub isa: Isa,
}

/// Key padding of each batch element, in the forms the kernels need.
#[derive(Debug, Clone)]
pub(crate) struct Padding {
    /// `(B, Nk)`: 0 for a visible key, `-inf` for padding (added to scores).
    bias: Vec<f32>,
    /// `(B, Nk + 1)`: number of visible keys before each position.
    prefix: Vec<u32>,
    /// Per batch element: the first visible key.
    first: Vec<Option<usize>>,
}

impl Padding {
    /// From a `(B, Nk)` row-major mask, `true` = attend.
    pub(crate) fn new(b: usize, nk: usize, attend: impl Fn(usize, usize) -> bool) -> Self {
        let mut bias = vec![0f32; b * nk];
        let mut prefix = vec![0u32; b * (nk + 1)];
        let mut first = vec![None; b];
        for bi in 0..b {
            for j in 0..nk {
                let visible = attend(bi, j);
                if !visible {
                    bias[bi * nk + j] = f32::NEG_INFINITY;
                } else if first[bi].is_none() {
                    first[bi] = Some(j);
                }
                prefix[bi * (nk + 1) + j + 1] = prefix[bi * (nk + 1) + j] + u32::from(visible);
            }
        }
        Self {
            bias,
            prefix,
            first,
        }
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Padding {
    /// `(B, Nk)`: 0 for a visible key, `-inf` for padding.
    pub(crate) fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// The first visible key of batch element `bi`.
    pub(crate) fn first_visible(&self, bi: usize) -> Option<usize> {
        self.first[bi]
    }
}

/// Segment ids of packed sequences: query `i` sees key `j` only when both
/// carry the same id.
#[derive(Debug, Clone)]
pub(crate) struct Segments {
    /// `(B, N)`: the ids relabelled per batch element in order of first
    /// appearance (0, 1, 2, ...), which keeps equality and makes contiguous
    /// runs ascend, so a block's id range bounds which blocks can meet.
    ids: Vec<u32>,
    n: usize,
}

impl Segments {
    /// From `(B, N)` row-major raw ids.
    pub(crate) fn new(b: usize, n: usize, raw: &[i64]) -> Self {
        let mut ids = vec![0u32; b * n];
        for bi in 0..b {
            let mut seen: std::collections::HashMap<i64, u32> = std::collections::HashMap::new();
            for j in 0..n {
                let next = seen.len() as u32;
                ids[bi * n + j] = *seen.entry(raw[bi * n + j]).or_insert(next);
            }
        }
        Self { ids, n }
    }

    /// The ids of batch element `bi`.
    #[inline]
    pub(crate) fn row(&self, bi: usize) -> &[u32] {
        &self.ids[bi * self.n..(bi + 1) * self.n]
    }

    /// The smallest and largest id of positions `r0..r1` of batch element `bi`.
    fn range(&self, bi: usize, r0: usize, r1: usize) -> (u32, u32) {
        self.row(bi)[r0..r1]
            .iter()
            .fold((u32::MAX, 0), |(lo, hi), &s| (lo.min(s), hi.max(s)))
    }
}

/// How the segments of a query block meet those of a key block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegmentBlock {
    /// No query shares a segment with any key: skip the tile.
    Disjoint,
    /// Every query and key is in one and the same segment: nothing to mask.
    Same,
    /// Anything else: mask entry by entry.
    Mixed,
}

/// How much of a key block a batch element may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyBlock {
    /// Every key is padding: skip the block.
    Empty,
    /// No key is padding.
    Full,
    /// Some keys are padding: add the bias.
    Partial,
}

impl FlashConfig {
    /// Last key query `i` may see under the causal mask (may be negative).
    #[inline]
    fn last_key(&self, i: usize) -> isize {
        i as isize + self.nk as isize - self.nq as isize
    }

    /// Keys `0..key_end(i1)` can be visible to queries below `i1`.
    #[inline]
    fn key_end(&self, i1: usize) -> usize {
        if self.causal {
            (self.last_key(i1 - 1) + 1).clamp(0, self.nk as isize) as usize
        } else {
            self.nk
        }
    }

    /// Whether query `i` of batch element `bi` sees at least one key.
    fn row_live(&self, bi: usize, i: usize) -> bool {
        let first = match &self.padding {
            Some(p) => match p.first[bi] {
                Some(f) => f,
                None => return false,
            },
            None => 0,
        };
        !self.causal || first as isize <= self.last_key(i)
    }

    fn key_block(&self, bi: usize, j0: usize, j1: usize) -> KeyBlock {
        match &self.padding {
            None => KeyBlock::Full,
            Some(p) => {
                let base = bi * (self.nk + 1);
                let visible = (p.prefix[base + j1] - p.prefix[base + j0]) as usize;
                if visible == 0 {
                    KeyBlock::Empty
                } else if visible == j1 - j0 {
                    KeyBlock::Full
                } else {
                    KeyBlock::Partial
                }
            }
        }
    }

    /// How queries `i0..i1` meet keys `j0..j1` of batch element `bi` by segment.
    fn segment_block(&self, bi: usize, i0: usize, i1: usize, j0: usize, j1: usize) -> SegmentBlock {
        let Some(seg) = &self.segments else {
            return SegmentBlock::Same;
        };
        let (qlo, qhi) = seg.range(bi, i0, i1);
        let (klo, khi) = seg.range(bi, j0, j1);
        if khi < qlo || klo > qhi {
            SegmentBlock::Disjoint
        } else if qlo == qhi && klo == khi && qlo == klo {
            SegmentBlock::Same
        } else {
            SegmentBlock::Mixed
        }
    }

    fn bias(&self, bi: usize, j0: usize, j1: usize) -> Option<&[f32]> {
        self.padding
            .as_ref()
            .map(|p| &p.bias[bi * self.nk + j0..bi * self.nk + j1])
    }

    /// Masks the scores `s` (keys `j0..`) of query `i` of batch element `bi`:
    /// padding bias, other segments (when `segmented`) and the causal cut.
    #[inline]
    fn mask_row<S: Simd>(
        &self,
        s: &mut [f32],
        bias: Option<&[f32]>,
        segmented: bool,
        (bi, i): (usize, usize),
        j0: usize,
    ) {
        if let Some(bias) = bias {
            rows::add_assign::<S>(s, bias);
        }
        if segmented && let Some(seg) = &self.segments {
            let ids = seg.row(bi);
            let own = ids[i];
            for (x, &other) in s.iter_mut().zip(&ids[j0..]) {
                if other != own {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        if self.causal {
            let cut = (self.last_key(i) + 1 - j0 as isize).clamp(0, s.len() as isize) as usize;
            s[cut..].fill(f32::NEG_INFINITY);
        }
    }

    /// Multiplies `p` (keys `j0..`, query `i` of head `bh`) by the dropout
    /// multiplier.
    #[inline(always)]
    fn apply_dropout<S: Simd>(&self, p: &mut [f32], bh: usize, i: usize, j0: usize) {
        let keep_scale = 1.0 / (1.0 - self.dropout);
        let base = ((bh * self.nq + i) * self.nk + j0) as u64;
        // SAFETY: called from kernels dispatched for `S`.
        unsafe { S::dropout(p, self.seed, base, self.dropout, keep_scale) }
    }

    /// The dropout multiplier of element `(i, j)` of head `bh` (1 without dropout).
    #[inline]
    fn drop_scale(&self, bh: usize, i: usize, j: usize) -> f32 {
        if self.dropout == 0.0 {
            1.0
        } else if dropout_keep(
            self.seed,
            ((bh * self.nq + i) * self.nk + j) as u64,
            self.dropout,
        ) {
            1.0 / (1.0 - self.dropout)
        } else {
            0.0
        }
    }

    fn panel_width(&self) -> usize {
        struct Width;
        impl SimdFn for Width {
            type Output = usize;
            #[inline(always)]
            fn call<S: Simd>(self) -> usize {
                panel_width::<S>()
            }
        }
        dispatch(self.isa, Width)
    }
}

/// Outputs of [`forward`].
pub(crate) struct Forward {
    /// `(B, H, Nq, Dv)`.
    pub out: Vec<f32>,
    /// `(B, H, Nq)` log-sum-exp of the scaled, masked scores; `+inf` marks a
    /// row without any visible key.
    pub lse: Vec<f32>,
}

/// A buffer (output or scratch) the kernels must write before reading: NaN
/// in debug builds, so the tests catch any element a kernel forgets.
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    if cfg!(debug_assertions) {
        vec![f32::NAN; len]
    } else {
        vec![0.0; len]
    }
}

/// Forward pass over contiguous `q (B,H,Nq,D)`, `k (B,H,Nk,D)`, `v (B,H,Nk,Dv)`.
pub(crate) fn forward(cfg: &FlashConfig, q: &[f32], k: &[f32], v: &[f32]) -> Forward {
    let FlashConfig {
        b,
        h,
        nq,
        nk,
        d,
        dv,
        ..
    } = *cfg;
    let mut out = output_buffer(b * h * nq * dv);
    let mut lse = output_buffer(b * h * nq);
    if b * h * nq == 0 {
        return Forward { out, lse };
    }
    if dv == 0 {
        // Empty values: an empty output, and a backward that is all zeros.
        lse.fill(0.0);
        return Forward { out, lse };
    }
    let w = cfg.panel_width();
    out.par_chunks_mut(nq * dv)
        .zip(lse.par_chunks_mut(nq))
        .enumerate()
        .for_each(|(bh, (o_head, lse_head))| {
            // Kᵀ of this head, packed once into B panels for all its query
            // blocks (per head, so peak memory stays at the output plus one
            // packed head per busy thread).
            let mut kt = output_buffer(packed_len(nk, d, w));
            pack_transposed(&k[bh * nk * d..(bh + 1) * nk * d], nk, d, d, w, &mut kt);
            o_head
                .par_chunks_mut(BLOCK_Q * dv)
                .zip(lse_head.par_chunks_mut(BLOCK_Q))
                .enumerate()
                .for_each(|(blk, (o_blk, lse_blk))| {
                    let task = FwdBlock {
                        cfg,
                        bh,
                        i0: blk * BLOCK_Q,
                        q: &q[bh * nq * d..(bh + 1) * nq * d],
                        kt: &kt,
                        v: &v[bh * nk * dv..(bh + 1) * nk * dv],
                        out: o_blk,
                        lse: lse_blk,
                    };
                    dispatch(cfg.isa, task);
                });
        });
    Forward { out, lse }
}

/// One block of queries of one head.
struct FwdBlock<'a> {
    cfg: &'a FlashConfig,
    bh: usize,
    i0: usize,
    /// This head's queries, `(Nq, D)`.
    q: &'a [f32],
    /// This head's packed `Kᵀ`.
    kt: &'a [f32],
    /// This head's values, `(Nk, Dv)`.
    v: &'a [f32],
    /// Output rows of the block, `(rows, Dv)`.
    out: &'a mut [f32],
    /// Log-sum-exp of the block's rows.
    lse: &'a mut [f32],
}

impl SimdFn for FwdBlock<'_> {
    type Output = ();

    #[inline(always)]
    fn call<S: Simd>(self) {
        let cfg = self.cfg;
        let (d, dv, nk) = (cfg.d, cfg.dv, cfg.nk);
        let bi = self.bh / cfg.h;
        let rows_n = self.lse.len();
        let (i0, i1) = (self.i0, self.i0 + rows_n);
        let w = panel_width::<S>();

        let mut qs: Vec<f32> = self.q[i0 * d..i1 * d].to_vec();
        rows::scale::<S>(&mut qs, cfg.scale);
        let mut s = output_buffer(rows_n * BLOCK_K);
        let mut m = vec![f32::NEG_INFINITY; rows_n];
        let mut l = vec![0f32; rows_n];
        self.out.fill(0.0);

        let key_end = cfg.key_end(i1);
        for j0 in (0..key_end).step_by(BLOCK_K) {
            let j1 = (j0 + BLOCK_K).min(key_end);
            let width = j1 - j0;
            let kb = cfg.key_block(bi, j0, j1);
            if kb == KeyBlock::Empty {
                continue;
            }
            let sb = cfg.segment_block(bi, i0, i1, j0, j1);
            if sb == SegmentBlock::Disjoint {
                continue;
            }
            let segmented = sb == SegmentBlock::Mixed;
            let bias = if kb == KeyBlock::Partial {
                cfg.bias(bi, j0, j1)
            } else {
                None
            };
            gemm::<S>(
                rows_n,
                width,
                d,
                MatRef::rows(&qs, d),
                PanelRef::packed(self.kt, d, w, j0 / w),
                &mut s,
                BLOCK_K,
                false,
            );
            let needs_causal = cfg.causal && (j1 as isize - 1) > cfg.last_key(i0);
            for r in 0..rows_n {
                let i = i0 + r;
                let srow = &mut s[r * BLOCK_K..r * BLOCK_K + width];
                if bias.is_some() || needs_causal || segmented {
                    cfg.mask_row::<S>(srow, bias, segmented, (bi, i), j0);
                }
                let m_new = m[r].max(rows::max::<S>(srow));
                if m_new == f32::NEG_INFINITY {
                    // Nothing visible yet: this row adds nothing.
                    srow.fill(0.0);
                    continue;
                }
                let alpha = (m[r] - m_new).exp();
                let sum = rows::exp_shift_sum::<S>(srow, m_new);
                l[r] = l[r] * alpha + sum;
                m[r] = m_new;
                if alpha != 1.0 && dv > 0 {
                    rows::scale::<S>(&mut self.out[r * dv..(r + 1) * dv], alpha);
                }
                if cfg.dropout > 0.0 {
                    cfg.apply_dropout::<S>(srow, self.bh, i, j0);
                }
            }
            gemm::<S>(
                rows_n,
                dv,
                width,
                MatRef::rows(&s, BLOCK_K),
                PanelRef::rows::<S>(&self.v[j0 * dv..], dv),
                self.out,
                dv,
                true,
            );
        }

        for r in 0..rows_n {
            let i = i0 + r;
            let o = &mut self.out[r * dv..(r + 1) * dv];
            if cfg.row_live(bi, i) && l[r] > 0.0 {
                rows::scale::<S>(o, 1.0 / l[r]);
                self.lse[r] = m[r] + l[r].ln();
            } else {
                // No visible key: the uniform average of every value, as the
                // finite MASK_VALUE gives in the composed version.
                o.fill(0.0);
                let inv_n = 1.0 / nk as f32;
                for j in 0..nk {
                    let wgt = cfg.drop_scale(self.bh, i, j) * inv_n;
                    for (oe, &ve) in o.iter_mut().zip(&self.v[j * dv..(j + 1) * dv]) {
                        *oe += wgt * ve;
                    }
                }
                self.lse[r] = f32::INFINITY;
            }
        }
    }
}

/// Gradients computed by [`backward`].
pub(crate) struct Grads {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
}

/// Inputs of [`backward`], all contiguous.
pub(crate) struct BwdInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Forward output `(B, H, Nq, Dv)`.
    pub out: &'a [f32],
    /// Gradient of the output.
    pub dout: &'a [f32],
    /// From [`Forward::lse`].
    pub lse: &'a [f32],
}

/// Backward pass: gradients of `q`, `k` and `v`.
pub(crate) fn backward(cfg: &FlashConfig, x: &BwdInputs<'_>) -> Grads {
    let FlashConfig {
        b,
        h,
        nq,
        nk,
        d,
        dv,
        ..
    } = *cfg;
    let mut g = Grads {
        dq: output_buffer(b * h * nq * d),
        dk: output_buffer(b * h * nk * d),
        dv: output_buffer(b * h * nk * dv),
    };
    if b * h == 0 {
        return g;
    }
    if nq == 0 || dv == 0 {
        // No output elements: every gradient is zero.
        g.dq.fill(0.0);
        g.dk.fill(0.0);
        g.dv.fill(0.0);
        return g;
    }
    g.dq.par_chunks_mut(nq * d)
        .zip(g.dk.par_chunks_mut(nk * d))
        .zip(g.dv.par_chunks_mut(nk * dv))
        .enumerate()
        .for_each(|(bh, ((dq, dk), dvv))| {
            let task = BwdHead {
                cfg,
                bh,
                q: &x.q[bh * nq * d..(bh + 1) * nq * d],
                k: &x.k[bh * nk * d..(bh + 1) * nk * d],
                v: &x.v[bh * nk * dv..(bh + 1) * nk * dv],
                out: &x.out[bh * nq * dv..(bh + 1) * nq * dv],
                dout: &x.dout[bh * nq * dv..(bh + 1) * nq * dv],
                lse: &x.lse[bh * nq..(bh + 1) * nq],
                dq,
                dk,
                dv: dvv,
            };
            dispatch(cfg.isa, task);
        });
    g
}

/// The backward pass of one head.
struct BwdHead<'a> {
    cfg: &'a FlashConfig,
    bh: usize,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

impl SimdFn for BwdHead<'_> {
    type Output = ();

    #[inline(always)]
    fn call<S: Simd>(self) {
        let cfg = self.cfg;
        let (nq, nk, d, dv) = (cfg.nq, cfg.nk, cfg.d, cfg.dv);
        let bi = self.bh / cfg.h;
        let w = panel_width::<S>();

        let mut qs = self.q.to_vec();
        rows::scale::<S>(&mut qs, cfg.scale);
        let mut kt = output_buffer(packed_len(nk, d, w));
        pack_transposed(self.k, nk, d, d, w, &mut kt);
        let mut vt = output_buffer(packed_len(nk, dv, w));
        pack_transposed(self.v, nk, dv, dv, w, &mut vt);
        // D_i = dO_i · O_i (a plain loop: a closure would not inherit the
        // target features this function is compiled with).
        let mut drow = vec![0f32; nq];
        for (i, di) in drow.iter_mut().enumerate() {
            *di = rows::dot::<S>(
                &self.dout[i * dv..(i + 1) * dv],
                &self.out[i * dv..(i + 1) * dv],
            );
        }

        let mut p = output_buffer(BLOCK_Q * BLOCK_K);
        let mut pd = if cfg.dropout > 0.0 {
            output_buffer(BLOCK_Q * BLOCK_K)
        } else {
            Vec::new()
        };
        let mut ds = output_buffer(BLOCK_Q * BLOCK_K);
        self.dq.fill(0.0);
        self.dk.fill(0.0);
        self.dv.fill(0.0);

        for j0 in (0..nk).step_by(BLOCK_K) {
            let j1 = (j0 + BLOCK_K).min(nk);
            let width = j1 - j0;
            let kb = cfg.key_block(bi, j0, j1);
            if kb == KeyBlock::Empty {
                continue;
            }
            let bias = if kb == KeyBlock::Partial {
                cfg.bias(bi, j0, j1)
            } else {
                None
            };
            for i0 in (0..nq).step_by(BLOCK_Q) {
                let i1 = (i0 + BLOCK_Q).min(nq);
                if cfg.causal && j0 as isize > cfg.last_key(i1 - 1) {
                    continue; // the whole tile is above the diagonal
                }
                let sb = cfg.segment_block(bi, i0, i1, j0, j1);
                if sb == SegmentBlock::Disjoint {
                    continue; // no query of the tile shares a segment with its keys
                }
                let segmented = sb == SegmentBlock::Mixed;
                let rows_n = i1 - i0;
                let needs_causal = cfg.causal && (j1 as isize - 1) > cfg.last_key(i0);

                // P = exp(S - lse), masked entries 0.
                gemm::<S>(
                    rows_n,
                    width,
                    d,
                    MatRef::rows(&qs[i0 * d..], d),
                    PanelRef::packed(&kt, d, w, j0 / w),
                    &mut p,
                    BLOCK_K,
                    false,
                );
                for r in 0..rows_n {
                    let i = i0 + r;
                    let prow = &mut p[r * BLOCK_K..r * BLOCK_K + width];
                    let lse = self.lse[i];
                    if lse == f32::INFINITY {
                        prow.fill(0.0); // no visible key: handled below
                        continue;
                    }
                    if bias.is_some() || needs_causal || segmented {
                        cfg.mask_row::<S>(prow, bias, segmented, (bi, i), j0);
                    }
                    rows::exp_shift_sum::<S>(prow, lse);
                }
                // Pd = P ∘ keep (dropout), used for dV.
                let pdrop: &[f32] = if cfg.dropout > 0.0 {
                    for r in 0..rows_n {
                        let src = &p[r * BLOCK_K..r * BLOCK_K + width];
                        let dst = &mut pd[r * BLOCK_K..r * BLOCK_K + width];
                        dst.copy_from_slice(src);
                        cfg.apply_dropout::<S>(dst, self.bh, i0 + r, j0);
                    }
                    &pd
                } else {
                    &p
                };
                // dV_j += Pdᵀ dO_i
                gemm::<S>(
                    width,
                    dv,
                    rows_n,
                    MatRef::transposed(pdrop, BLOCK_K),
                    PanelRef::rows::<S>(&self.dout[i0 * dv..], dv),
                    &mut self.dv[j0 * dv..],
                    dv,
                    true,
                );
                // dP = dO_i Vᵀ_j, then dS = P ∘ (dP ∘ keep − D).
                gemm::<S>(
                    rows_n,
                    width,
                    dv,
                    MatRef::rows(&self.dout[i0 * dv..], dv),
                    PanelRef::packed(&vt, dv, w, j0 / w),
                    &mut ds,
                    BLOCK_K,
                    false,
                );
                for r in 0..rows_n {
                    let i = i0 + r;
                    let dsrow = &mut ds[r * BLOCK_K..r * BLOCK_K + width];
                    if cfg.dropout > 0.0 {
                        cfg.apply_dropout::<S>(dsrow, self.bh, i, j0);
                    }
                    rows::softmax_bwd::<S>(dsrow, &p[r * BLOCK_K..r * BLOCK_K + width], drow[i]);
                }
                // dQ_i += dS K_j (scaled at the end); dK_j += dSᵀ (scale Q_i).
                gemm::<S>(
                    rows_n,
                    d,
                    width,
                    MatRef::rows(&ds, BLOCK_K),
                    PanelRef::rows::<S>(&self.k[j0 * d..], d),
                    &mut self.dq[i0 * d..],
                    d,
                    true,
                );
                gemm::<S>(
                    width,
                    d,
                    rows_n,
                    MatRef::transposed(&ds, BLOCK_K),
                    PanelRef::rows::<S>(&qs[i0 * d..], d),
                    &mut self.dk[j0 * d..],
                    d,
                    true,
                );
            }
        }
        rows::scale::<S>(self.dq, cfg.scale);

        // Rows without a visible key averaged every value uniformly: only v
        // gets a gradient from them.
        let inv_n = 1.0 / nk as f32;
        for i in 0..nq {
            if self.lse[i] != f32::INFINITY {
                continue;
            }
            let g = &self.dout[i * dv..(i + 1) * dv];
            for j in 0..nk {
                let wgt = cfg.drop_scale(self.bh, i, j) * inv_n;
                for (o, &ge) in self.dv[j * dv..(j + 1) * dv].iter_mut().zip(g) {
                    *o += wgt * ge;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut st = seed;
        (0..n)
            .map(|_| {
                st = st
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((st >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                assert!(x.is_finite() && y.is_finite(), "non-finite value");
                (x - y).abs()
            })
            .fold(0.0, f32::max)
    }

    /// Every instruction set gives the same answer (up to rounding) on shapes
    /// spanning several query and key blocks, with partial tiles, padding,
    /// causal masking (including rows with no visible key), segments and
    /// dropout.
    #[test]
    fn every_isa_agrees() {
        let isas = Isa::supported();
        for &(b, h, nq, nk, d, dv, causal, dropout) in &[
            (1, 2, 100, 300, 20, 9, true, 0.0),
            (2, 1, 130, 70, 64, 64, true, 0.2),
            (1, 1, 49, 513, 3, 17, false, 0.1),
            (2, 1, 260, 260, 16, 8, true, 0.1),
        ] {
            // Self-attention shapes also get contiguous segments, long at the start
            // and single tokens at the end.
            let segments = (nq == nk).then(|| {
                let raw: Vec<i64> = (0..b * nk)
                    .map(|x| (((x % nk) as i64 + 13 * (x / nk) as i64).pow(2) / 150) % 1000)
                    .collect();
                Segments::new(b, nk, &raw)
            });
            let padding =
                Padding::new(b, nk, |bi, j| (j * 7 + bi) % 5 != 0 && !(bi == 1 && j < 40));
            let mut cfg = FlashConfig {
                b,
                h,
                nq,
                nk,
                d,
                dv,
                scale: 0.3,
                causal,
                dropout,
                seed: 11,
                padding: Some(padding),
                segments,
                isa: isas[0],
            };
            let q = data(b * h * nq * d, 1);
            let k = data(b * h * nk * d, 2);
            let v = data(b * h * nk * dv, 3);
            let dout = data(b * h * nq * dv, 4);
            let run = |cfg: &FlashConfig| {
                let f = forward(cfg, &q, &k, &v);
                let g = backward(
                    cfg,
                    &BwdInputs {
                        q: &q,
                        k: &k,
                        v: &v,
                        out: &f.out,
                        dout: &dout,
                        lse: &f.lse,
                    },
                );
                (f, g)
            };
            let (f0, g0) = run(&cfg);
            for &isa in &isas[1..] {
                cfg.isa = isa;
                let (f, g) = run(&cfg);
                let what = isa.name();
                assert!(max_diff(&f.out, &f0.out) < 1e-5, "{what}: out");
                assert!(max_diff(&g.dq, &g0.dq) < 1e-4, "{what}: dq");
                assert!(max_diff(&g.dk, &g0.dk) < 1e-4, "{what}: dk");
                assert!(max_diff(&g.dv, &g0.dv) < 1e-4, "{what}: dv");
                let live: Vec<(f32, f32)> = f
                    .lse
                    .iter()
                    .zip(&f0.lse)
                    .filter(|(a, _)| a.is_finite())
                    .map(|(&a, &b)| (a, b))
                    .collect();
                assert!(
                    live.iter().all(|(a, b)| (a - b).abs() < 1e-5),
                    "{what}: lse"
                );
            }
        }
    }
}
