//! The CUDA path (feature `cuda`): the fused attention forward and backward of
//! `src/cuda/flash_attention.cu`, compiled at run time by NVRTC and launched
//! through `cudarc`, which loads the driver and NVRTC libraries
//! dynamically, so building needs no CUDA toolkit and a machine without a GPU
//! simply keeps the CPU kernels.
//!
//! candle's own CUDA backend needs `nvcc` at build time, so the tensors stay
//! on the CPU: [`attention`](crate::attention) uploads `q`, `k`, `v`, runs the
//! kernels on device 0 and downloads the output (and the same for the
//! backward), which pays off from a few hundred keys on.
//!
//! [`status`] probes for a usable device once, without panicking. Set
//! `MOSAIC_KERNELS_DEVICE=cpu` to keep the CPU kernels even with a GPU.

use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::flash::{BwdInputs, FlashConfig, Forward, Grads};

/// The CUDA C source of the kernels.
pub(crate) const SOURCE: &str = include_str!("flash_attention.cu");

/// Largest head dim the kernels take (`MOSAIC_MAX_D` in the source).
pub const MAX_HEAD_DIM: usize = 128;
/// Rows of a shared-memory tile (`MOSAIC_TILE` in the source).
const TILE: usize = 32;
/// Threads per block.
const BLOCK: u32 = 128;

/// The loaded kernels.
pub(crate) struct Runtime {
    stream: Arc<CudaStream>,
    fwd: CudaFunction,
    bwd_pre: CudaFunction,
    bwd_dkdv: CudaFunction,
    bwd_dq: CudaFunction,
    name: String,
}

/// Whether a CUDA device was found, and which, or why not.
pub fn status() -> Result<String, String> {
    runtime().map(|rt| rt.name.clone())
}

/// `true` when the CUDA kernels are usable (and not disabled with
/// `MOSAIC_KERNELS_DEVICE=cpu`).
pub fn is_available() -> bool {
    let disabled =
        std::env::var("MOSAIC_KERNELS_DEVICE").is_ok_and(|v| v.eq_ignore_ascii_case("cpu"));
    !disabled && runtime().is_ok()
}

pub(crate) fn runtime() -> Result<&'static Runtime, String> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        // cudarc panics when asked for a library it cannot load: check first,
        // and contain any other panic of the probe.
        std::panic::catch_unwind(init)
            .unwrap_or_else(|_| Err("the CUDA probe panicked".to_string()))
    })
    .as_ref()
    .map_err(String::clone)
}

