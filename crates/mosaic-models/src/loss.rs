//! The losses models take over a vocabulary or a label set: mosaic-kernels' fused softmax cross-entropy (one pass
//! forward, the analytic gradient backward), never a composed log-softmax.

use candle_core::Tensor;

/// Labels equal to this do not count, as in PyTorch.
pub const IGNORE_INDEX: i64 = mosaic_kernels::IGNORE_INDEX;

/// Cross-entropy of `logits` `[N, C] f32` against `labels` `[N]` (i64 or u32), skipping [`IGNORE_INDEX`].
/// Returns `(sum of losses, number of counted rows)` so callers can normalise across accumulated batches.
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor) -> candle_core::Result<(Tensor, usize)> {
    mosaic_kernels::cross_entropy_sum(logits, labels, 0.0)
}

/// Mean cross-entropy over counted rows (0 when none count).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let (total, counted) = cross_entropy_sum(logits, labels)?;
    total.affine(1.0 / counted.max(1) as f64, 0.0)
}
