//! Flash-style fused attention on the CPU: the forward and backward kernels
//! of [`attention`](crate::attention) ([`forward`], [`backward`]) over the
//! shapes, options and masks of one call ([`FlashConfig`]).
//!
//! Semantics match [`reference::attention`](crate::reference::attention)
//! exactly: masked scores get probability 0, a row with no visible key at all
//! averages every value uniformly (what the finite [`MASK_VALUE`](crate::MASK_VALUE)
//! gives) and passes no gradient to `q`/`k`, and dropout uses the counter-based
//! keep decision of [`dropout_mask`](crate::dropout_mask) on the flat
//! `(B, H, Nq, Nk)` index.
//!
//! All products go through `gemm` micro-kernels compiled for the best
//! instruction set at hand (`simd::Isa`). Work is split by shape only, never
//! by thread count, so results are deterministic.

mod backward;
mod config;
mod forward;
#[cfg(test)]
mod tests;

pub(crate) use backward::{BwdInputs, backward};
pub(crate) use config::{FlashConfig, Padding, Segments};
pub(crate) use forward::forward;
// The CUDA kernels return the CPU kernels' output types.
#[cfg(feature = "cuda")]
pub(crate) use {backward::Grads, forward::Forward};
