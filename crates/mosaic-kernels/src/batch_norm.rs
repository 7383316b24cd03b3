//! Batch normalisation over every dim but the channel dim (dim 1), as PyTorch's `BatchNorm1d/2d/3d` compute it.
//!
//! * [`batch_norm_train`](crate::batch_norm_train): training mode — normalises with the statistics of the batch
//!   (biased variance) and returns them, so the caller can update its running statistics. A fused candle custom
//!   op with a CPU forward and an analytic backward for the input, the weight and the bias; on any other device
//!   (CUDA) it falls back to [`composed::batch_norm_train`], the same maths from plain candle ops (slower, same
//!   gradients).
//! * [`batch_norm_eval`](crate::batch_norm_eval): eval mode — a per-channel affine map with given (running)
//!   statistics, composed from candle ops (so it is differentiable on every device).
//!
//! Layout: `x` is `(N, C, ...)` (e.g. `(N, C, H, W)`); the statistics of channel `c` are taken over the
//! `N · H · W` values `x[:, c, ...]`; `weight`, `bias`, `mean`, `var` are `(C,)`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::affine_grads::split_affine_grads;
use crate::cpu_storage::{check_f32_cpu, f32_slice};
use crate::row_parallel::for_each_row;

/// What a training-mode batch norm produces.
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// The normalised, scaled and shifted input; same shape as `x`.
    pub output: Tensor,
    /// Per-channel batch mean `(C,)` (no gradient).
    pub mean: Tensor,
    /// Per-channel *biased* batch variance `(C,)` (no gradient) — the one used to normalise. The running-variance
    /// update of PyTorch uses the unbiased one: `var * count / (count - 1)`.
    pub var: Tensor,
    /// Values per channel (`N · H · W`).
    pub count: usize,
}

/// Per-channel statistics of one forward pass, in f64, kept for its backward.
#[derive(Debug, Clone)]
struct Stats {
    mean: Vec<f64>,
    var: Vec<f64>,
}

impl Stats {
    fn rstd(&self, eps: f64) -> Vec<f64> {
        self.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
    }
}

/// `(N, C, S)`: batch, channels and the product of the remaining dims.
fn split_dims(dims: &[usize]) -> (usize, usize, usize) {
    let n = dims.first().copied().unwrap_or(1);
    let c = dims.get(1).copied().unwrap_or(1);
    let s = dims.iter().skip(2).product();
    (n, c, s)
}

/// Mean and biased variance (two passes, f64) of each channel of a contiguous `(N, C, S)` buffer.
fn channel_stats(x: &[f32], (n, c, s): (usize, usize, usize)) -> Stats {
    let count = (n * s) as f64;
    let per_channel: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let chunks = || (0..n).map(move |b| &x[(b * c + ch) * s..(b * c + ch + 1) * s]);
            let mean = chunks().flatten().map(|&v| v as f64).sum::<f64>() / count;
            let var = chunks()
                .flatten()
                .map(|&v| {
                    let d = v as f64 - mean;
                    d * d
                })
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .collect();
    let (mean, var) = per_channel.into_iter().unzip();
    Stats { mean, var }
}

/// Forward op over `(x, weight, bias)`. The statistics it computes are left in `stats` for the caller (the
/// running-statistics update) and for the backward pass.
struct BatchNorm {
    eps: f64,
    stats: Arc<Mutex<Option<Stats>>>,
}

impl BatchNorm {
    fn stats(&self) -> Option<Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "mosaic-batch-norm"
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
        let dims = split_dims(l1.dims());
        let (_, c, s) = dims;
        if w.len() != c || b.len() != c {
            bail!("{}: weight/bias must have {c} elements", self.name())
        }
        let stats = channel_stats(x, dims);
        let rstd = stats.rstd(self.eps);
        let mut out = vec![0f32; x.len()];
        if s > 0 {
            // Row i of length S is (batch i / C, channel i % C).
            for_each_row(&mut out, s, |i, y| {
                let ch = i % c;
                let scale = rstd[ch] * w[ch] as f64;
                let (mean, shift) = (stats.mean[ch], b[ch] as f64);
                for (yi, &xi) in y.iter_mut().zip(&x[i * s..(i + 1) * s]) {
                    *yi = ((xi as f64 - mean) * scale + shift) as f32;
                }
            });
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
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
        let Some(stats) = self.stats() else {
            bail!("mosaic-batch-norm: backward before forward")
        };
        let dy = grad_res.contiguous()?;
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &dy,
            &BatchNormBwd {
                eps: self.eps,
                stats,
            },
        )?;
        split_affine_grads(&packed, x, w, b)
    }
}

