//! Exact (erf) GELU as a candle custom op with an analytic backward.

use candle_core::cpu::erf::erf_f32;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use crate::cpu_storage::{check_f32_cpu, f32_slice};
use crate::row_parallel::for_each_row;

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
        for_each_row(&mut out, CHUNK, |c, y| {
            let x = &x[c * CHUNK..c * CHUNK + y.len()];
            for (yi, &xi) in y.iter_mut().zip(x) {
                *yi = 0.5 * xi * (1.0 + erf_f32(xi * FRAC_1_SQRT_2));
            }
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
        for_each_row(&mut out, CHUNK, |c, dx| {
            let range = c * CHUNK..c * CHUNK + dx.len();
            for ((dxi, &xi), &dyi) in dx.iter_mut().zip(&x[range.clone()]).zip(&dy[range]) {
                let cdf = 0.5 * (1.0 + erf_f32(xi * FRAC_1_SQRT_2));
                let pdf = INV_SQRT_2PI * (-0.5 * xi * xi).exp();
                *dxi = dyi * (cdf + xi * pdf);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    check_f32_cpu("gelu_erf", "x", x)?;
    x.contiguous()?.apply_op1(GeluErf)
}
