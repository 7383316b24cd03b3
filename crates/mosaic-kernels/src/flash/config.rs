//! Shapes, options and masks of one attention call, and how a block of
//! queries meets a block of keys (what the kernels may skip or must mask).

use crate::dropout::dropout_keep;
use crate::gemm::panel_width;
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
pub(super) enum SegmentBlock {
    /// No query shares a segment with any key: skip the tile.
    Disjoint,
    /// Every query and key is in one and the same segment: nothing to mask.
    Same,
    /// Anything else: mask entry by entry.
    Mixed,
}

/// How much of a key block a batch element may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyBlock {
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
    pub(super) fn last_key(&self, i: usize) -> isize {
        i as isize + self.nk as isize - self.nq as isize
    }

    /// Keys `0..key_end(i1)` can be visible to queries below `i1`.
    #[inline]
    pub(super) fn key_end(&self, i1: usize) -> usize {
        if self.causal {
            (self.last_key(i1 - 1) + 1).clamp(0, self.nk as isize) as usize
        } else {
            self.nk
        }
    }

    /// Whether query `i` of batch element `bi` sees at least one key.
    pub(super) fn row_live(&self, bi: usize, i: usize) -> bool {
        let first = match &self.padding {
            Some(p) => match p.first[bi] {
                Some(f) => f,
                None => return false,
            },
            None => 0,
        };
        !self.causal || first as isize <= self.last_key(i)
    }

    pub(super) fn key_block(&self, bi: usize, j0: usize, j1: usize) -> KeyBlock {
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
    pub(super) fn segment_block(
        &self,
        bi: usize,
        i0: usize,
        i1: usize,
        j0: usize,
        j1: usize,
    ) -> SegmentBlock {
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

    pub(super) fn bias(&self, bi: usize, j0: usize, j1: usize) -> Option<&[f32]> {
        self.padding
            .as_ref()
            .map(|p| &p.bias[bi * self.nk + j0..bi * self.nk + j1])
    }

    /// Masks the scores `s` (keys `j0..`) of query `i` of batch element `bi`:
    /// padding bias, other segments (when `segmented`) and the causal cut.
    #[inline]
    pub(super) fn mask_row<S: Simd>(
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
    pub(super) fn apply_dropout<S: Simd>(&self, p: &mut [f32], bh: usize, i: usize, j0: usize) {
        let keep_scale = 1.0 / (1.0 - self.dropout);
        let base = ((bh * self.nq + i) * self.nk + j0) as u64;
        // SAFETY: called from kernels dispatched for `S`.
        unsafe { S::dropout(p, self.seed, base, self.dropout, keep_scale) }
    }

    /// The dropout multiplier of element `(i, j)` of head `bh` (1 without dropout).
    #[inline]
    pub(super) fn drop_scale(&self, bh: usize, i: usize, j: usize) -> f32 {
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

    pub(super) fn panel_width(&self) -> usize {
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
