//! Small-matrix GEMM for the fused kernels: `C (m×n) = [C +] A (m×k) · B (k×n)`
//! with register-blocked micro-tiles of `S::MR` rows × `S::NV` vectors.
//!
//! Attention blocks are small (tens to hundreds of rows, k = head dim or a key
//! block), so there is no packing of `A` and no cache blocking: `A` may have
//! any strides (which gives transposed products like `Pᵀ · dO` for free) and
//! `B` is read as column panels of the micro-tile width, either in place from
//! a row-major matrix with a small leading dimension or from a buffer packed by
//! [`pack_transposed`] (contiguous panels, so the panel a tile streams stays
//! in L1 instead of thrashing one cache set with a power-of-two stride).

use crate::simd::{Simd, SimdFn};

/// A read-only strided matrix: element `(i, p)` is `data[i * rs + p * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with leading dimension `ld`.
    pub(crate) fn rows(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub(crate) fn transposed(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: ld,
        }
    }
}

/// The `B` operand as column panels of width [`panel_width`]: column `j` of
/// row `p` is `data[(j / w) * panel_stride + p * ld + j % w]`.
#[derive(Clone, Copy)]
pub(crate) struct PanelRef<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub panel_stride: usize,
}

impl<'a> PanelRef<'a> {
    /// A row-major matrix with leading dimension `ld` read in place.
    pub(crate) fn rows<S: Simd>(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            ld,
            panel_stride: panel_width::<S>(),
        }
    }
}

/// Columns of one micro-tile (and of one `B` panel).
#[inline(always)]
pub(crate) fn panel_width<S: Simd>() -> usize {
    S::LANES * S::NV
}

/// Length of the buffer [`pack_transposed`] fills for an `n × k` source.
pub(crate) fn packed_len(n: usize, k: usize, w: usize) -> usize {
    n.div_ceil(w) * k * w
}

/// Packs `srcᵀ` for use as `B` by a kernel whose [`panel_width`] is `w`,
/// where `src` is an `n × k` row-major matrix (leading dimension `ld`): `dst`
/// (of [`packed_len`]) receives `ceil(n / w)` panels of `k × w`, zero-padded
/// past column `n`.
pub(crate) fn pack_transposed(
    src: &[f32],
    n: usize,
    k: usize,
    ld: usize,
    w: usize,
    dst: &mut [f32],
) {
    debug_assert_eq!(dst.len(), packed_len(n, k, w));
    if k == 0 {
        return;
    }
    for (jp, panel) in dst.chunks_exact_mut(k * w).enumerate() {
        let cols = w.min(n - jp * w);
        for c in 0..cols {
            let row = &src[(jp * w + c) * ld..(jp * w + c) * ld + k];
            for (p, &x) in row.iter().enumerate() {
                panel[p * w + c] = x;
            }
        }
        if cols < w {
            for p in 0..k {
                panel[p * w + cols..(p + 1) * w].fill(0.0);
            }
        }
    }
}

impl<'a> PanelRef<'a> {
    /// Panels written by [`pack_transposed`] with inner dimension `k`,
    /// starting at panel `first_panel`.
    pub(crate) fn packed(data: &'a [f32], k: usize, w: usize, first_panel: usize) -> Self {
        Self {
            data: &data[first_panel * k * w..],
            ld: w,
            panel_stride: k * w,
        }
    }
}

/// `C = A · B` (or `C += A · B` when `accumulate`), `C` row-major with leading
/// dimension `ldc`. Only the `m × n` window of `C` is written.
///
/// Calls the one out-of-line copy compiled for `S` (see
/// [`Simd::call_out_of_line`]), so the many call sites do not each inline
/// every micro-kernel.
///
/// # Panics
/// When an operand is too short for the shapes (an internal bug, never user
/// input: the callers size every buffer from validated dimensions).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<S: Simd>(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: PanelRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let call = GemmCall {
        m,
        n,
        k,
        a,
        b,
        c,
        ldc,
        accumulate,
    };
    // SAFETY: `S` was selected by `simd::dispatch`, which checked its features.
    unsafe { S::call_out_of_line(call) }
}

