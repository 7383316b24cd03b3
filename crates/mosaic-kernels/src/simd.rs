//! Runtime-dispatched SIMD: a small f32 vector abstraction ([`Simd`]) with
//! AVX-512, AVX2 + FMA and portable implementations, and [`dispatch`], which
//! runs a kernel generic over [`Simd`] compiled for the best instruction set
//! the CPU has.
//!
//! Kernels are written once as a [`SimdFn`] whose `call::<S>()` is
//! `#[inline(always)]`; [`dispatch`] calls it from a function compiled with
//! `#[target_feature(enable = ...)]`, so every vector operation below inlines
//! into code built for that instruction set (the same pattern as the `pulp`
//! crate, without the dependency). Inside `call`, use plain loops around
//! vector code: a closure (`map`, `for_each`) is compiled as a function of
//! its own without those target features, and its intrinsics stop inlining.

use std::sync::OnceLock;

use crate::attention::dropout_keep;
use crate::gemm::{GemmCall, gemm_body};

/// Instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// x86-64 AVX-512F + DQ (16 f32 lanes, 32 registers).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// x86-64 AVX2 + FMA (8 f32 lanes, 16 registers).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust on 8-lane arrays (the compiler vectorises it as it can).
    Portable,
}

impl Isa {
    /// The best instruction set of this CPU, detected once. The environment
    /// variable `MOSAIC_KERNELS_ISA` (`avx512`, `avx2`, `portable`) lowers it,
    /// e.g. to measure or test the fallbacks; a request for an instruction set
    /// the CPU lacks is ignored.
    pub(crate) fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let wanted = std::env::var("MOSAIC_KERNELS_ISA").unwrap_or_default();
            let supported = Isa::supported();
            supported
                .iter()
                .copied()
                .find(|isa| isa.name() == wanted.trim().to_ascii_lowercase())
                .unwrap_or(supported[0])
        })
    }

    /// Every instruction set this CPU can run, best first (never empty).
    pub(crate) fn supported() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                out.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Isa::Avx2);
            }
        }
        out.push(Isa::Portable);
        out
    }

    /// Lower-case name, as accepted by `MOSAIC_KERNELS_ISA`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// The instruction set kernels use by default (see [`Isa::best`]), by name.
pub fn active_isa() -> &'static str {
    Isa::best().name()
}

/// A kernel generic over the vector type; run it with [`dispatch`].
pub(crate) trait SimdFn {
    type Output;
    /// Must be `#[inline(always)]` so that it compiles for the target features
    /// of the trampoline that calls it.
    fn call<S: Simd>(self) -> Self::Output;
}

/// Runs `f` compiled for `isa`, which must be one of [`Isa::supported`].
pub(crate) fn dispatch<F: SimdFn>(isa: Isa, f: F) -> F::Output {
    match isa {
        // SAFETY: `Isa::Avx512` / `Isa::Avx2` are only produced by
        // `Isa::supported`, after run-time detection of those features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::run_avx2(f) },
        Isa::Portable => f.call::<Portable>(),
    }
}

/// f32 vector operations. Every method is `unsafe` because the x86
/// implementations require their CPU features (guaranteed by [`dispatch`])
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
    /// `exp(x)` to about 2 ulp; `exp(-inf) = 0`; inputs above ~88 overflow.
    unsafe fn exp(x: Self::V) -> Self::V;
    unsafe fn reduce_sum(v: Self::V) -> f32;
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// [`gemm_body`] for this instruction set, out of line.
    unsafe fn gemm(call: GemmCall<'_>);

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
    unsafe fn gemm(call: GemmCall<'_>) {
        gemm_portable(call)
    }
}

