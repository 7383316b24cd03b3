//! The benchmark cases: shapes, inputs, and each op in two implementations,
//! mosaic's fused kernel and candle's composition of basic differentiable ops
//! (what a candle user writes without mosaic).

use candle_core::{D, DType, Device, Result, Tensor, Var};
use mosaic_kernels::AttentionOptions;

/// Which implementation a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// mosaic's fused kernels.
    Mosaic,
    /// candle's composed ops.
    Candle,
    /// PyTorch's `scaled_dot_product_attention` (CPU), from the peer script.
    TorchSdpa,
    /// PyTorch matmul-softmax-matmul, from the peer script.
    TorchNaive,
}

impl Impl {
    /// The name used in the table and the JSON `impl` field.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Mosaic => "mosaic",
            Impl::Candle => "candle",
            Impl::TorchSdpa => "torch-sdpa",
            Impl::TorchNaive => "torch-naive",
        }
    }
}

/// An attention shape `(B, H, N, D)` (self-attention: `Nq = Nk = N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub d: usize,
    pub causal: bool,
}

/// The attention shapes of issue 4 (also those of the PyTorch peer script).
pub const ATTENTION_SHAPES: [AttnShape; 5] = [
    AttnShape {
        b: 4,
        h: 12,
        n: 128,
        d: 64,
        causal: false,
    },
    AttnShape {
        b: 4,
        h: 12,
        n: 512,
        d: 64,
        causal: false,
    },
    AttnShape {
        b: 2,
        h: 12,
        n: 1024,
        d: 64,
        causal: false,
    },
    AttnShape {
        b: 2,
        h: 12,
        n: 1024,
        d: 64,
        causal: true,
    },
    AttnShape {
        b: 1,
        h: 12,
        n: 2048,
        d: 64,
        causal: true,
    },
];

/// Useful floating-point operations of the attention forward: `Q Kᵀ` and
/// `P V`, `4 B H N² D`, halved when causal (as the PyTorch peer script
/// counts). The backward does 2.5 times as much (five products, `S`
/// recomputed), so forward + backward is [`FWD_BWD_FLOP_FACTOR`] times this.
pub fn attention_flops(s: &AttnShape) -> f64 {
    let full = 4.0 * (s.b * s.h) as f64 * (s.n as f64).powi(2) * s.d as f64;
    if s.causal { full / 2.0 } else { full }
}

/// Forward + backward FLOPs over forward FLOPs for attention.
pub const FWD_BWD_FLOP_FACTOR: f64 = 3.5;