/// Backward kernel over `(x, weight, dy)`; output is the flat buffer `[dx | dweight | dbias]`.
///
/// With `x̂ = (x − mean)·rstd` and `M` values per channel: `dbias = Σ dy`, `dweight = Σ dy·x̂`,
/// `dx = weight·rstd·(dy − dbias/M − x̂·dweight/M)` — the batch statistics depend on `x`, hence the two
/// correction terms. Per-channel sums run sequentially in f64, so results do not depend on the thread count.
struct BatchNormBwd {
    eps: f64,
    stats: Stats,
}

impl CustomOp3 for BatchNormBwd {
    fn name(&self) -> &'static str {
        "mosaic-batch-norm-bwd"
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
        let (n, c, s) = split_dims(l1.dims());
        if w.len() != c || dy.len() != x.len() || self.stats.mean.len() != c {
            bail!("{}: inconsistent shapes", self.name())
        }
        let len = x.len();
        let mut out = vec![0f32; len + 2 * c];
        if len == 0 {
            return Ok((CpuStorage::F32(out), Shape::from(len + 2 * c)));
        }
        let count = (n * s) as f64;
        let rstd = self.stats.rstd(self.eps);
        let mean = &self.stats.mean;
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
                for bt in 0..n {
                    let range = (bt * c + ch) * s..(bt * c + ch + 1) * s;
                    for (&xi, &gi) in x[range.clone()].iter().zip(&dy[range]) {
                        let xhat = (xi as f64 - mean[ch]) * rstd[ch];
                        sum_dy += gi as f64;
                        sum_dy_xhat += gi as f64 * xhat;
                    }
                }
                (sum_dy, sum_dy_xhat)
            })
            .collect();
        let (dx, dparams) = out.split_at_mut(len);
        if s > 0 {
            for_each_row(dx, s, |i, dx_row| {
                let ch = i % c;
                let (sum_dy, sum_dy_xhat) = sums[ch];
                let (mean_dy, mean_dy_xhat) = (sum_dy / count, sum_dy_xhat / count);
                let scale = w[ch] as f64 * rstd[ch];
                let rows = x[i * s..(i + 1) * s].iter().zip(&dy[i * s..(i + 1) * s]);
                for (dxi, (&xi, &gi)) in dx_row.iter_mut().zip(rows) {
                    let xhat = (xi as f64 - mean[ch]) * rstd[ch];
                    *dxi = (scale * (gi as f64 - mean_dy - xhat * mean_dy_xhat)) as f32;
                }
            });
        }
        let (dw, db) = dparams.split_at_mut(c);
        for (ch, &(sum_dy, sum_dy_xhat)) in sums.iter().enumerate() {
            dw[ch] = sum_dy_xhat as f32;
            db[ch] = sum_dy as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(len + 2 * c)))
    }
}

/// Checks the shapes shared by both modes; returns `(C, values per channel)`.
fn check_shapes(op: &str, x: &Tensor, per_channel: &[(&str, &Tensor)]) -> Result<(usize, usize)> {
    if x.rank() < 2 {
        bail!(
            "mosaic_kernels::{op}: `x` must be (N, C, ...), got shape {:?}",
            x.dims()
        )
    }
    let (n, c, s) = split_dims(x.dims());
    for (name, t) in per_channel {
        if t.dims() != [c] {
            bail!(
                "mosaic_kernels::{op}: `{name}` must have shape ({c},), got {:?}",
                t.dims()
            )
        }
    }
    Ok((c, n * s))
}

fn check_eps(op: &str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("mosaic_kernels::{op}: eps must be finite and >= 0, got {eps}")
    }
    Ok(())
}

