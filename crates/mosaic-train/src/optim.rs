//! Optimizers over `candle_core::Var`s with PyTorch semantics.
//!
//! - [`AdamW`]: `torch.optim.AdamW` (decoupled weight decay, bias-corrected
//!   moments, per-parameter step counts).
//! - [`Sgd`]: `torch.optim.SGD` (momentum, dampening, optional Nesterov, L2
//!   weight decay added to the gradient).
//!
//! Parameters are named, and split into [`ParamGroup`]s with their own weight
//! decay (and learning-rate scale). [`decay_groups`] builds the usual two groups
//! the Hugging Face `Trainer` uses: no weight decay for biases and normalisation
//! weights ([`default_no_decay`]).
//!
//! Parameters without a gradient in the `GradStore` are skipped entirely (their
//! state, including AdamW's step count, does not advance), as in PyTorch.
//!
//! Optimizer state (moments, step counts, momentum buffers) can be exported
//! as named tensors with [`Optimizer::state`] and restored with
//! [`Optimizer::load_state`] for an exact resume. State is created lazily on
//! a parameter's first update, so only parameters that have been updated
//! appear in the export.
//!
//! Half-precision parameters (f16 / bf16) keep their optimizer state in f32
//! and the update is computed in f32, then written back in the parameter's
//! dtype.

mod adamw;
mod groups;
mod sgd;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

pub use adamw::{AdamW, AdamWConfig};
pub use groups::{ParamGroup, decay_groups, default_no_decay};
pub use sgd::{Sgd, SgdConfig};

/// A first-order optimizer over a fixed set of parameters.
pub trait Optimizer {
    /// Applies one update using the gradients in `grads`. Parameters with no
    /// gradient in `grads` are left untouched (frozen).
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// Sets the base learning rate (each group scales it by its `lr_scale`).
    fn set_lr(&mut self, lr: f64);
    /// The base learning rate.
    fn lr(&self) -> f64;
    /// The optimizer state as named tensors, `"<param name>.<slot>"`.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Restores state exported by [`Optimizer::state`]. Parameters absent from
    /// `state` get fresh (empty) state. Unknown parameter or slot names, a
    /// missing slot, or a shape mismatch are errors.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;
}

impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        (**self).step(grads)
    }
    fn set_lr(&mut self, lr: f64) {
        (**self).set_lr(lr)
    }
    fn lr(&self) -> f64 {
        (**self).lr()
    }
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        (**self).state()
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        (**self).load_state(state)
    }
}