/// Deterministic uniform data in `[-1, 1)`.
pub fn uniform(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// `q`, `k`, `v` variables for `shape`.
pub fn attention_inputs(s: &AttnShape) -> Result<[Var; 3]> {
    let dims = [s.b, s.h, s.n, s.d];
    Ok([
        Var::from_tensor(&uniform(&dims, 1)?)?,
        Var::from_tensor(&uniform(&dims, 2)?)?,
        Var::from_tensor(&uniform(&dims, 3)?)?,
    ])
}

/// Attention with `imp` (mosaic or candle).
pub fn attention(imp: Impl, q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    match imp {
        Impl::Mosaic => mosaic_kernels::attention(
            q,
            k,
            v,
            &AttentionOptions {
                causal,
                ..Default::default()
            },
        ),
        _ => candle_attention(q, k, v, causal),
    }
}

/// candle's composed attention: `softmax(q kᵀ / sqrt(D) + mask) v` with the
/// differentiable `candle_nn::ops::softmax` (its fused `softmax_last_dim` has
/// no backward).
pub fn candle_attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let (_, _, n, d) = q.dims4()?;
    let nk = k.dim(2)?;
    let mut scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    if causal {
        let bias: Vec<f32> = (0..n * nk)
            .map(|x| {
                if x % nk + n > x / nk + nk {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        scores = scores.broadcast_add(&Tensor::from_vec(bias, (n, nk), q.device())?)?;
    }
    candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(v)
}

/// Layer norm bench shape: `(B, N, hidden)` activations of BERT-base.
pub const LAYER_NORM_SHAPE: [usize; 3] = [4, 512, 768];

/// `x`, `weight`, `bias` variables for a layer norm over `shape`.
pub fn layer_norm_inputs(shape: &[usize]) -> Result<[Var; 3]> {
    let d = shape.last().copied().unwrap_or(1);
    Ok([
        Var::from_tensor(&uniform(shape, 4)?)?,
        Var::from_tensor(&(uniform(&[d], 5)? + 1.0)?)?,
        Var::from_tensor(&uniform(&[d], 6)?)?,
    ])
}

/// Layer norm with `imp` (candle: composed `mean`/`sqr`/`sqrt`/... ops).
pub fn layer_norm(imp: Impl, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    match imp {
        Impl::Mosaic => mosaic_kernels::layer_norm(x, w, b, 1e-12),
        _ => mosaic_kernels::reference::layer_norm(x, w, b, 1e-12),
    }
}

/// Cross-entropy bench shape: `(B, N)` tokens over a BERT vocabulary.
pub const CROSS_ENTROPY_SHAPE: [usize; 3] = [4, 128, 30_522];

/// Logits `(B·N, C)` and labels (i64 for mosaic, u32 for candle).
pub fn cross_entropy_inputs(shape: &[usize; 3]) -> Result<(Var, Tensor)> {
    let rows = shape[0] * shape[1];
    let logits = Var::from_tensor(&(uniform(&[rows, shape[2]], 7)? * 4.0)?)?;
    let labels: Vec<i64> = (0..rows).map(|i| ((i * 7919) % shape[2]) as i64).collect();
    Ok((logits, Tensor::new(labels.as_slice(), &Device::Cpu)?))
}

/// Mean cross-entropy with `imp` (candle: `candle_nn::loss::cross_entropy`,
/// log-softmax + nll).
pub fn cross_entropy(imp: Impl, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    match imp {
        Impl::Mosaic => mosaic_kernels::cross_entropy(logits, labels, 0.0),
        _ => candle_nn::loss::cross_entropy(logits, &labels.to_dtype(DType::U32)?),
    }
}

/// Runs `f`, then backpropagates the sum of its output (as the PyTorch peer
/// script does); returns the number of gradients (to keep them alive until
/// the caller is done timing).
pub fn forward_backward(f: impl FnOnce() -> Result<Tensor>) -> Result<usize> {
    let y = f()?;
    let grads = y.sum_all()?.backward()?;
    Ok(std::hint::black_box(grads).get_ids().count())
}

/// GFLOP/s of candle's matmul on an `n × n × n` product (a GEMM reference
/// point beside PyTorch's), median of `reps` runs.
pub fn candle_gemm_gflops(n: usize, reps: usize) -> Result<f64> {
    let a = uniform(&[n, n], 8)?;
    let b = uniform(&[n, n], 9)?;
    let _ = a.matmul(&b)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        std::hint::black_box(a.matmul(&b)?);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (n as f64).powi(3) / times[times.len() / 2] / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_and_mosaic_attention_agree() -> Result<()> {
        for causal in [false, true] {
            let s = AttnShape {
                b: 1,
                h: 2,
                n: 33,
                d: 8,
                causal,
            };
            let [q, k, v] = attention_inputs(&s)?;
            let a = attention(Impl::Mosaic, &q, &k, &v, causal)?;
            let b = attention(Impl::Candle, &q, &k, &v, causal)?;
            let err = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-5, "causal={causal}: {err}");
        }
        Ok(())
    }

    #[test]
    fn candle_and_mosaic_losses_agree() -> Result<()> {
        let (x, y) = cross_entropy_inputs(&[2, 3, 50])?;
        let a = cross_entropy(Impl::Mosaic, &x, &y)?.to_scalar::<f32>()?;
        let b = cross_entropy(Impl::Candle, &x, &y)?.to_scalar::<f32>()?;
        assert!((a - b).abs() < 1e-5);
        let [x, w, bias] = layer_norm_inputs(&[3, 40])?;
        let a = layer_norm(Impl::Mosaic, &x, &w, &bias)?;
        let b = layer_norm(Impl::Candle, &x, &w, &bias)?;
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        Ok(())
    }
}