#[inline(never)]
fn gemm_portable(call: GemmCall<'_>) {
    gemm_body::<Portable>(call)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GemmCall, Simd, SimdFn, gemm_body};

    // Cephes `expf` constants: exp(x) = 2^n * exp(r), r = x - n ln 2 in [-ln2/2, ln2/2].
    const EXP_HI: f32 = 88.376_26;
    const EXP_LO: f32 = -87.336_55;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const EXP_P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];

    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn run_avx512<F: SimdFn>(f: F) -> F::Output {
        f.call::<Avx512>()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2<F: SimdFn>(f: F) -> F::Output {
        f.call::<Avx2>()
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    #[inline(never)]
    unsafe fn gemm_avx512(call: GemmCall<'_>) {
        gemm_body::<Avx512>(call)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn gemm_avx2(call: GemmCall<'_>) {
        gemm_body::<Avx2>(call)
    }

    /// AVX-512F: 16 lanes; 6 × 64 micro-tiles (24 of the 32 registers).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    impl Simd for Avx512 {
        const LANES: usize = 16;
        const MR: usize = 6;
        const NV: usize = 4;
        type V = __m512;
        type Mask = __mmask16;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> __mmask16 {
            ((1u32 << n) - 1) as __mmask16
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __mmask16) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: __m512, m: __mmask16) {
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn exp(x: __m512) -> __m512 {
            unsafe {
                // `scalef` computes y * 2^n without integer tricks and saturates
                // gracefully, so only the lower clamp (-inf -> 0) needs a mask.
                let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_LO));
                let x = _mm512_min_ps(x, _mm512_set1_ps(EXP_HI));
                let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_LO));
                let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                );
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
                let mut y = _mm512_set1_ps(EXP_P[0]);
                for &c in &EXP_P[1..] {
                    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
                }
                let r2 = _mm512_mul_ps(r, r);
                let y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
                _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(y, n))
            }
        }
        #[inline(always)]
        unsafe fn reduce_sum(v: __m512) -> f32 {
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m512) -> f32 {
            unsafe { _mm512_reduce_max_ps(v) }
        }
        #[inline(always)]
        unsafe fn gemm(call: GemmCall<'_>) {
            unsafe { gemm_avx512(call) }
        }
        #[inline(always)]
        unsafe fn dropout(x: &mut [f32], seed: u64, first: u64, p: f32, scale: f32) {
            // SplitMix64 on 8 u64 lanes (AVX-512DQ multiplies); the keep test
            // `(z >> 40) * 2^-24 >= p` is the integer test `z >> 40 >= ceil(p 2^24)`.
            unsafe {
                let thr = _mm512_set1_epi64((p * 16_777_216.0).ceil() as i64);
                let golden = _mm512_set1_epi64(0x9E37_79B9_7F4A_7C15_u64 as i64);
                let c1 = _mm512_set1_epi64(0xBF58_476D_1CE4_E5B9_u64 as i64);
                let c2 = _mm512_set1_epi64(0x94D0_49BB_1331_11EB_u64 as i64);
                let seed_v = _mm512_set1_epi64(seed as i64);
                let sv = _mm512_set1_ps(scale);
                // A plain fn, not a closure, so that it inlines into the
                // caller compiled with AVX-512 (see the module docs).
                #[inline(always)]
                unsafe fn keep(idx: __m512i, k: [__m512i; 5]) -> __mmask8 {
                    let [seed_v, golden, c1, c2, thr] = k;
                    unsafe {
                        let mut z = _mm512_add_epi64(seed_v, _mm512_mullo_epi64(idx, golden));
                        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)), c1);
                        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)), c2);
                        z = _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z));
                        _mm512_cmpge_epu64_mask(_mm512_srli_epi64::<40>(z), thr)
                    }
                }
                let consts = [seed_v, golden, c1, c2, thr];
                // Counter of element j is first + j + 1 (SplitMix64 output j).
                let mut idx_lo = _mm512_add_epi64(
                    _mm512_set1_epi64(first.wrapping_add(1) as i64),
                    _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let eight = _mm512_set1_epi64(8);
                let sixteen = _mm512_set1_epi64(16);
                let n = x.len();
                let ptr = x.as_mut_ptr();
                let mut j = 0;
                while j < n {
                    let idx_hi = _mm512_add_epi64(idx_lo, eight);
                    let m = keep(idx_lo, consts) as u16 | ((keep(idx_hi, consts) as u16) << 8);
                    let lanes = (n - j).min(16);
                    let valid: __mmask16 = if lanes == 16 {
                        0xffff
                    } else {
                        (1u16 << lanes) - 1
                    };
                    let v = _mm512_maskz_loadu_ps(valid, ptr.add(j));
                    _mm512_mask_storeu_ps(ptr.add(j), valid, _mm512_maskz_mul_ps(m, v, sv));
                    idx_lo = _mm512_add_epi64(idx_lo, sixteen);
                    j += 16;
                }
            }
        }
    }

    /// AVX2 + FMA: 8 lanes; 6 × 16 micro-tiles (12 of the 16 registers).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    impl Simd for Avx2 {
        const LANES: usize = 8;
        const MR: usize = 6;
        const NV: usize = 2;
        type V = __m256;
        type Mask = __m256i;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> __m256i {
            unsafe {
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
            }
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __m256i) -> __m256 {
            unsafe { _mm256_maskload_ps(p, m) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: __m256, m: __m256i) {
            unsafe { _mm256_maskstore_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn exp(x: __m256) -> __m256 {
            unsafe {
                let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_LO));
                let x = _mm256_min_ps(x, _mm256_set1_ps(EXP_HI));
                let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_LO));
                let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
                );
                let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
                let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
                let mut y = _mm256_set1_ps(EXP_P[0]);
                for &c in &EXP_P[1..] {
                    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
                }
                let r2 = _mm256_mul_ps(r, r);
                let y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
                // 2^n through the exponent bits; n is in [-126, 128] after the clamps.
                let n_lo = _mm256_max_ps(n, _mm256_set1_ps(-126.0));
                let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                    _mm256_cvtps_epi32(n_lo),
                    _mm256_set1_epi32(127),
                )));
                _mm256_and_ps(_mm256_mul_ps(y, pow2), keep)
            }
        }
        #[inline(always)]
        unsafe fn reduce_sum(v: __m256) -> f32 {
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m256) -> f32 {
            unsafe {
                let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        unsafe fn gemm(call: GemmCall<'_>) {
            unsafe { gemm_avx2(call) }
        }
    }
}

