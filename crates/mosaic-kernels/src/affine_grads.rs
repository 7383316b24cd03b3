//! The gradients of an affine normalisation (layer norm, batch norm) from the
//! one packed buffer its backward kernel writes.

use candle_core::{Result, Tensor};

/// Splits the flat `[dx | dweight | dbias]` buffer of an affine-normalisation backward kernel (layer norm, batch
/// norm; `c` weights) into the three gradients, leaving out those of untracked weight or bias.
pub(crate) fn split_affine_grads(
    packed: &Tensor,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (n, c) = (x.elem_count(), w.elem_count());
    let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
    let dw = w
        .track_op()
        .then(|| packed.narrow(0, n, c)?.reshape(w.shape()))
        .transpose()?;
    let db = b
        .track_op()
        .then(|| packed.narrow(0, n + c, c)?.reshape(b.shape()))
        .transpose()?;
    Ok((Some(dx), dw, db))
}
