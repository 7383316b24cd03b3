//! # mosaic-kernels
//!
//! Differentiable core ops for the mosaic models, written as candle custom ops
//! ([`candle_core::CustomOp1`] / [`candle_core::CustomOp3`]) with hand-written
//! CPU forward kernels and analytic backward passes, parallelised over rows
//! with rayon:
//!
//! * [`layer_norm`]: layer norm over the last dim (gradients for input, weight and bias);
//! * [`softmax_last_dim`]: softmax over the last dim;
//! * [`gelu_erf`]: exact (erf) GELU;
//! * [`attention`]: scaled dot-product attention with causal / key padding
//!   masks and seeded dropout (currently an unfused composition; see
//!   [`AttentionOptions`]).
//!
//! The [`reference`](mod@reference) module holds slow versions of the same ops composed from
//! plain candle tensor ops, used by the tests and benches.
//!
//! ## Conventions
//!
//! * **f32 on the CPU only.** Any other dtype (or device) is rejected with an
//!   error naming the op and the argument; there is no silent conversion, so
//!   convert with `.to_dtype(DType::F32)` first. (The attention key padding
//!   mask is the exception: any float or integer dtype, non-zero = attend.)
//! * Non-contiguous inputs are accepted; the wrappers call `.contiguous()`.
//! * Backward passes are first order: the gradient tensors are produced by
//!   non-differentiable kernels, so double backward is not supported.
//! * Kernels are deterministic: results do not depend on the number of rayon
//!   threads.
//! * Dropout is counter based: element `i` (row-major over the probabilities)
//!   is kept iff the top 24 bits of SplitMix64 output `i` seeded with `seed`,
//!   read as a number in `[0, 1)`, are `>= p`; kept values are scaled by
//!   `1 / (1 - p)`. [`dropout_mask`] materialises that multiplier.
//!
//! ## Example
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use mosaic_kernels::layer_norm;
//!
//! let dev = Device::Cpu;
//! let x = Var::new(&[[1f32, 2., 3., 4.], [-1., 0., 0., 1.]], &dev)?;
//! let weight = Var::new(&[1f32, 1., 2., 2.], &dev)?;
//! let bias = Var::new(&[0f32, 0., 0., 0.5], &dev)?;
//!
//! let y = layer_norm(x.as_tensor(), weight.as_tensor(), bias.as_tensor(), 1e-5)?;
//! assert_eq!(y.dims(), &[2, 4]);
//! // Row 0 normalises to about [-1.342, -0.447, 0.447, 1.342], then weight and bias apply.
//! let row0 = y.get(0)?.to_vec1::<f32>()?;
//! let expected = [-1.3416f32, -0.4472, 0.8944, 3.1833];
//! for (a, b) in row0.iter().zip(expected) {
//!     assert!((a - b).abs() < 1e-3, "{a} vs {b}");
//! }
//!
//! // Gradients flow to the input, the weight and the bias.
//! let grads = y.sum_all()?.backward()?;
//! let dbias = grads.get(&bias).unwrap().to_vec1::<f32>()?;
//! assert_eq!(dbias, vec![2f32; 4]);
//! assert!(grads.get(&x).is_some() && grads.get(&weight).is_some());
//! # Ok::<(), candle_core::Error>(())
//! ```

mod attention;
mod gelu;
mod layer_norm;
pub mod reference;
mod softmax;
mod util;

pub use attention::{AttentionOptions, MASK_VALUE, dropout_mask};
pub use candle_core::{Result, Tensor};

/// Layer norm over the last dim: `(x - mean) / sqrt(var + eps) * weight + bias`
/// with the biased variance. `weight`, `bias`: shape `(last_dim,)`.
/// Gradients for `x`, `weight` and `bias`. f32/CPU only.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    layer_norm::layer_norm(x, weight, bias, eps)
}

/// Softmax over the last dim, with backward `dx = y * (dy - sum(dy * y))`.
/// A row that is entirely `-inf` yields zeros rather than NaN. f32/CPU only.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    softmax::softmax_last_dim(x)
}

/// Exact GELU (erf form, as HF `"gelu"`): `0.5 x (1 + erf(x / sqrt 2))`, with
/// backward `dy * (Phi(x) + x phi(x))`. f32/CPU only.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    gelu::gelu_erf(x)
}

/// Differentiable scaled dot-product attention.
///
/// `q`: `(B, H, Nq, D)`, `k`: `(B, H, Nk, D)`, `v`: `(B, H, Nk, Dv)` (usually
/// `Dv == D`). Returns `(B, H, Nq, Dv)`. Computes
/// `dropout(softmax(mask(q kᵀ · scale))) v`, where masked scores are set to
/// [`MASK_VALUE`] (a fully masked row therefore averages `v` uniformly rather
/// than producing NaN) and get no gradient. Gradients flow to `q`, `k` and `v`.
/// See [`AttentionOptions`] for the mask and dropout semantics. f32/CPU only.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Tensor> {
    attention::attention(q, k, v, opts)
}