/// Vectorised row helpers shared by the kernels.
pub(crate) mod rows {
    use super::Simd;

    /// `max(x)`, `-inf` for an empty row.
    #[inline(always)]
    pub(crate) fn max<S: Simd>(x: &[f32]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let l = S::LANES;
        // SAFETY: every access is within `x` (full vectors below `n`, a masked tail).
        unsafe {
            let mut acc = S::splat(f32::NEG_INFINITY);
            let mut j = 0;
            while j + l <= n {
                acc = S::max(acc, S::load(p.add(j)));
                j += l;
            }
            let mut m = S::reduce_max(acc);
            for &v in &x[j..] {
                m = m.max(v);
            }
            m
        }
    }

    /// `x = exp(x - shift)` in place; returns the sum of the new values
    /// (accumulated in vector lanes, then in a fixed order: deterministic).
    #[inline(always)]
    pub(crate) fn exp_shift_sum<S: Simd>(x: &mut [f32], shift: f32) -> f32 {
        let n = x.len();
        let p = x.as_mut_ptr();
        let l = S::LANES;
        // SAFETY: every access is within `x`.
        unsafe {
            let sv = S::splat(shift);
            let mut acc = S::zero();
            let mut j = 0;
            while j + l <= n {
                let e = S::exp(S::sub(S::load(p.add(j)), sv));
                S::store(p.add(j), e);
                acc = S::add(acc, e);
                j += l;
            }
            if j < n {
                let m = S::mask(n - j);
                let e = S::exp(S::sub(S::load_masked(p.add(j), m), sv));
                S::store_masked(p.add(j), e, m);
                // Masked-off lanes loaded 0 and became exp(-shift): zero them.
                let e = S::load_masked(p.add(j), m);
                acc = S::add(acc, e);
            }
            S::reduce_sum(acc)
        }
    }

