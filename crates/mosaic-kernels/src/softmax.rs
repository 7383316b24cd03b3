//! Softmax over the last dimension as a candle custom op with an analytic backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use crate::cpu_storage::{check_f32_cpu, f32_slice, last_dim};
use crate::row_parallel::for_each_row;

/// Forward op: `y = exp(x - max) / sum(exp(x - max))` along the last dim.
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "mosaic-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), storage, layout)?;
        let d = last_dim(layout);
        let mut out = vec![0f32; x.len()];
        if d > 0 {
            for_each_row(&mut out, d, |i, y| softmax_row(&x[i * d..(i + 1) * d], y));
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dy = grad_res.contiguous()?;
        let y = res.contiguous()?;
        Ok(Some(y.apply_op2_no_bwd(&dy, &SoftmaxLastDimBwd)?))
    }
}

/// Numerically stable softmax of one row. A row whose maximum is `-inf`
/// (every entry `-inf`) yields all zeros instead of NaN.
#[inline]
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        y.fill(0.0);
        return;
    }
    let mut sum = 0f64;
    for (yi, &xi) in y.iter_mut().zip(x) {
        let e = (xi - max).exp();
        *yi = e;
        sum += e as f64;
    }
    let inv = (1.0 / sum) as f32;
    y.iter_mut().for_each(|v| *v *= inv);
}

/// Backward kernel: `dx = y * (dy - sum(dy * y))`. Inputs `(y, dy)`.
struct SoftmaxLastDimBwd;

impl CustomOp2 for SoftmaxLastDimBwd {
    fn name(&self) -> &'static str {
        "mosaic-softmax-last-dim-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(self.name(), s1, l1)?;
        let dy = f32_slice(self.name(), s2, l2)?;
        if l1.shape() != l2.shape() {
            bail!(
                "{}: shape mismatch {:?} vs {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        let d = last_dim(l1);
        let mut out = vec![0f32; y.len()];
        if d > 0 {
            for_each_row(&mut out, d, |i, dx| {
                let y = &y[i * d..(i + 1) * d];
                let dy = &dy[i * d..(i + 1) * d];
                let dot: f64 = y.iter().zip(dy).map(|(&a, &b)| a as f64 * b as f64).sum();
                for ((dxi, &yi), &dyi) in dx.iter_mut().zip(y).zip(dy) {
                    *dxi = (yi as f64 * (dyi as f64 - dot)) as f32;
                }
            });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    check_f32_cpu("softmax_last_dim", "x", x)?;
    x.contiguous()?.apply_op1(SoftmaxLastDim)
}
