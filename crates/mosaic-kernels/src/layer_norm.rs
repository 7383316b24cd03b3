//! Layer normalisation over the last dimension as a candle custom op with an
//! analytic backward for the input, the weight and the bias.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::affine_grads::split_affine_grads;
use crate::cpu_storage::{check_f32_cpu, f32_slice, last_dim};
use crate::row_parallel::{for_each_row, rows_per_task};

/// Forward op over `(x, weight, bias)`.
struct LayerNorm {
    eps: f64,
}

/// Mean and reciprocal standard deviation of one row (two-pass variance),
/// accumulated in f64: near-constant rows (tiny variance, large `rstd`) are
/// badly conditioned and f32 accumulation would lose several digits there.
#[inline]
fn row_stats(x: &[f32], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| {
            let c = v as f64 - mean;
            c * c
        })
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "mosaic-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s1, l1)?;
        let w = f32_slice(self.name(), s2, l2)?;
        let b = f32_slice(self.name(), s3, l3)?;
        let d = last_dim(l1);
        if w.len() != d || b.len() != d {
            bail!("{}: weight/bias must have {d} elements", self.name())
        }
        let mut out = vec![0f32; x.len()];
        if d > 0 {
            let eps = self.eps;
            for_each_row(&mut out, d, |i, y| {
                let x = &x[i * d..(i + 1) * d];
                let (mean, rstd) = row_stats(x, eps);
                for (((yi, &xi), &wi), &bi) in y.iter_mut().zip(x).zip(w).zip(b) {
                    let xhat = ((xi as f64 - mean) * rstd) as f32;
                    *yi = xhat * wi + bi;
                }
            });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = grad_res.contiguous()?;
        let x_c = x.contiguous()?;
        let w_c = w.contiguous()?;
        // One pass produces [dx (n) | dweight (d) | dbias (d)] in a flat buffer.
        let packed = x_c.apply_op3_no_bwd(&w_c, &dy, &LayerNormBwd { eps: self.eps })?;
        split_affine_grads(&packed, x, w, b)
    }
}

/// Backward kernel over `(x, weight, dy)`; output is the flat buffer
/// `[dx | dweight | dbias]`.
///
/// Rows are split into blocks of a size that depends only on the shape, the
/// per-block partial sums of `dweight`/`dbias` are reduced in block order, so
/// the result is bit-for-bit deterministic whatever the thread count.
struct LayerNormBwd {
    eps: f64,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "mosaic-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), s1, l1)?;
        let w = f32_slice(self.name(), s2, l2)?;
        let dy = f32_slice(self.name(), s3, l3)?;
        let d = last_dim(l1);
        if w.len() != d || dy.len() != x.len() {
            bail!("{}: inconsistent shapes", self.name())
        }
        let n = x.len();
        let mut out = vec![0f32; n + 2 * d];
        if d == 0 || n == 0 {
            return Ok((CpuStorage::F32(out), Shape::from(n + 2 * d)));
        }
        let eps = self.eps;
        let inv_d = 1.0 / d as f64;
        let block_rows = rows_per_task(d);
        let (dx, dparams) = out.split_at_mut(n);
        let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(block_rows * d)
            .enumerate()
            .map(|(blk, dx_blk)| {
                let mut dw = vec![0f64; d];
                let mut db = vec![0f64; d];
                for (r, dx_row) in dx_blk.chunks_mut(d).enumerate() {
                    let start = (blk * block_rows + r) * d;
                    let x = &x[start..start + d];
                    let dy = &dy[start..start + d];
                    let (mean, rstd) = row_stats(x, eps);
                    // g = dy * w; dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
                    // in f64: the bracket cancels badly when rstd is large.
                    let mut sum_g = 0f64;
                    let mut sum_gx = 0f64;
                    let iter = x
                        .iter()
                        .zip(dy)
                        .zip(w)
                        .zip(dw.iter_mut().zip(db.iter_mut()));
                    for (((&xj, &dyj), &wj), (dwj, dbj)) in iter {
                        let xhat = (xj as f64 - mean) * rstd;
                        let g = dyj as f64 * wj as f64;
                        sum_g += g;
                        sum_gx += g * xhat;
                        *dwj += dyj as f64 * xhat;
                        *dbj += dyj as f64;
                    }
                    let mean_g = sum_g * inv_d;
                    let mean_gx = sum_gx * inv_d;
                    for (((dxj, &xj), &dyj), &wj) in dx_row.iter_mut().zip(x).zip(dy).zip(w) {
                        let xhat = (xj as f64 - mean) * rstd;
                        let g = dyj as f64 * wj as f64;
                        *dxj = (rstd * (g - mean_g - xhat * mean_gx)) as f32;
                    }
                }
                (dw, db)
            })
            .collect();
        let mut dw_sum = vec![0f64; d];
        let mut db_sum = vec![0f64; d];
        for (dw, db) in &partials {
            dw_sum.iter_mut().zip(dw).for_each(|(a, b)| *a += b);
            db_sum.iter_mut().zip(db).for_each(|(a, b)| *a += b);
        }
        let (dw_out, db_out) = dparams.split_at_mut(d);
        dw_out
            .iter_mut()
            .zip(&dw_sum)
            .for_each(|(o, &v)| *o = v as f32);
        db_out
            .iter_mut()
            .zip(&db_sum)
            .for_each(|(o, &v)| *o = v as f32);
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * d)))
    }
}

pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    check_f32_cpu("layer_norm", "x", x)?;
    check_f32_cpu("layer_norm", "weight", weight)?;
    check_f32_cpu("layer_norm", "bias", bias)?;
    let d = match x.dims().last() {
        Some(&d) => d,
        None => bail!("mosaic_kernels::layer_norm: `x` must have at least one dimension"),
    };
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [d] {
            bail!(
                "mosaic_kernels::layer_norm: `{name}` must have shape ({d},), got {:?}",
                t.dims()
            )
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("mosaic_kernels::layer_norm: eps must be finite and >= 0, got {eps}")
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { eps },
    )
}
