//! Runtime-dispatched SIMD: a small f32 vector abstraction ([`Simd`]) with
//! AVX-512, AVX2 + FMA and portable implementations, and [`dispatch`], which
//! runs a kernel generic over [`Simd`] compiled for the best instruction set
//! the CPU has.
//!
//! Kernels are written once as a [`SimdFn`] whose `call::<S>()` is
//! `#[inline(always)]`; [`dispatch`] calls it from a function compiled with
//! `#[target_feature(enable = ...)]`, so every vector operation inlines
//! into code built for that instruction set (the same pattern as the `pulp`
//! crate, without the dependency). Inside `call`, use plain loops around
//! vector code: a closure (`map`, `for_each`) is compiled as a function of
//! its own without those target features, and its intrinsics stop inlining.
//!
//! This is the bottom layer of the crate: it knows nothing of the ops built
//! on it (GEMM, attention, cross-entropy).

mod isa;
pub(crate) mod rows;
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use isa::active_isa;
pub(crate) use isa::{Isa, dispatch};
pub(crate) use vector::{Simd, SimdFn};
