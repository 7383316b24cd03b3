//! The forward pass, for each (batch, head, block of [`BLOCK_Q`] queries), in
//! parallel: walk the key blocks of [`BLOCK_K`] keys, compute the scores
//! `S = (scale Q) Kᵀ` of the block, keep a running row max `m` and denominator
//! `l` (online softmax), rescale the output accumulator and add `P V`. Only the
//! output and the per-row log-sum-exp `lse = m + ln l` are kept, so memory is
//! O(N) per head. Key blocks that are entirely padding, entirely above the
//! causal diagonal, or whose segments cannot meet the query block's (packed
//! sequences, see [`Segments`](super::Segments)) are skipped.

use rayon::prelude::*;

use super::config::{BLOCK_K, BLOCK_Q, FlashConfig, KeyBlock, SegmentBlock};
use crate::cpu_storage::output_buffer;
use crate::gemm::{MatRef, PanelRef, gemm, pack_transposed, packed_len, panel_width};
use crate::simd::{Simd, SimdFn, dispatch, rows};

/// Outputs of [`forward`].
pub(crate) struct Forward {
    /// `(B, H, Nq, Dv)`.
    pub out: Vec<f32>,
    /// `(B, H, Nq)` log-sum-exp of the scaled, masked scores; `+inf` marks a
    /// row without any visible key.
    pub lse: Vec<f32>,
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