pub(crate) fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput> {
    const OP: &str = "batch_norm_train";
    let (c, count) = check_shapes(OP, x, &[("weight", weight), ("bias", bias)])?;
    check_eps(OP, eps)?;
    if count < 2 {
        bail!(
            "mosaic_kernels::{OP}: expected more than 1 value per channel in training mode, got input shape {:?}",
            x.dims()
        )
    }
    if !x.device().is_cpu() {
        // No GPU kernel: the composed version runs on any device and candle differentiates it.
        return composed::batch_norm_train(x, weight, bias, eps);
    }
    check_f32_cpu(OP, "x", x)?;
    check_f32_cpu(OP, "weight", weight)?;
    check_f32_cpu(OP, "bias", bias)?;
    let stats = Arc::new(Mutex::new(None));
    let op = BatchNorm {
        eps,
        stats: stats.clone(),
    };
    let output = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    // Cloned, not taken: the op keeps its copy for the backward pass.
    let Some(stats) = stats.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        bail!("mosaic_kernels::{OP}: the forward pass left no statistics")
    };
    let to_tensor = |v: Vec<f64>| {
        let v: Vec<f32> = v.into_iter().map(|e| e as f32).collect();
        Tensor::from_vec(v, c, x.device())
    };
    Ok(BatchNormOutput {
        output,
        mean: to_tensor(stats.mean)?,
        var: to_tensor(stats.var)?,
        count,
    })
}

pub(crate) fn batch_norm_eval(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    const OP: &str = "batch_norm_eval";
    let (c, _) = check_shapes(
        OP,
        x,
        &[
            ("mean", mean),
            ("var", var),
            ("weight", weight),
            ("bias", bias),
        ],
    )?;
    check_eps(OP, eps)?;
    let shape = channel_shape(x.rank(), c);
    let scale = (var.detach() + eps)?.sqrt()?.recip()?.mul(weight)?;
    x.broadcast_sub(&mean.detach().reshape(shape.clone())?)?
        .broadcast_mul(&scale.reshape(shape.clone())?)?
        .broadcast_add(&bias.reshape(shape)?)
}

/// `(1, C, 1, …)`: a per-channel vector shaped to broadcast against a rank-`rank` input.
fn channel_shape(rank: usize, c: usize) -> Vec<usize> {
    let mut shape = vec![1; rank];
    shape[1] = c;
    shape
}

/// Training-mode batch norm composed from plain candle tensor ops (candle's autograd supplies the backward):
/// the reference for the fused op's tests, and its fallback on devices other than the CPU. Any float dtype.
pub mod composed {
    use super::*;

    /// Same contract as [`batch_norm_train`](crate::batch_norm_train); `mean`/`var` come back in `x`'s dtype.
    pub fn batch_norm_train(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
    ) -> Result<BatchNormOutput> {
        const OP: &str = "composed::batch_norm_train";
        let (c, count) = check_shapes(OP, x, &[("weight", weight), ("bias", bias)])?;
        check_eps(OP, eps)?;
        if count < 2 {
            bail!("mosaic_kernels::{OP}: expected more than 1 value per channel in training mode")
        }
        let shape = channel_shape(x.rank(), c);
        // (N, C, S...) → (C, N·S): a per-channel row of values.
        let rows = x
            .transpose(0, 1)?
            .contiguous()?
            .reshape((c, count))?
            .to_dtype(x.dtype())?;
        let mean = rows.mean_keepdim(1)?;
        let centered = rows.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(1)?;
        let rstd = (var.clone() + eps)?.sqrt()?.recip()?;
        let scale = rstd.flatten_all()?.mul(weight)?.reshape(shape.clone())?;
        let output = x
            .broadcast_sub(&mean.reshape(shape.clone())?)?
            .broadcast_mul(&scale)?
            .broadcast_add(&bias.reshape(shape)?)?;
        Ok(BatchNormOutput {
            output,
            mean: mean.flatten_all()?.detach(),
            var: var.flatten_all()?.detach(),
            count,
        })
    }

    /// Eval-mode batch norm in f64 arithmetic whatever the input dtype, result in `x`'s dtype (for tests).
    pub fn batch_norm_eval_f64(
        x: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let f = |t: &Tensor| t.to_dtype(DType::F64);
        super::batch_norm_eval(&f(x)?, &f(mean)?, &f(var)?, &f(weight)?, &f(bias)?, eps)?
            .to_dtype(x.dtype())
    }
}
