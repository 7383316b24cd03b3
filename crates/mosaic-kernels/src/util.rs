//! Small shared helpers: argument checks, storage access and row-parallel loops.

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, bail};
use rayon::prelude::*;

/// Below this many elements a row loop runs on the calling thread: rayon's
/// fork/join overhead dominates for tiny tensors.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// Target number of elements handled by one rayon task.
const ELEMS_PER_TASK: usize = 1 << 12;

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

/// Checks that `t` is an f32 tensor living on the CPU.
pub(crate) fn check_f32_cpu(op: &str, name: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        bail!(
            "mosaic_kernels::{op}: `{name}` must be f32, got {:?} (convert with `.to_dtype(DType::F32)`)",
            t.dtype()
        )
    }
    if !t.device().is_cpu() {
        bail!("mosaic_kernels::{op}: `{name}` must be on the CPU device")
    }
    Ok(())
}

/// Returns the contiguous f32 slice described by `layout`.
pub(crate) fn f32_slice<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("mosaic_kernels::{op}: expected f32 storage"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("mosaic_kernels::{op}: input must be contiguous"),
    }
}

/// Returns the contiguous f32 slice of a CPU `storage` described by `layout`.
pub(crate) fn cpu_f32<'a>(op: &str, storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => f32_slice(op, cpu, layout),
        _ => bail!("mosaic_kernels::{op}: expected a CPU tensor"),
    }
}

/// Size of the last dimension (1 for a scalar).
pub(crate) fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

/// Number of rows to give one rayon task for rows of length `d`.
pub(crate) fn rows_per_task(d: usize) -> usize {
    (ELEMS_PER_TASK / d.max(1)).max(1)
}

/// Calls `f(row_index, out_row)` for every row of length `d` of `out`,
/// in parallel when the buffer is large enough. `d` must be non-zero.
pub(crate) fn for_each_row<F>(out: &mut [f32], d: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    debug_assert!(d > 0);
    if out.len() < PAR_MIN_ELEMS {
        out.chunks_mut(d).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        out.par_chunks_mut(d)
            .with_min_len(rows_per_task(d))
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    }
}
