//! # mosaic-kernels
//!
//! Differentiable core ops for the mosaic models, written as candle custom ops
//! ([`candle_core::CustomOp1`] / [`candle_core::CustomOp3`]) with hand-written
//! CPU forward kernels and analytic backward passes, parallelised over rows
//! with rayon:
//!
//! * [`layer_norm`]: layer norm over the last dim (gradients for input, weight and bias);
//! * [`batch_norm_train`] / [`batch_norm_eval`]: batch norm over `(N, C, ...)` per channel, with the batch
//!   statistics (returned for running averages) or given running statistics;
//! * [`softmax_last_dim`]: softmax over the last dim;
//! * [`gelu_erf`]: exact (erf) GELU;
//! * [`attention`]: fused flash-style scaled dot-product attention (online
//!   softmax, O(N) memory, recomputing backward) with causal / key padding
//!   masks, segment ids (packed sequences: a query sees only keys of its own
//!   segment; whole key blocks of other segments are skipped) and seeded
//!   dropout (see [`AttentionOptions`]);
//! * [`cross_entropy`] / [`cross_entropy_sum`]: fused softmax cross-entropy with
//!   `ignore_index` −100 and label smoothing;
//! * [`linear`]: the projection `x Wᵀ + b` (or `x W + b`, [`LinearLayout`]) with
//!   the bias in the GEMM's output and a one-op backward that skips the weight
//!   gradient of a frozen (untracked) weight and the input gradient of an
//!   untracked input.
//!
//! The fused kernels tile their work into register-blocked micro-kernels
//! compiled for AVX-512, AVX2 + FMA or portable Rust, picked at run time
//! ([`active_isa`]; the environment variable `MOSAIC_KERNELS_ISA=avx2|portable`
//! forces a fallback). With the `cuda` feature, [`attention`] runs on a CUDA
//! GPU when one is found (kernels compiled at run time by NVRTC; see the
//! `cuda` module), and on the CPU otherwise.
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

// Modules in layers, lowest first: a file imports only from its own layer or
// the ones above, and never back. At the bottom, CPU plumbing and the SIMD
// primitives, which know no op.
mod affine_grads;
mod cpu_storage;
mod dropout;
mod row_parallel;
mod simd;

// The GEMM on the SIMD primitives.
mod gemm;

// The attention kernels: `flash` on the CPU (on the GEMM), `cuda` on a GPU
// (sharing `flash`'s types).
#[cfg(feature = "cuda")]
pub mod cuda;
mod flash;

// The candle ops (and their composed references).
mod adamw;
mod attention;
pub mod batch_norm;
mod cross_entropy;
mod gelu;
mod layer_norm;
mod linear;
pub mod reference;
mod softmax;

pub use adamw::{AdamWStep, adamw_step, adamw_step_slices};
pub use attention::{AttentionOptions, MASK_VALUE};
pub use batch_norm::BatchNormOutput;
pub use candle_core::{Result, Tensor};
pub use cross_entropy::IGNORE_INDEX;
pub use dropout::dropout_mask;
pub use linear::LinearLayout;
pub use simd::active_isa;

/// Layer norm over the last dim: `(x - mean) / sqrt(var + eps) * weight + bias`
/// with the biased variance. `weight`, `bias`: shape `(last_dim,)`.
/// Gradients for `x`, `weight` and `bias`. f32/CPU only.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    layer_norm::layer_norm(x, weight, bias, eps)
}

/// Training-mode batch norm of `x` `(N, C, ...)` with the batch statistics of each channel (over `N` and the
/// trailing dims; biased variance), returned with the output for the running-statistics update. Gradients for
/// `x`, `weight` and `bias`. f32 on the CPU (fused); on other devices the composed version
/// ([`batch_norm::composed::batch_norm_train`]).
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput> {
    batch_norm::batch_norm_train(x, weight, bias, eps)
}

/// Eval-mode batch norm: `(x - mean) / sqrt(var + eps) * weight + bias` per channel (dim 1) with given
/// (running) statistics, which get no gradient. Composed candle ops: any device and dtype.
pub fn batch_norm_eval(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    batch_norm::batch_norm_eval(x, mean, var, weight, bias, eps)
}

