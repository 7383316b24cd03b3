//! The x86-64 implementations of [`Simd`]: AVX-512 and AVX2 + FMA, and the
//! trampolines compiled with their target features.

use std::arch::x86_64::*;

use super::vector::{Simd, SimdFn};

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

// Never inlined: besides `dispatch`, these serve `Simd::call_out_of_line`,
// whose callers are already compiled with the same features.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline(never)]
pub(super) unsafe fn run_avx512<F: SimdFn>(f: F) -> F::Output {
    f.call::<Avx512>()
}

#[target_feature(enable = "avx2,fma")]
#[inline(never)]
pub(super) unsafe fn run_avx2<F: SimdFn>(f: F) -> F::Output {
    f.call::<Avx2>()
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
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
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
    unsafe fn call_out_of_line<F: SimdFn>(f: F) -> F::Output {
        unsafe { run_avx512(f) }
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
            // caller compiled with AVX-512 (see the `simd` module docs).
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
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
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
    unsafe fn call_out_of_line<F: SimdFn>(f: F) -> F::Output {
        unsafe { run_avx2(f) }
    }
}
