//! Losses built from differentiable candle ops.

use candle_core::{D, DType, Tensor};

/// Labels equal to this do not count, as in PyTorch.
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` (N, C) against `labels` (N,) (i64 or u32), skipping [`IGNORE_INDEX`].
/// Returns `(sum of losses, number of counted rows)` so callers can normalise across accumulated batches.
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor) -> candle_core::Result<(Tensor, usize)> {
    let labels = labels.to_dtype(DType::I64)?;
    let keep: Vec<i64> = labels.to_vec1()?;
    let counted = keep.iter().filter(|&&l| l != IGNORE_INDEX).count();
    let weights: Vec<f32> = keep
        .iter()
        .map(|&l| if l == IGNORE_INDEX { 0.0 } else { 1.0 })
        .collect();
    let safe: Vec<u32> = keep
        .iter()
        .map(|&l| if l == IGNORE_INDEX { 0 } else { l as u32 })
        .collect();
    let device = logits.device();
    let n = keep.len();
    let weights = Tensor::from_vec(weights, n, device)?;
    let safe = Tensor::from_vec(safe, (n, 1), device)?;
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&safe, 1)?.squeeze(1)?;
    let total = picked.mul(&weights)?.sum_all()?.neg()?;
    Ok((total, counted))
}

/// Mean cross-entropy over counted rows (0 when none count).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let (total, counted) = cross_entropy_sum(logits, labels)?;
    total.affine(1.0 / counted.max(1) as f64, 0.0)
}
