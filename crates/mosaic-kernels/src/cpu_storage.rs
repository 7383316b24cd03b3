//! f32 CPU tensors as the kernels see them: argument checks, contiguous
//! slices of candle storage, and output buffers.

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, bail};

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

/// A buffer (output or scratch) the kernels must write before reading: NaN
/// in debug builds, so the tests catch any element a kernel forgets.
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    if cfg!(debug_assertions) {
        vec![f32::NAN; len]
    } else {
        vec![0.0; len]
    }
}
