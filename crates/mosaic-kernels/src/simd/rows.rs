//! Vectorised row helpers shared by the kernels.

use super::vector::Simd;

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
pub(crate) fn softmax_minus_const<S: Simd>(x: &[f32], out: &mut [f32], shift: f32, c: f32, g: f32) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::isa::{Isa, dispatch};
    use crate::simd::vector::SimdFn;

    struct ExpSum<'a>(&'a mut [f32]);
    impl SimdFn for ExpSum<'_> {
        type Output = f32;
        #[inline(always)]
        fn call<S: Simd>(self) -> f32 {
            exp_shift_sum::<S>(self.0, 0.0)
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