/// Arguments of one [`gemm`].
struct GemmCall<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'a>,
    b: PanelRef<'a>,
    c: &'a mut [f32],
    ldc: usize,
    accumulate: bool,
}

impl SimdFn for GemmCall<'_> {
    type Output = ();

    #[inline(always)]
    fn call<S: Simd>(self) {
        gemm_body::<S>(self)
    }
}

/// The body of [`gemm`], instantiated once per instruction set by
/// [`Simd::call_out_of_line`] inside a function compiled for it.
#[inline(always)]
fn gemm_body<S: Simd>(call: GemmCall<'_>) {
    let GemmCall {
        m,
        n,
        k,
        a,
        b,
        c,
        ldc,
        accumulate,
    } = call;
    if m == 0 || n == 0 {
        return;
    }
    let w = panel_width::<S>();
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let panels = n.div_ceil(w);
    let last_w = n - (panels - 1) * w;
    assert!(
        (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(),
        "gemm: A too short"
    );
    assert!(
        (panels - 1) * b.panel_stride + (k - 1) * b.ld + last_w <= b.data.len(),
        "gemm: B too short"
    );
    assert!((m - 1) * ldc + n <= c.len(), "gemm: C too short");

    for jp in 0..panels {
        let cols = w.min(n - jp * w);
        let nv = cols.div_ceil(S::LANES);
        let rem = cols % S::LANES;
        let bp = b.data[jp * b.panel_stride..].as_ptr();
        let mut i = 0;
        while i < m {
            let mr = S::MR.min(m - i);
            let t = Tile {
                k,
                a: a.data[i * a.rs..].as_ptr(),
                a_rs: a.rs,
                a_cs: a.cs,
                b: bp,
                ldb: b.ld,
                c: c[i * ldc + jp * w..].as_mut_ptr(),
                ldc,
                rem,
                accumulate,
            };
            // SAFETY: the asserts above bound every element the tile touches:
            // rows i..i+mr of A and C, columns jp*w..jp*w+cols of B and C.
            unsafe { t.run::<S>(mr, nv) };
            i += mr;
        }
    }
}

/// One micro-tile invocation.
struct Tile {
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    /// Valid lanes of the last vector, 0 when it is full.
    rem: usize,
    accumulate: bool,
}

impl Tile {
    /// Dispatches on the (run-time) tile shape to a const-shaped kernel.
    #[inline(always)]
    unsafe fn run<S: Simd>(&self, mr: usize, nv: usize) {
        macro_rules! by_nv {
            ($mr:literal) => {
                match (nv, self.rem != 0) {
                    (1, false) => self.micro::<S, $mr, 1, false>(),
                    (1, true) => self.micro::<S, $mr, 1, true>(),
                    (2, false) => self.micro::<S, $mr, 2, false>(),
                    (2, true) => self.micro::<S, $mr, 2, true>(),
                    (3, false) if S::NV >= 3 => self.micro::<S, $mr, 3, false>(),
                    (3, true) if S::NV >= 3 => self.micro::<S, $mr, 3, true>(),
                    (4, false) if S::NV >= 4 => self.micro::<S, $mr, 4, false>(),
                    (4, true) if S::NV >= 4 => self.micro::<S, $mr, 4, true>(),
                    _ => unreachable!("tile wider than the ISA's micro-kernel"),
                }
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            match mr {
                1 => by_nv!(1),
                2 => by_nv!(2),
                3 => by_nv!(3),
                4 => by_nv!(4),
                5 if S::MR >= 5 => by_nv!(5),
                6 if S::MR >= 6 => by_nv!(6),
                _ => unreachable!("tile taller than the ISA's micro-kernel"),
            }
        }
    }

    /// The register-blocked kernel: `MR × NV` accumulators, one broadcast of
    /// `A` and `NV` loads of `B` per step of `k`.
    #[inline(always)]
    unsafe fn micro<S: Simd, const MR: usize, const NV: usize, const PARTIAL: bool>(&self) {
        // SAFETY: the caller guarantees the tile is in bounds; with PARTIAL the
        // last vector is accessed through the mask only.
        unsafe {
            let mask = S::mask(if PARTIAL { self.rem } else { 0 });
            let mut acc = [[S::zero(); NV]; MR];
            let mut a_col = self.a;
            let mut b_row = self.b;
            for _ in 0..self.k {
                let mut bv = [S::zero(); NV];
                for (v, slot) in bv.iter_mut().enumerate() {
                    *slot = if PARTIAL && v == NV - 1 {
                        S::load_masked(b_row.add(v * S::LANES), mask)
                    } else {
                        S::load(b_row.add(v * S::LANES))
                    };
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = S::splat(*a_col.add(r * self.a_rs));
                    for (slot, &b) in acc_r.iter_mut().zip(&bv) {
                        *slot = S::fma(av, b, *slot);
                    }
                }
                a_col = a_col.add(self.a_cs);
                b_row = b_row.add(self.ldb);
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let c_row = self.c.add(r * self.ldc);
                for (v, &x) in acc_r.iter().enumerate() {
                    let p = c_row.add(v * S::LANES);
                    if PARTIAL && v == NV - 1 {
                        let x = if self.accumulate {
                            S::add(x, S::load_masked(p, mask))
                        } else {
                            x
                        };
                        S::store_masked(p, x, mask);
                    } else {
                        let x = if self.accumulate {
                            S::add(x, S::load(p))
                        } else {
                            x
                        };
                        S::store(p, x);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, dispatch};

    struct Case<'a> {
        m: usize,
        n: usize,
        k: usize,
        a: &'a [f32],
        a_rs: usize,
        a_cs: usize,
        b_src: &'a [f32],
        packed: bool,
        c: &'a mut [f32],
        accumulate: bool,
    }

    impl SimdFn for Case<'_> {
        type Output = ();
        #[inline(always)]
        fn call<S: Simd>(self) {
            let a = MatRef {
                data: self.a,
                rs: self.a_rs,
                cs: self.a_cs,
            };
            let w = panel_width::<S>();
            let mut buf = vec![f32::NAN; packed_len(self.n, self.k, w)];
            let b = if self.packed {
                // b_src holds Bᵀ (n × k).
                pack_transposed(self.b_src, self.n, self.k, self.k, w, &mut buf);
                PanelRef::packed(&buf, self.k, w, 0)
            } else {
                PanelRef::rows::<S>(self.b_src, self.n)
            };
            gemm::<S>(
                self.m,
                self.n,
                self.k,
                a,
                b,
                self.c,
                self.n,
                self.accumulate,
            );
        }
    }

    fn lcg(state: &mut u64) -> f32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn gemm_matches_naive_on_every_isa_and_shape() {
        let mut st = 7u64;
        for isa in Isa::supported() {
            for &(m, n, k) in &[
                (1, 1, 1),
                (7, 5, 3),
                (6, 64, 64),
                (13, 70, 9),
                (20, 129, 17),
                (5, 16, 0),
            ] {
                for (transposed_a, packed, accumulate) in [
                    (false, false, false),
                    (true, false, true),
                    (false, true, false),
                    (true, true, true),
                ] {
                    let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut st)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| lcg(&mut st)).collect();
                    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| lcg(&mut st)).collect();
                    // A stored transposed: (i, p) at p * m + i.
                    let a_store: Vec<f32> = if transposed_a {
                        (0..m * k).map(|x| a[(x % m) * k + x / m]).collect()
                    } else {
                        a.clone()
                    };
                    let (a_rs, a_cs) = if transposed_a { (1, m) } else { (k, 1) };
                    let mut c = c0.clone();
                    dispatch(
                        isa,
                        Case {
                            m,
                            n,
                            k,
                            a: &a_store,
                            a_rs,
                            a_cs,
                            b_src: if packed { &bt } else { &b },
                            packed,
                            c: &mut c,
                            accumulate,
                        },
                    );
                    for i in 0..m {
                        for j in 0..n {
                            let mut want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                            if accumulate {
                                want += c0[i * n + j];
                            }
                            let got = c[i * n + j];
                            assert!(
                                (got - want).abs() < 1e-4,
                                "{} m{m} n{n} k{k} ({i},{j}): {got} vs {want}",
                                isa.name()
                            );
                        }
                    }
                }
            }
        }
    }
}
