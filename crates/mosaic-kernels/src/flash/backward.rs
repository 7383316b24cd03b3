//! The backward pass, for each (batch, head) in parallel: recompute
//! `P = exp(S - lse)` tile by tile and accumulate `dV += Pdᵀ dO`, `dP = dO Vᵀ`,
//! `dS = P ∘ (dP ∘ keep − D)` with `D = rowsum(dO ∘ O)`, `dQ += dS K`,
//! `dK += dSᵀ (scale Q)` (`Pd` is `P` after dropout, `keep` the dropout
//! multiplier).

use rayon::prelude::*;

use super::config::{BLOCK_K, BLOCK_Q, FlashConfig, KeyBlock, SegmentBlock};
use crate::cpu_storage::output_buffer;
use crate::gemm::{MatRef, PanelRef, gemm, pack_transposed, packed_len, panel_width};
use crate::simd::{Simd, SimdFn, dispatch, rows};

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
    /// From [`Forward::lse`](super::Forward::lse).
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
    fn call<S: Simd>(mut self) {
        let cfg = self.cfg;
        let (nq, nk) = (cfg.nq, cfg.nk);
        let bi = self.bh / cfg.h;

        let mut scratch = self.scratch::<S>();
        self.dq.fill(0.0);
        self.dk.fill(0.0);
        self.dv.fill(0.0);

        for j0 in (0..nk).step_by(BLOCK_K) {
            let j1 = (j0 + BLOCK_K).min(nk);
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
                let tile = Tile {
                    i0,
                    i1,
                    j0,
                    j1,
                    bias,
                    segmented: sb == SegmentBlock::Mixed,
                    needs_causal: cfg.causal && (j1 as isize - 1) > cfg.last_key(i0),
                };
                self.tile::<S>(&mut scratch, tile);
            }
        }
        rows::scale::<S>(self.dq, cfg.scale);
        self.add_keyless_rows();
    }
}

/// What the backward of one head computes once and reuses for every tile.
struct HeadScratch {
    /// `scale Q`.
    qs: Vec<f32>,
    /// Packed `Kᵀ`.
    kt: Vec<f32>,
    /// Packed `Vᵀ`.
    vt: Vec<f32>,
    /// `D_i = dO_i · O_i`.
    drow: Vec<f32>,
    /// The tile's `P`.
    p: Vec<f32>,
    /// The tile's `Pd` (empty without dropout).
    pd: Vec<f32>,
    /// The tile's `dP`, then `dS`.
    ds: Vec<f32>,
}

/// Queries `i0..i1` against keys `j0..j1`, and how they must be masked.
#[derive(Clone, Copy)]
struct Tile<'b> {
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
    /// The padding bias of the keys when some of them are padding.
    bias: Option<&'b [f32]>,
    /// Whether segments must be masked entry by entry.
    segmented: bool,
    /// Whether the causal cut crosses the tile.
    needs_causal: bool,
}

impl BwdHead<'_> {
    #[inline(always)]
    fn scratch<S: Simd>(&self) -> HeadScratch {
        let cfg = self.cfg;
        let (nq, nk, d, dv) = (cfg.nq, cfg.nk, cfg.d, cfg.dv);
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

        let p = output_buffer(BLOCK_Q * BLOCK_K);
        let pd = if cfg.dropout > 0.0 {
            output_buffer(BLOCK_Q * BLOCK_K)
        } else {
            Vec::new()
        };
        let ds = output_buffer(BLOCK_Q * BLOCK_K);
        HeadScratch {
            qs,
            kt,
            vt,
            drow,
            p,
            pd,
            ds,
        }
    }

    /// Adds one tile's share to `dq`, `dk` and `dv`.
    #[inline(always)]
    fn tile<S: Simd>(&mut self, s: &mut HeadScratch, t: Tile<'_>) {
        let cfg = self.cfg;
        let (d, dv) = (cfg.d, cfg.dv);
        let bi = self.bh / cfg.h;
        let w = panel_width::<S>();
        let Tile {
            i0,
            i1,
            j0,
            j1,
            bias,
            segmented,
            needs_causal,
        } = t;
        let width = j1 - j0;
        let rows_n = i1 - i0;

        // P = exp(S - lse), masked entries 0.
        gemm::<S>(
            rows_n,
            width,
            d,
            MatRef::rows(&s.qs[i0 * d..], d),
            PanelRef::packed(&s.kt, d, w, j0 / w),
            &mut s.p,
            BLOCK_K,
            false,
        );
        for r in 0..rows_n {
            let i = i0 + r;
            let prow = &mut s.p[r * BLOCK_K..r * BLOCK_K + width];
            let lse = self.lse[i];
            if lse == f32::INFINITY {
                prow.fill(0.0); // no visible key: see `add_keyless_rows`
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
                let src = &s.p[r * BLOCK_K..r * BLOCK_K + width];
                let dst = &mut s.pd[r * BLOCK_K..r * BLOCK_K + width];
                dst.copy_from_slice(src);
                cfg.apply_dropout::<S>(dst, self.bh, i0 + r, j0);
            }
            &s.pd
        } else {
            &s.p
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
            PanelRef::packed(&s.vt, dv, w, j0 / w),
            &mut s.ds,
            BLOCK_K,
            false,
        );
        for r in 0..rows_n {
            let i = i0 + r;
            let dsrow = &mut s.ds[r * BLOCK_K..r * BLOCK_K + width];
            if cfg.dropout > 0.0 {
                cfg.apply_dropout::<S>(dsrow, self.bh, i, j0);
            }
            rows::softmax_bwd::<S>(dsrow, &s.p[r * BLOCK_K..r * BLOCK_K + width], s.drow[i]);
        }
        // dQ_i += dS K_j (scaled at the end); dK_j += dSᵀ (scale Q_i).
        gemm::<S>(
            rows_n,
            d,
            width,
            MatRef::rows(&s.ds, BLOCK_K),
            PanelRef::rows::<S>(&self.k[j0 * d..], d),
            &mut self.dq[i0 * d..],
            d,
            true,
        );
        gemm::<S>(
            width,
            d,
            rows_n,
            MatRef::transposed(&s.ds, BLOCK_K),
            PanelRef::rows::<S>(&s.qs[i0 * d..], d),
            &mut self.dk[j0 * d..],
            d,
            true,
        );
    }

    /// Rows without a visible key averaged every value uniformly: only v
    /// gets a gradient from them.
    #[inline(always)]
    fn add_keyless_rows(&mut self) {
        let cfg = self.cfg;
        let (nq, nk, dv) = (cfg.nq, cfg.nk, cfg.dv);
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
