//! The f32 vector abstraction the kernels are written against ([`Simd`],
//! run through a [`SimdFn`]), and its portable implementation.

use crate::dropout::dropout_keep;

/// A kernel generic over the vector type; run it with `simd::dispatch`.
pub(crate) trait SimdFn {
    type Output;
    /// Must be `#[inline(always)]` so that it compiles for the target features
    /// of the trampoline that calls it.
    fn call<S: Simd>(self) -> Self::Output;
}

/// f32 vector operations. Every method is `unsafe` because the x86
/// implementations require their CPU features (guaranteed by `simd::dispatch`)
/// and the memory ones take raw pointers, which must be valid for the lanes
/// they touch.
#[allow(clippy::missing_safety_doc)]
pub(crate) trait Simd: Copy {
    /// Lanes of [`Simd::V`].
    const LANES: usize;
    /// Rows of a GEMM micro-tile.
    const MR: usize;
    /// Vectors (of `LANES` columns each) of a GEMM micro-tile.
    const NV: usize;
    type V: Copy;
    /// A "first `n` lanes" mask.
    type Mask: Copy;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Mask of the first `n` lanes, `n < LANES`.
    unsafe fn mask(n: usize) -> Self::Mask;
    /// Loads the masked lanes, zero elsewhere; only masked lanes are read.
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self::V;
    /// Stores the masked lanes only.
    unsafe fn store_masked(p: *mut f32, v: Self::V, m: Self::Mask);
    /// `a * b + c`
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `exp(x)` to about 2 ulp; `exp(-inf) = 0`; inputs above ~88 overflow.
    unsafe fn exp(x: Self::V) -> Self::V;
    unsafe fn reduce_sum(v: Self::V) -> f32;
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// Runs `f` for this instruction set inside one function that is never
    /// inlined, so a large kernel called from many sites (the GEMM) is
    /// compiled once per instruction set instead of into every caller.
    unsafe fn call_out_of_line<F: SimdFn>(f: F) -> F::Output;

    /// `erf(x)` to about 1e-7 absolute: `x P(x²) / Q(x²)`, a rational minimax fit on `[-4, 4]` (outside,
    /// `erf` is ±1 in f32), branch-free so that it runs in vector lanes.
    #[inline(always)]
    unsafe fn erf(x: Self::V) -> Self::V {
        const P: [f32; 7] = [
            -1.609_603_3e-2,
            -2.954_6e-3,
            -7.349_906_3e-4,
            -5.692_506_4e-5,
            -2.101_024e-6,
            2.770_681_4e-8,
            -2.726_142_3e-10,
        ];
        const Q: [f32; 5] = [
            -1.426_473_9e-2,
            -7.373_329e-3,
            -1.682_827e-3,
            -2.133_740_6e-4,
            -1.456_607_2e-5,
        ];
        unsafe {
            let x = Self::max(Self::min(x, Self::splat(4.0)), Self::splat(-4.0));
            let x2 = Self::mul(x, x);
            let mut p = Self::splat(P[6]);
            for &c in P[..6].iter().rev() {
                p = Self::fma(p, x2, Self::splat(c));
            }
            let mut q = Self::splat(Q[4]);
            for &c in Q[..4].iter().rev() {
                q = Self::fma(q, x2, Self::splat(c));
            }
            Self::div(Self::mul(x, p), q)
        }
    }

    /// Dropout in place: `x[j] = keep(first + j) ? x[j] * scale : 0` with the
    /// counter-based keep decision of [`crate::dropout_mask`] (`p` in `[0, 1)`).
    #[inline(always)]
    unsafe fn dropout(x: &mut [f32], seed: u64, first: u64, p: f32, scale: f32) {
        for (j, v) in x.iter_mut().enumerate() {
            *v = if dropout_keep(seed, first.wrapping_add(j as u64), p) {
                *v * scale
            } else {
                0.0
            };
        }
    }
}

/// Portable 8-lane vector.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

/// Eight f32 lanes for [`Portable`].
#[derive(Clone, Copy)]
pub(crate) struct F32x8([f32; 8]);

impl F32x8 {
    #[inline(always)]
    fn map2(a: Self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = [0f32; 8];
        for (i, o) in out.iter_mut().enumerate() {
            *o = f(a.0[i], b.0[i]);
        }
        Self(out)
    }
}

impl Simd for Portable {
    const LANES: usize = 8;
    const MR: usize = 4;
    const NV: usize = 2;
    type V = F32x8;
    type Mask = usize;

    #[inline(always)]
    unsafe fn zero() -> F32x8 {
        F32x8([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> F32x8 {
        F32x8([x; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> F32x8 {
        // SAFETY: the caller guarantees 8 readable lanes.
        F32x8(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: F32x8) {
        // SAFETY: the caller guarantees 8 writable lanes.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v.0) }
    }
    #[inline(always)]
    unsafe fn mask(n: usize) -> usize {
        n
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, n: usize) -> F32x8 {
        let mut out = [0f32; 8];
        for (i, o) in out.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees the first `n` lanes are readable.
            *o = unsafe { *p.add(i) };
        }
        F32x8(out)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: F32x8, n: usize) {
        for (i, &x) in v.0.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees the first `n` lanes are writable.
            unsafe { *p.add(i) = x };
        }
    }
    #[inline(always)]
    unsafe fn fma(a: F32x8, b: F32x8, c: F32x8) -> F32x8 {
        let mut out = c.0;
        for (i, o) in out.iter_mut().enumerate() {
            *o += a.0[i] * b.0[i];
        }
        F32x8(out)
    }
    #[inline(always)]
    unsafe fn add(a: F32x8, b: F32x8) -> F32x8 {
        F32x8::map2(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: F32x8, b: F32x8) -> F32x8 {
        F32x8::map2(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: F32x8, b: F32x8) -> F32x8 {
        F32x8::map2(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn max(a: F32x8, b: F32x8) -> F32x8 {
        F32x8::map2(a, b, f32::max)
    }
    #[inline(always)]
    unsafe fn min(a: F32x8, b: F32x8) -> F32x8 {
        F32x8::map2(a, b, f32::min)
    }
    #[inline(always)]
    unsafe fn div(a: F32x8, b: F32x8) -> F32x8 {
        F32x8::map2(a, b, |x, y| x / y)
    }
    #[inline(always)]
    unsafe fn exp(x: F32x8) -> F32x8 {
        F32x8(x.0.map(f32::exp))
    }
    #[inline(always)]
    unsafe fn reduce_sum(v: F32x8) -> f32 {
        let a = v.0;
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
    }
    #[inline(always)]
    unsafe fn reduce_max(v: F32x8) -> f32 {
        v.0.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
    #[inline(always)]
    unsafe fn call_out_of_line<F: SimdFn>(f: F) -> F::Output {
        call_portable_out_of_line(f)
    }
}

#[inline(never)]
fn call_portable_out_of_line<F: SimdFn>(f: F) -> F::Output {
    f.call::<Portable>()
}