fn init() -> Result<Runtime, String> {
    // SAFETY: these only try to open the shared libraries.
    let (driver, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    if !driver {
        return Err("no CUDA driver library (libcuda) found".into());
    }
    if !nvrtc {
        return Err("no NVRTC library found".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("CUDA driver: {e}"))?;
    if count < 1 {
        return Err("no CUDA device".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("CUDA device 0: {e}"))?;
    let name = ctx.name().unwrap_or_else(|_| "CUDA device 0".into());
    let opts = CompileOptions {
        options: vec![
            format!("-DMOSAIC_MAX_D={MAX_HEAD_DIM}"),
            format!("-DMOSAIC_TILE={TILE}"),
        ],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(SOURCE, opts).map_err(|e| format!("NVRTC: {e}"))?;
    let module = ctx
        .load_module(ptx)
        .map_err(|e| format!("loading the kernels: {e}"))?;
    let load = |f: &str| {
        module
            .load_function(f)
            .map_err(|e| format!("kernel {f}: {e}"))
    };
    Ok(Runtime {
        stream: ctx.default_stream(),
        fwd: load("mosaic_flash_fwd")?,
        bwd_pre: load("mosaic_flash_bwd_pre")?,
        bwd_dkdv: load("mosaic_flash_bwd_dkdv")?,
        bwd_dq: load("mosaic_flash_bwd_dq")?,
        name,
    })
}

/// Whether the CUDA kernels take this problem.
pub(crate) fn supports(cfg: &FlashConfig) -> bool {
    cfg.d <= MAX_HEAD_DIM && cfg.dv <= MAX_HEAD_DIM && cfg.dv > 0 && cfg.b * cfg.h * cfg.nq > 0
}

fn err(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("mosaic_kernels (cuda): {e}"))
}

/// Per-batch padding in the kernels' form: key bias `(B, Nk)` and first
/// visible key `(B)`.
fn padding_arrays(cfg: &FlashConfig) -> (Vec<f32>, Vec<i32>) {
    match &cfg.padding {
        Some(p) => (
            p.bias().to_vec(),
            (0..cfg.b)
                .map(|bi| p.first_visible(bi).map_or(-1, |f| f as i32))
                .collect(),
        ),
        None => (vec![0.0; cfg.b * cfg.nk], vec![0; cfg.b]),
    }
}

/// Per-batch segment ids of the queries `(B, Nq)` and the keys `(B, Nk)`:
/// the relabelled ids (`Nq == Nk` then), or all zeros without segments.
fn segment_arrays(cfg: &FlashConfig) -> candle_core::Result<(Vec<i32>, Vec<i32>)> {
    match &cfg.segments {
        Some(s) => {
            let ids = (0..cfg.b)
                .flat_map(|bi| s.row(bi).iter().map(|&x| int(x as usize)))
                .collect::<candle_core::Result<Vec<i32>>>()?;
            Ok((ids.clone(), ids))
        }
        None => Ok((vec![0; cfg.b * cfg.nq], vec![0; cfg.b * cfg.nk])),
    }
}

fn int(x: usize) -> candle_core::Result<i32> {
    i32::try_from(x).map_err(|_| err(format!("dimension {x} too large for the CUDA kernels")))
}

fn grid(rows: usize, bh: usize) -> candle_core::Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (
            u32::try_from(rows.div_ceil(BLOCK as usize)).map_err(err)?,
            u32::try_from(bh).map_err(err)?,
            1,
        ),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// The forward pass on the GPU.
pub(crate) fn forward(
    cfg: &FlashConfig,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> candle_core::Result<Forward> {
    let rt = runtime().map_err(err)?;
    let s = &rt.stream;
    let (bias, first) = padding_arrays(cfg);
    let (qseg, kseg) = segment_arrays(cfg)?;
    let (qseg_d, kseg_d) = (
        s.clone_htod(&qseg).map_err(err)?,
        s.clone_htod(&kseg).map_err(err)?,
    );
    let (qd, kd, vd) = (
        s.clone_htod(q).map_err(err)?,
        s.clone_htod(k).map_err(err)?,
        s.clone_htod(v).map_err(err)?,
    );
    let (bias_d, first_d) = (
        s.clone_htod(&bias).map_err(err)?,
        s.clone_htod(&first).map_err(err)?,
    );
    let bh = cfg.b * cfg.h;
    let mut out = s.alloc_zeros::<f32>(bh * cfg.nq * cfg.dv).map_err(err)?;
    let mut lse = s.alloc_zeros::<f32>(bh * cfg.nq).map_err(err)?;
    let (h, nq, nk, d, dv) = (
        int(cfg.h)?,
        int(cfg.nq)?,
        int(cfg.nk)?,
        int(cfg.d)?,
        int(cfg.dv)?,
    );
    let causal = i32::from(cfg.causal);
    let mut launch = grid(cfg.nq, bh)?;
    launch.shared_mem_bytes = u32::try_from((TILE * (cfg.d + cfg.dv + 1)) * 4).map_err(err)?;
    let mut b = s.launch_builder(&rt.fwd);
    b.arg(&qd)
        .arg(&kd)
        .arg(&vd)
        .arg(&bias_d)
        .arg(&first_d)
        .arg(&qseg_d)
        .arg(&kseg_d)
        .arg(&mut out)
        .arg(&mut lse)
        .arg(&h)
        .arg(&nq)
        .arg(&nk)
        .arg(&d)
        .arg(&dv)
        .arg(&cfg.scale)
        .arg(&causal)
        .arg(&cfg.dropout)
        .arg(&cfg.seed);
    // SAFETY: the argument list matches `mosaic_flash_fwd`, and every buffer
    // has the length the kernel indexes (from the same dimensions).
    unsafe { b.launch(launch) }.map_err(err)?;
    Ok(Forward {
        out: s.clone_dtoh(&out).map_err(err)?,
        lse: s.clone_dtoh(&lse).map_err(err)?,
    })
}

/// The backward pass on the GPU.
pub(crate) fn backward(cfg: &FlashConfig, x: &BwdInputs<'_>) -> candle_core::Result<Grads> {
    let rt = runtime().map_err(err)?;
    let s = &rt.stream;
    let (bias, _) = padding_arrays(cfg);
    let (qseg, kseg) = segment_arrays(cfg)?;
    let (qseg_d, kseg_d) = (
        s.clone_htod(&qseg).map_err(err)?,
        s.clone_htod(&kseg).map_err(err)?,
    );
    let up = |data: &[f32]| s.clone_htod(data).map_err(err);
    let (qd, kd, vd, od, dod, lsed, bias_d) = (
        up(x.q)?,
        up(x.k)?,
        up(x.v)?,
        up(x.out)?,
        up(x.dout)?,
        up(x.lse)?,
        up(&bias)?,
    );
    let bh = cfg.b * cfg.h;
    let rows = bh * cfg.nq;
    let mut drow = s.alloc_zeros::<f32>(rows).map_err(err)?;
    let mut dq = s.alloc_zeros::<f32>(rows * cfg.d).map_err(err)?;
    let mut dk = s.alloc_zeros::<f32>(bh * cfg.nk * cfg.d).map_err(err)?;
    let mut dv_d = s.alloc_zeros::<f32>(bh * cfg.nk * cfg.dv).map_err(err)?;
    let (h, nq, nk, d, dv) = (
        int(cfg.h)?,
        int(cfg.nq)?,
        int(cfg.nk)?,
        int(cfg.d)?,
        int(cfg.dv)?,
    );
    let causal = i32::from(cfg.causal);
    let rows_i = i64::try_from(rows).map_err(err)?;

    let mut b = s.launch_builder(&rt.bwd_pre);
    b.arg(&od).arg(&dod).arg(&mut drow).arg(&rows_i).arg(&dv);
    // SAFETY: matches `mosaic_flash_bwd_pre`; buffers sized from `rows`, `dv`.
    unsafe { b.launch(grid(rows, 1)?) }.map_err(err)?;

    let mut launch = grid(cfg.nk, bh)?;
    launch.shared_mem_bytes = u32::try_from((TILE * (cfg.d + cfg.dv + 2)) * 4).map_err(err)?;
    let mut b = s.launch_builder(&rt.bwd_dkdv);
    b.arg(&qd)
        .arg(&kd)
        .arg(&vd)
        .arg(&dod)
        .arg(&lsed)
        .arg(&drow)
        .arg(&bias_d)
        .arg(&qseg_d)
        .arg(&kseg_d)
        .arg(&mut dk)
        .arg(&mut dv_d)
        .arg(&h)
        .arg(&nq)
        .arg(&nk)
        .arg(&d)
        .arg(&dv)
        .arg(&cfg.scale)
        .arg(&causal)
        .arg(&cfg.dropout)
        .arg(&cfg.seed);
    // SAFETY: matches `mosaic_flash_bwd_dkdv`; buffers sized from the dims.
    unsafe { b.launch(launch) }.map_err(err)?;

    let mut launch = grid(cfg.nq, bh)?;
    launch.shared_mem_bytes = u32::try_from((TILE * (cfg.d + cfg.dv + 1)) * 4).map_err(err)?;
    let mut b = s.launch_builder(&rt.bwd_dq);
    b.arg(&qd)
        .arg(&kd)
        .arg(&vd)
        .arg(&dod)
        .arg(&lsed)
        .arg(&drow)
        .arg(&bias_d)
        .arg(&qseg_d)
        .arg(&kseg_d)
        .arg(&mut dq)
        .arg(&h)
        .arg(&nq)
        .arg(&nk)
        .arg(&d)
        .arg(&dv)
        .arg(&cfg.scale)
        .arg(&causal)
        .arg(&cfg.dropout)
        .arg(&cfg.seed);
    // SAFETY: matches `mosaic_flash_bwd_dq`; buffers sized from the dims.
    unsafe { b.launch(launch) }.map_err(err)?;

    Ok(Grads {
        dq: s.clone_dtoh(&dq).map_err(err)?,
        dk: s.clone_dtoh(&dk).map_err(err)?,
        dv: s.clone_dtoh(&dv_d).map_err(err)?,
    })
}
