//! Exact (erf) GELU as a candle custom op with an analytic backward, in vector lanes (the rational `erf` of
//! [`Simd::erf`], within 1e-6 of the f64 GELU and of PyTorch's).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use crate::cpu_storage::{check_f32_cpu, f32_slice};
use crate::row_parallel::for_each_row;
use crate::simd::{Isa, Simd, SimdFn, dispatch};

/// Elements per chunk for the element-wise loops.
const CHUNK: usize = 1024;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Forward op: `gelu(x) = 0.5 x (1 + erf(x / sqrt 2))`.
struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "mosaic-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), storage, layout)?;
        let mut out = vec![0f32; x.len()];
        let isa = Isa::best();
        for_each_row(&mut out, CHUNK, |c, y| {
            let x = &x[c * CHUNK..c * CHUNK + y.len()];
            dispatch(
                isa,
                Lanes {
                    x,
                    dy: None,
                    out: y,
                },
            );
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dy = grad_res.contiguous()?;
        let x = arg.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&dy, &GeluErfBwd)?))
    }
}

/// Backward kernel: `dx = dy * (Phi(x) + x phi(x))`. Inputs `(x, dy)`.
struct GeluErfBwd;

impl CustomOp2 for GeluErfBwd {
    fn name(&self) -> &'static str {
        "mosaic-gelu-erf-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s1, l1)?;
        let dy = f32_slice(self.name(), s2, l2)?;
        if l1.shape() != l2.shape() {
            bail!(
                "{}: shape mismatch {:?} vs {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        let mut out = vec![0f32; x.len()];
        let isa = Isa::best();
        for_each_row(&mut out, CHUNK, |c, dx| {
            let range = c * CHUNK..c * CHUNK + dx.len();
            let (x, dy) = (&x[range.clone()], &dy[range]);
            dispatch(
                isa,
                Lanes {
                    x,
                    dy: Some(dy),
                    out: dx,
                },
            );
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// One chunk: `out = gelu(x)`, or with `dy`, `out = dy * gelu'(x)`.
struct Lanes<'a> {
    x: &'a [f32],
    dy: Option<&'a [f32]>,
    out: &'a mut [f32],
}

impl SimdFn for Lanes<'_> {
    type Output = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        let n = self.out.len();
        let (x, y) = (self.x.as_ptr(), self.out.as_mut_ptr());
        let dy = self.dy.map(<[f32]>::as_ptr);
        // SAFETY: `x`, `dy` and `out` have `n` elements (the callers slice them so); full vectors below `n`, a
        // masked tail.
        unsafe {
            let mut j = 0;
            while j + S::LANES <= n {
                let g = dy.map(|d| S::load(d.add(j)));
                S::store(y.add(j), gelu_lane::<S>(S::load(x.add(j)), g));
                j += S::LANES;
            }
            if j < n {
                let m = S::mask(n - j);
                let g = dy.map(|d| S::load_masked(d.add(j), m));
                S::store_masked(y.add(j), gelu_lane::<S>(S::load_masked(x.add(j), m), g), m);
            }
        }
    }
}

/// `gelu(x)` of one vector, or with `dy`, `dy * gelu'(x)`. A function rather than a closure: `#[inline(always)]`
/// puts it in the caller compiled for the ISA, so its intrinsics inline (a closure does not inherit the caller's
/// target features).
///
/// # Safety
/// The CPU must support `S`'s instruction set (guaranteed under `simd::dispatch`).
#[inline(always)]
unsafe fn gelu_lane<S: Simd>(xv: S::V, dyv: Option<S::V>) -> S::V {
    unsafe {
        let half = S::splat(0.5);
        let cdf = S::fma(half, S::erf(S::mul(xv, S::splat(FRAC_1_SQRT_2))), half);
        match dyv {
            None => S::mul(xv, cdf),
            Some(g) => {
                let e = S::exp(S::mul(S::splat(-0.5), S::mul(xv, xv)));
                let pdf = S::mul(S::splat(INV_SQRT_2PI), e);
                S::mul(g, S::fma(xv, pdf, cdf))
            }
        }
    }
}

pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    check_f32_cpu("gelu_erf", "x", x)?;
    x.contiguous()?.apply_op1(GeluErf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::cpu::erf::erf_f64;

    /// Every instruction set this CPU runs, on a dense grid: the GELU within 1e-6 of the f64 one (relative
    /// beyond |x| = 1, where the output grows with x) and its derivative likewise.
    #[test]
    fn vector_gelu_is_within_1e_6_of_f64_on_every_isa() {
        let x: Vec<f32> = (-120_000..=120_000)
            .map(|i| i as f32 * 1e-4)
            .chain([-30.0, 30.0, 0.0])
            .collect();
        let dy = vec![1.0f32; x.len()];
        for isa in Isa::supported() {
            let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            dispatch(
                isa,
                Lanes {
                    x: &x,
                    dy: None,
                    out: &mut y,
                },
            );
            dispatch(
                isa,
                Lanes {
                    x: &x,
                    dy: Some(&dy),
                    out: &mut dx,
                },
            );
            let (mut worst_y, mut worst_dx) = (0f64, 0f64);
            for ((&xi, &yi), &dxi) in x.iter().zip(&y).zip(&dx) {
                let xd = xi as f64;
                let cdf = 0.5 * (1.0 + erf_f64(xd / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
                let scale = xd.abs().max(1.0);
                worst_y = worst_y.max((yi as f64 - xd * cdf).abs() / scale);
                worst_dx = worst_dx.max((dxi as f64 - (cdf + xd * pdf)).abs() / scale);
            }
            assert!(worst_y <= 1e-6, "{}: gelu off by {worst_y:e}", isa.name());
            assert!(
                worst_dx <= 1e-6,
                "{}: gelu' off by {worst_dx:e}",
                isa.name()
            );
        }
    }
}