    /// `sum(exp(x - shift))` without writing.
    #[inline(always)]
    pub(crate) fn sum_exp_shift<S: Simd>(x: &[f32], shift: f32) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let l = S::LANES;
        // SAFETY: every access is within `x`.
        unsafe {
            let sv = S::splat(shift);
            let mut acc = S::zero();
            let mut j = 0;
            while j + l <= n {
                acc = S::add(acc, S::exp(S::sub(S::load(p.add(j)), sv)));
                j += l;
            }
            let mut s = S::reduce_sum(acc);
            for &v in &x[j..] {
                s += (v - shift).exp();
            }
            s
        }
    }

    /// `sum(x)`.
    #[inline(always)]
    pub(crate) fn sum<S: Simd>(x: &[f32]) -> f32 {
        let n = x.len();
        let p = x.as_ptr();
        let l = S::LANES;
        // SAFETY: every access is within `x`.
        unsafe {
            let mut acc = S::zero();
            let mut j = 0;
            while j + l <= n {
                acc = S::add(acc, S::load(p.add(j)));
                j += l;
            }
            let mut s = S::reduce_sum(acc);
            for &v in &x[j..] {
                s += v;
            }
            s
        }
    }

    /// `out = g * (exp(x - shift) - c)` (same length): the cross-entropy
    /// gradient without its label term.
    #[inline(always)]
    pub(crate) fn softmax_minus_const<S: Simd>(
        x: &[f32],
        out: &mut [f32],
        shift: f32,
        c: f32,
        g: f32,
    ) {
        let n = x.len().min(out.len());
        let (px, po) = (x.as_ptr(), out.as_mut_ptr());
        let l = S::LANES;
        // SAFETY: every access is below `n`, within both slices.
        unsafe {
            let (sv, cv, gv) = (S::splat(shift), S::splat(c), S::splat(g));
            let mut j = 0;
            while j + l <= n {
                let e = S::exp(S::sub(S::load(px.add(j)), sv));
                S::store(po.add(j), S::mul(S::sub(e, cv), gv));
                j += l;
            }
        }
        let tail = n - n % l;
        out[tail..n]
            .iter_mut()
            .zip(&x[tail..n])
            .for_each(|(o, &v)| *o = g * ((v - shift).exp() - c));
    }

    /// `x *= a`.
    #[inline(always)]
    pub(crate) fn scale<S: Simd>(x: &mut [f32], a: f32) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let l = S::LANES;
        // SAFETY: every access is within `x`.
        unsafe {
            let av = S::splat(a);
            let mut j = 0;
            while j + l <= n {
                S::store(p.add(j), S::mul(S::load(p.add(j)), av));
                j += l;
            }
        }
        let tail = n - n % l;
        x[tail..].iter_mut().for_each(|v| *v *= a);
    }

    /// `x += y` (same length).
    #[inline(always)]
    pub(crate) fn add_assign<S: Simd>(x: &mut [f32], y: &[f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_mut_ptr(), y.as_ptr());
        let l = S::LANES;
        // SAFETY: every access is below `n`, within both slices.
        unsafe {
            let mut j = 0;
            while j + l <= n {
                S::store(px.add(j), S::add(S::load(px.add(j)), S::load(py.add(j))));
                j += l;
            }
        }
        let tail = n - n % l;
        x[tail..n]
            .iter_mut()
            .zip(&y[tail..n])
            .for_each(|(a, b)| *a += b);
    }

    /// `sum(x * y)` (same length).
    #[inline(always)]
    pub(crate) fn dot<S: Simd>(x: &[f32], y: &[f32]) -> f32 {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_ptr());
        let l = S::LANES;
        // SAFETY: every access is below `n`, within both slices.
        unsafe {
            let mut acc = S::zero();
            let mut j = 0;
            while j + l <= n {
                acc = S::fma(S::load(px.add(j)), S::load(py.add(j)), acc);
                j += l;
            }
            let mut s = S::reduce_sum(acc);
            for (a, b) in x[j..n].iter().zip(&y[j..n]) {
                s += a * b;
            }
            s
        }
    }

    /// `x = p * (x - d)` (same length): the softmax backward `dS = P ∘ (dP − D)`.
    #[inline(always)]
    pub(crate) fn softmax_bwd<S: Simd>(x: &mut [f32], p: &[f32], d: f32) {
        let n = x.len().min(p.len());
        let (px, pp) = (x.as_mut_ptr(), p.as_ptr());
        let l = S::LANES;
        // SAFETY: every access is below `n`, within both slices.
        unsafe {
            let dv = S::splat(d);
            let mut j = 0;
            while j + l <= n {
                let v = S::mul(S::load(pp.add(j)), S::sub(S::load(px.add(j)), dv));
                S::store(px.add(j), v);
                j += l;
            }
        }
        let tail = n - n % l;
        x[tail..n]
            .iter_mut()
            .zip(&p[tail..n])
            .for_each(|(a, &b)| *a = b * (*a - d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ExpSum<'a>(&'a mut [f32]);
    impl SimdFn for ExpSum<'_> {
        type Output = f32;
        #[inline(always)]
        fn call<S: Simd>(self) -> f32 {
            rows::exp_shift_sum::<S>(self.0, 0.0)
        }
    }

    struct Dropout<'a>(&'a mut [f32], u64, u64, f32);
    impl SimdFn for Dropout<'_> {
        type Output = ();
        #[inline(always)]
        fn call<S: Simd>(self) {
            let scale = 1.0 / (1.0 - self.3);
            unsafe { S::dropout(self.0, self.1, self.2, self.3, scale) }
        }
    }

    #[test]
    fn vector_dropout_matches_the_scalar_rng_on_every_isa() {
        for &(n, seed, first, p) in &[
            (1usize, 0u64, 0u64, 0.5f32),
            (37, 42, 1_000_003, 0.1),
            (100, u64::MAX, u64::MAX - 50, 0.9),
            (64, 7, 3, 1e-7),
        ] {
            let scale = 1.0 / (1.0 - p);
            let want: Vec<f32> = (0..n)
                .map(|j| {
                    let x = j as f32 + 1.0;
                    if dropout_keep(seed, first.wrapping_add(j as u64), p) {
                        x * scale
                    } else {
                        0.0
                    }
                })
                .collect();
            for isa in Isa::supported() {
                let mut x: Vec<f32> = (0..n).map(|j| j as f32 + 1.0).collect();
                dispatch(isa, Dropout(&mut x, seed, first, p));
                assert_eq!(x, want, "{} n={n} p={p}", isa.name());
            }
        }
    }

    #[test]
    fn exp_is_accurate_on_every_isa() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| -90.0 + i as f32 * 0.1)
            .chain([f32::NEG_INFINITY, 0.0, -1e-8, 1e-8])
            .collect();
        for isa in Isa::supported() {
            let mut ys = xs.clone();
            let sum = dispatch(isa, ExpSum(&mut ys));
            let mut want_sum = 0f64;
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp();
                want_sum += want;
                let rel = ((y as f64 - want) / want.max(1e-30)).abs();
                assert!(
                    rel < 4e-7 || (want < 1.2e-38 && (y as f64) < 1.2e-38),
                    "{}: exp({x}) = {y}, want {want}",
                    isa.name()
                );
            }
            assert!(((sum as f64 - want_sum) / want_sum).abs() < 1e-6);
        }
    }
}
