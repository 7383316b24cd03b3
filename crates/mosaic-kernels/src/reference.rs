//! Slow reference versions of every op, composed only from basic
//! differentiable candle tensor ops (so candle's autograd supplies their
//! gradients).
//!
//! They exist for the tests and benches of the fused custom ops and are not
//! meant for production use. They accept the same arguments and follow the
//! same conventions as the crate-level functions (f32 inputs, masks,
//! [`MASK_VALUE`], dropout RNG via [`dropout_mask`]), but are generic over
//! the float dtype: the tests evaluate them in f64 as ground truth.

use candle_core::{D, DType, Result, Tensor, bail};

use crate::IGNORE_INDEX;

use crate::{AttentionOptions, MASK_VALUE, dropout_mask};

/// Layer norm over the last dim: `(x - mean) / sqrt(var + eps) * weight + bias`
/// (biased variance), from `mean_keepdim`, `broadcast_sub`, `sqr`, `sqrt`,
/// `broadcast_div`, `broadcast_mul` and `broadcast_add`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(weight)?.broadcast_add(bias)
}

/// The projection `x Wᵀ + b` (or `x W + b`) from `broadcast_matmul`, `t` and `broadcast_add`.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    layout: crate::LinearLayout,
) -> Result<Tensor> {
    let w = match layout {
        crate::LinearLayout::OutIn => weight.t()?,
        crate::LinearLayout::InOut => weight.clone(),
    };
    let y = x.broadcast_matmul(&w)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Softmax over the last dim: `exp(x - max) / sum(exp(x - max))`. The max is
/// detached, which leaves the gradient unchanged (softmax is shift invariant).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Exact GELU `0.5 x (1 + erf(x / sqrt 2))` built on [`Tensor::erf`], whose
/// backward in candle is the exact `2/sqrt(pi) exp(-x²)`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let cdf = ((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5;
    x.mul(&cdf?)
}

/// Scaled dot-product attention from `matmul`, scalar multiplication,
/// `where_cond` masking (causal, key padding and segment masks built with
/// `arange`/comparison ops),
/// [`softmax_last_dim`] (the reference one), dropout via [`dropout_mask`]
/// and `matmul`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Tensor> {
    let (b, h, nq, d) = q.dims4()?;
    let nk = k.dim(2)?;
    let dev = q.device();
    let scale = opts.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let scores = (q.matmul(&k.t()?)? * scale)?;

    let mut keep: Option<Tensor> = None;
    if opts.causal {
        // keep iff j <= i + nk - nq  <=>  j + nq <= i + nk
        let i = (Tensor::arange(0f32, nq as f32, dev)? + nk as f64)?.reshape((nq, 1))?;
        let j = (Tensor::arange(0f32, nk as f32, dev)? + nq as f64)?.reshape((1, nk))?;
        keep = Some(j.broadcast_le(&i)?.reshape((1, 1, nq, nk))?);
    }
    if let Some(m) = &opts.key_padding_mask {
        if m.dims() != [b, nk] {
            bail!("reference::attention: key_padding_mask must be ({b}, {nk})")
        }
        let pad = m.to_dtype(DType::F32)?.ne(0f32)?.reshape((b, 1, 1, nk))?;
        keep = Some(match keep {
            Some(c) => c.broadcast_mul(&pad)?,
            None => pad,
        });
    }
    if let Some(seg) = &opts.segment_ids {
        if nq != nk || seg.dims() != [b, nk] {
            bail!("reference::attention: segment_ids must be ({b}, {nk}) with Nq == Nk")
        }
        // same[b, i, j] = seg[b, i] == seg[b, j], compared in i64 (exact for any integer dtype).
        let seg = seg.to_dtype(DType::I64)?;
        let rows = seg.reshape((b, nq, 1))?.broadcast_as((b, nq, nk))?;
        let cols = seg.reshape((b, 1, nk))?.broadcast_as((b, nq, nk))?;
        let same = rows.eq(&cols)?.reshape((b, 1, nq, nk))?;
        keep = Some(match keep {
            Some(c) => c.broadcast_mul(&same)?,
            None => same,
        });
    }
    let scores = match keep {
        Some(keep) => {
            let keep = keep.broadcast_as((b, h, nq, nk))?;
            let fill = Tensor::full(MASK_VALUE, (b, h, nq, nk), dev)?.to_dtype(scores.dtype())?;
            keep.where_cond(&scores, &fill)?
        }
        None => scores,
    };
    let mut probs = softmax_last_dim(&scores)?;
    if opts.dropout > 0.0 {
        let mask = dropout_mask(probs.shape(), opts.dropout, opts.seed)?;
        probs = probs.mul(&mask.to_dtype(probs.dtype())?.to_device(dev)?)?;
    }
    probs.matmul(v)
}

/// Mean softmax cross-entropy with `ignore_index` −100 and label smoothing,
/// from the composed log-softmax above, `gather` and a row mask:
/// `mean over counted rows of ((1 − ε) nll + ε mean_c(−log p_c))`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    let c = logits.dim(D::Minus1)?;
    let x = logits.reshape(((), c))?;
    let labels = labels
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    let n = labels.len();
    let max = x.max_keepdim(1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let logp = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(1)?.log()?)?;
    let safe: Vec<u32> = labels
        .iter()
        .map(|&y| if y == IGNORE_INDEX { 0 } else { y as u32 })
        .collect();
    let counted: Vec<f32> = labels
        .iter()
        .map(|&y| f32::from(u8::from(y != IGNORE_INDEX)))
        .collect();
    let count = counted.iter().sum::<f32>() as f64;
    let safe = Tensor::from_vec(safe, (n, 1), x.device())?;
    let counted = Tensor::from_vec(counted, n, x.device())?.to_dtype(x.dtype())?;
    let nll = logp.gather(&safe, 1)?.squeeze(1)?.neg()?;
    let smooth = logp.mean(1)?.neg()?;
    let per_row = ((nll * (1.0 - label_smoothing))? + (smooth * label_smoothing)?)?;
    (per_row * counted)?.sum_all()? / count
}

/// One AdamW step from candle tensor ops, returning the new `(param, exp_avg, exp_avg_sq)`; any device and dtype.
/// The arithmetic the fused [`crate::adamw_step`] repeats element by element.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    h: &crate::AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut p = param.clone();
    if h.weight_decay != 0.0 {
        p = p.affine(1.0 - h.lr * h.weight_decay, 0.0)?;
    }
    let m = ((exp_avg * h.beta1)? + (grad * (1.0 - h.beta1))?)?;
    let v = ((exp_avg_sq * h.beta2)? + (grad.sqr()? * (1.0 - h.beta2))?)?;
    let t = i32::try_from(h.step).unwrap_or(i32::MAX);
    let bias_correction1 = 1.0 - h.beta1.powi(t);
    let bias_correction2_sqrt = (1.0 - h.beta2.powi(t)).sqrt();
    let step_size = h.lr / bias_correction1;
    let denom = v.sqrt()?.affine(1.0 / bias_correction2_sqrt, h.eps)?;
    let p = (p - (m.div(&denom)? * step_size)?)?;
    Ok((p, m, v))
}
