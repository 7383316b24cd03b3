//! Fused softmax + cross-entropy over the last dim, with `ignore_index`
//! ([`IGNORE_INDEX`]) and label smoothing, as a candle custom op.
//!
//! The forward reads each row of logits once for its max and once for
//! `sum(exp)` / `sum(x)` and keeps only the per-row log-sum-exp; the backward
//! writes `dlogits = g (softmax − target)` straight from the logits and that
//! log-sum-exp. The `(N, C)` probability matrix is never stored, not even once.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::cpu_storage::{check_f32_cpu, cpu_f32, f32_slice, output_buffer};
use crate::simd::{Isa, Simd, SimdFn, dispatch, rows};

/// Label value whose row is left out of the loss (PyTorch's default
/// `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Rows handled by one rayon task (shape-dependent only: the f64 partial sums
/// are reduced in task order, so results do not depend on the thread count).
fn rows_per_task(classes: usize) -> usize {
    ((1 << 16) / classes.max(1)).clamp(1, 256)
}

/// Forward: the sum of the per-row losses of the non-ignored rows.
struct SoftmaxCrossEntropySum {
    labels: Vec<i64>,
    classes: usize,
    smoothing: f32,
    isa: Isa,
    /// Per-row log-sum-exp, kept for the backward.
    lse: OnceLock<Vec<f32>>,
}

/// Loss terms of one row: `(lse, sum(x))`.
struct RowStats<'a> {
    x: &'a [f32],
}

impl SimdFn for RowStats<'_> {
    type Output = (f32, f32);
    #[inline(always)]
    fn call<S: Simd>(self) -> (f32, f32) {
        let m = rows::max::<S>(self.x);
        if m == f32::INFINITY || m.is_nan() {
            return (m, rows::sum::<S>(self.x));
        }
        let lse = m + rows::sum_exp_shift::<S>(self.x, m).ln();
        (lse, rows::sum::<S>(self.x))
    }
}

/// `dx = g (exp(x - lse) - eps / C)`, then `-g (1 - eps)` at the label.
struct RowGrad<'a> {
    x: &'a [f32],
    dx: &'a mut [f32],
    lse: f32,
    uniform: f32,
    g: f32,
}

impl SimdFn for RowGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn call<S: Simd>(self) {
        rows::softmax_minus_const::<S>(self.x, self.dx, self.lse, self.uniform, self.g);
    }
}

impl CustomOp1 for SoftmaxCrossEntropySum {
    fn name(&self) -> &'static str {
        "mosaic-softmax-cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), storage, layout)?;
        let c = self.classes;
        if x.len() != self.labels.len() * c {
            bail!("{}: logits and labels disagree", self.name())
        }
        let mut lse = vec![0f32; self.labels.len()];
        let chunk = rows_per_task(c);
        let (smoothing, isa) = (self.smoothing, self.isa);
        let partials: Vec<f64> = lse
            .par_chunks_mut(chunk)
            .enumerate()
            .map(|(t, lse_chunk)| {
                let mut sum = 0f64;
                for (r, lse_r) in lse_chunk.iter_mut().enumerate() {
                    let i = t * chunk + r;
                    let label = self.labels[i];
                    if label == IGNORE_INDEX {
                        *lse_r = 0.0;
                        continue;
                    }
                    let row = &x[i * c..(i + 1) * c];
                    let (l, sum_x) = dispatch(isa, RowStats { x: row });
                    *lse_r = l;
                    // loss = lse - (1 - eps) x_y - eps / C * sum(x)
                    let target = (1.0 - smoothing as f64) * row[label as usize] as f64
                        + smoothing as f64 / c as f64 * sum_x as f64;
                    sum += l as f64 - target;
                }
                sum
            })
            .collect();
        let total: f64 = partials.iter().sum();
        // A fresh op is built for every call, so this is the only `set`.
        let _ = self.lse.set(lse);
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let Some(lse) = self.lse.get() else {
            bail!("{}: backward before forward", self.name())
        };
        let g = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let x = arg.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let x_data = cpu_f32(self.name(), &xs, xl)?;
        let c = self.classes;
        let mut dx = output_buffer(x_data.len());
        if c > 0 {
            let uniform = self.smoothing / c as f32;
            let on_label = g * (1.0 - self.smoothing);
            dx.par_chunks_mut(c)
                .with_min_len(rows_per_task(c))
                .enumerate()
                .for_each(|(i, dx_row)| {
                    let label = self.labels[i];
                    if label == IGNORE_INDEX {
                        dx_row.fill(0.0);
                        return;
                    }
                    let row = &x_data[i * c..(i + 1) * c];
                    let task = RowGrad {
                        x: row,
                        dx: dx_row,
                        lse: lse[i],
                        uniform,
                        g,
                    };
                    dispatch(self.isa, task);
                    dx_row[label as usize] -= on_label;
                });
        }
        Ok(Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?))
    }
}

/// Validated labels and the number of rows that count.
fn prepare(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<(Vec<i64>, usize)> {
    check_f32_cpu("cross_entropy", "logits", logits)?;
    let Some((&classes, batch_dims)) = logits.dims().split_last() else {
        bail!("mosaic_kernels::cross_entropy: `logits` must have a class dimension, got a scalar")
    };
    if labels.dims() != batch_dims {
        bail!(
            "mosaic_kernels::cross_entropy: `labels` must have shape {batch_dims:?} (logits {:?} without the class dim), got {:?}",
            logits.dims(),
            labels.dims()
        )
    }
    if !matches!(labels.dtype(), DType::I64 | DType::U32 | DType::U8) {
        bail!(
            "mosaic_kernels::cross_entropy: `labels` must be i64, u32 or u8, got {:?}",
            labels.dtype()
        )
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        bail!(
            "mosaic_kernels::cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}"
        )
    }
    let labels = labels
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    let mut count = 0;
    for (i, &y) in labels.iter().enumerate() {
        if y == IGNORE_INDEX {
            continue;
        }
        if y < 0 || y as usize >= classes {
            bail!(
                "mosaic_kernels::cross_entropy: label {y} at position {i} is outside [0, {classes}) and is not the ignore index {IGNORE_INDEX}"
            )
        }
        count += 1;
    }
    Ok((labels, count))
}

pub(crate) fn cross_entropy_sum(
    logits: &Tensor,
    labels: &Tensor,
    label_smoothing: f64,
) -> Result<(Tensor, usize)> {
    let (labels, count) = prepare(logits, labels, label_smoothing)?;
    let classes = logits.dims().last().copied().unwrap_or(0);
    let op = SoftmaxCrossEntropySum {
        labels,
        classes,
        smoothing: label_smoothing as f32,
        isa: Isa::best(),
        lse: OnceLock::new(),
    };
    Ok((logits.contiguous()?.apply_op1(op)?, count))
}

pub(crate) fn cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor> {
    let (sum, count) = cross_entropy_sum(logits, labels, label_smoothing)?;
    // count == 0 gives 0/0 = NaN, as PyTorch does.
    sum.affine(1.0 / count as f64, 0.0)
}
