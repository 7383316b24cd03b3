//! Whether a forward pass records a backward graph, as `torch.no_grad()` and `requires_grad_(False)` decide it.
//!
//! Every parameter is a candle `Var`, so by default every op that touches one records its inputs for the
//! backward pass, and the whole graph — every intermediate activation — lives as long as the output. Inside
//! [`no_grad`] the layers hand the kernels detached views of their parameters instead: nothing is recorded,
//! intermediates are freed as soon as they are used, and no backward work is possible. Evaluation, predict,
//! embed and generate run this way.
//!
//! A parameter marked frozen with [`set_frozen`] is likewise read detached in every forward pass, so its
//! weight gradient is never computed (the fused linear op skips that GEMM) and the graph below the lowest
//! trainable parameter is not recorded at all.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mosaic_models::{Bert, BertTask, no_grad};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bert = Bert::from_folder("../../fixtures/models/tiny-bert".as_ref(), Some(BertTask::Base), None, 0, &Device::Cpu)?;
//! let ids = Tensor::new(&[[2u32, 10, 4, 3]], &Device::Cpu)?;
//! let hidden = no_grad(|| bert.hidden_states(&ids, None, None))?;
//! assert!(!hidden.track_op()); // no graph behind it
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};

use candle_core::{Tensor, TensorId, Var};

thread_local! {
    /// Nesting depth of [`no_grad`] on this thread (forward passes run on the calling thread).
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Ids of frozen parameters. Layers hold their parameters as tensors (clones of the `Var`, same id), not the
/// store, so the mark is kept by id where every layer can see it.
static FROZEN: LazyLock<RwLock<HashSet<TensorId>>> = LazyLock::new(Default::default);

/// While alive, forward passes on this thread record no graph. Prefer [`no_grad`].
pub struct NoGradGuard {
    // Not `Send`: the mark is per thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl NoGradGuard {
    pub fn new() -> Self {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
        NoGradGuard {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `f` without recording a backward graph (`torch.no_grad()`).
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}

/// False inside [`no_grad`].
pub fn grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// Marks `var` frozen (no gradient is computed for it from the next forward pass on) or trainable again.
pub fn set_frozen(var: &Var, frozen: bool) {
    let mut set = FROZEN.write().unwrap_or_else(|e| e.into_inner());
    if frozen {
        set.insert(var.id());
    } else {
        set.remove(&var.id());
    }
}

/// Whether `var` is marked frozen.
pub fn is_frozen(var: &Var) -> bool {
    is_frozen_id(var.id())
}

fn is_frozen_id(id: TensorId) -> bool {
    let set = FROZEN.read().unwrap_or_else(|e| e.into_inner());
    !set.is_empty() && set.contains(&id)
}

/// A parameter as a forward pass should read it: detached inside [`no_grad`] or when frozen, else itself.
pub fn param(t: &Tensor) -> Tensor {
    if !grad_enabled() || is_frozen_id(t.id()) {
        t.detach()
    } else {
        t.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn no_grad_nests_and_restores() {
        assert!(grad_enabled());
        no_grad(|| {
            assert!(!grad_enabled());
            no_grad(|| assert!(!grad_enabled()));
            assert!(!grad_enabled());
        });
        assert!(grad_enabled());
    }

    #[test]
    fn params_are_detached_inside_no_grad_or_when_frozen() {
        let v = Var::new(&[1f32, 2.], &Device::Cpu).unwrap();
        assert!(param(v.as_tensor()).track_op());
        assert!(!no_grad(|| param(v.as_tensor())).track_op());
        set_frozen(&v, true);
        assert!(is_frozen(&v));
        assert!(!param(v.as_tensor()).track_op());
        set_frozen(&v, false);
        assert!(param(v.as_tensor()).track_op());
    }
}