/// The projection of `x: [..., in]` by `weight` (laid out as `layout` says) plus `bias`: `[..., out]`. One GEMM
/// (candle's, the `gemm` crate, with its AVX-512 kernels) accumulating onto the bias; strided operands, so
/// neither the forward nor the backward copies a transpose. The backward computes only the gradients that are
/// recorded: a detached (frozen) weight gets no weight-gradient GEMM. f32/CPU only.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use mosaic_kernels::{LinearLayout, linear};
///
/// let dev = Device::Cpu;
/// let x = Var::new(&[[1f32, 2.], [3., 4.]], &dev)?;
/// let w = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.]], &dev)?; // (out 3, in 2), frozen: not a Var
/// let b = Var::new(&[0f32, 0., 0.5], &dev)?;
/// let y = linear(x.as_tensor(), &w, Some(b.as_tensor()), LinearLayout::OutIn)?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![1., 2., 3.5], vec![3., 4., 7.5]]);
/// let grads = y.sum_all()?.backward()?;
/// assert_eq!(grads.get(&b).unwrap().to_vec1::<f32>()?, vec![2., 2., 2.]);
/// assert_eq!(grads.get(&x).unwrap().to_vec2::<f32>()?, vec![vec![2., 2.], vec![2., 2.]]);
/// assert!(grads.get(&w).is_none());
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    layout: LinearLayout,
) -> Result<Tensor> {
    linear::linear(x, weight, bias, layout)
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

/// Differentiable scaled dot-product attention, fused (flash-style).
///
/// `q`: `(B, H, Nq, D)`, `k`: `(B, H, Nk, D)`, `v`: `(B, H, Nk, Dv)` (usually
/// `Dv == D`). Returns `(B, H, Nq, Dv)`. Computes
/// `dropout(softmax(mask(q kᵀ · scale))) v`, where masked scores are set to
/// [`MASK_VALUE`] (a fully masked row therefore averages `v` uniformly rather
/// than producing NaN) and get no gradient. Gradients flow to `q`, `k` and `v`.
/// See [`AttentionOptions`] for the mask and dropout semantics. f32/CPU only.
///
/// The `Nq × Nk` scores are never stored: the forward walks key blocks with
/// an online softmax and keeps only the output and a per-row log-sum-exp; the
/// backward recomputes the probabilities block by block. Extra memory is
/// O(N) per head; blocks above the causal diagonal or entirely padding are
/// skipped. [`reference::attention`] is the composed (N × N) equivalent.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Tensor> {
    attention::attention(q, k, v, opts)
}

/// Mean softmax cross-entropy of `logits` `(..., C)` against class indices
/// `labels` `(...)` (i64, u32 or u8), fused: the probabilities are never
/// stored. Rows labelled [`IGNORE_INDEX`] (−100) are left out of the loss and
/// of the mean; `label_smoothing` ε in `[0, 1]` mixes the one-hot target with
/// the uniform distribution (`(1 − ε) onehot + ε / C`), as PyTorch's
/// `cross_entropy(..., ignore_index=-100, label_smoothing=ε)`. Like PyTorch,
/// the mean over zero counted rows is NaN (see [`cross_entropy_sum`]).
/// Gradient flows to `logits`. f32/CPU only.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use mosaic_kernels::{IGNORE_INDEX, cross_entropy};
///
/// let logits = Var::new(&[[2f32, 0.0, -1.0], [0.5, 0.5, 0.5], [1.0, 2.0, 3.0]], &Device::Cpu)?;
/// let labels = Tensor::new(&[0i64, 2, IGNORE_INDEX], &Device::Cpu)?;
/// let loss = cross_entropy(logits.as_tensor(), &labels, 0.0)?;
/// // mean of -ln softmax(row 0)[0] and -ln(1/3)
/// let row0 = (2f32.exp() + 1.0 + (-1f32).exp()).ln() - 2.0;
/// let want = (row0 + 3f32.ln()) / 2.0;
/// assert!((loss.to_scalar::<f32>()? - want).abs() < 1e-6);
/// let grads = loss.backward()?;
/// // The ignored row gets no gradient.
/// let g = grads.get(&logits).unwrap().to_vec2::<f32>()?;
/// assert_eq!(g[2], vec![0.0; 3]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    cross_entropy::cross_entropy(logits, labels, label_smoothing)
}

/// Like [`cross_entropy`], but returns the *sum* of the per-row losses (a
/// differentiable scalar, 0 when every row is ignored) and the number of rows
/// that counted, for callers that average over several batches themselves
/// (gradient accumulation).
pub fn cross_entropy_sum(
    logits: &Tensor,
    labels: &Tensor,
    label_smoothing: f64,
) -> Result<(Tensor, usize)> {
    cross_entropy::cross_entropy_sum(logits, labels, label_smoothing)
}
