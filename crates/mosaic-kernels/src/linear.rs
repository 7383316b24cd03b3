//! The fused projection `y = x Wᵀ + b` (or `x W + b` for a Conv1D-layout weight) as one candle custom op.
//!
//! Forward: the bias is written into the output first and the GEMM accumulates onto it, so there is no separate
//! broadcast-add pass. Backward: one op computes `[dX | dW | db]` into a single buffer, and skips every part whose
//! input records no gradient — a frozen (detached) weight costs no weight-gradient GEMM, and an input that needs
//! no gradient (the first layer above frozen embeddings) costs no input-gradient GEMM. Both GEMMs read their
//! operands through strides, so no transposed copy is made.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use gemm::{Parallelism, gemm};

use crate::cpu_storage::{check_f32_cpu, f32_slice};

/// How the weight is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearLayout {
    /// `(out, in)`, PyTorch's `nn.Linear`: `y = x Wᵀ + b`.
    OutIn,
    /// `(in, out)`, HF GPT-2's `Conv1D`: `y = x W + b`.
    InOut,
}

/// A row-major `(rows, cols)` matrix or its transpose, as `(row stride, column stride)` for gemm.
#[derive(Clone, Copy)]
struct Strides {
    rs: isize,
    cs: isize,
}

fn row_major(cols: usize) -> Strides {
    Strides {
        rs: cols as isize,
        cs: 1,
    }
}

fn transposed(cols_of_stored: usize) -> Strides {
    Strides {
        rs: 1,
        cs: cols_of_stored as isize,
    }
}

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst (m×n) [+]= lhs (m×k) · rhs (k×n)`, all f32, operands through strides; `dst` row-major.
#[allow(clippy::too_many_arguments)]
fn matmul_into(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    ls: Strides,
    rhs: &[f32],
    rs: Strides,
) {
    debug_assert_eq!(dst.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: `dst` holds m×n row-major elements; every (i, p) of lhs and (p, j) of rhs addressed through the
    // given strides lies inside its slice (the callers build the strides from the slices' own shapes).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            ls.cs,
            ls.rs,
            rhs.as_ptr(),
            rs.cs,
            rs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        )
    }
}

/// `(in, out)` of a weight in `layout`, and the strides of `W` read as the `(in × out)` right operand.
fn weight_operand(layout: LinearLayout, w: &Layout) -> Result<(usize, usize, Strides)> {
    let (a, b) = w.shape().dims2()?;
    Ok(match layout {
        LinearLayout::OutIn => (b, a, transposed(b)),
        LinearLayout::InOut => (a, b, row_major(b)),
    })
}

struct LinearFwd {
    layout: LinearLayout,
}

impl LinearFwd {
    fn forward(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let name = "linear";
        let xs = f32_slice(name, x.0, x.1)?;
        let ws = f32_slice(name, w.0, w.1)?;
        let (rows, in_dim) = x.1.shape().dims2()?;
        let (w_in, out_dim, w_strides) = weight_operand(self.layout, w.1)?;
        if w_in != in_dim {
            bail!(
                "mosaic_kernels::linear: input has {in_dim} features but the weight {:?} expects {w_in}",
                w.1.dims()
            )
        }
        let mut out = vec![0f32; rows * out_dim];
        if let Some((bs, bl)) = bias {
            let b = f32_slice(name, bs, bl)?;
            if b.len() != out_dim {
                bail!(
                    "mosaic_kernels::linear: bias has {} elements, the output {out_dim}",
                    b.len()
                )
            }
            for row in out.chunks_exact_mut(out_dim) {
                row.copy_from_slice(b);
            }
        }
        matmul_into(
            &mut out,
            bias.is_some(),
            (rows, out_dim, in_dim),
            xs,
            row_major(in_dim),
            ws,
            w_strides,
        );
        Ok((CpuStorage::F32(out), Shape::from((rows, out_dim))))
    }
}

impl CustomOp2 for LinearFwd {
    fn name(&self) -> &'static str {
        "mosaic-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(self.layout, x, w, None, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for LinearFwd {
    fn name(&self) -> &'static str {
        "mosaic-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward(self.layout, x, w, Some(b), grad)
    }
}

/// Which gradients the backward kernel computes.
#[derive(Clone, Copy)]
struct Wanted {
    dx: bool,
    dw: bool,
    db: bool,
}

/// Backward kernel over `(dy, x, w)`: the flat buffer `[dx if wanted | dw if wanted | db if wanted]`.
struct LinearBwd {
    layout: LinearLayout,
    wanted: Wanted,
}

impl CustomOp3 for LinearBwd {
    fn name(&self) -> &'static str {
        "mosaic-linear-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = "linear (backward)";
        let dy = f32_slice(name, s1, l1)?;
        let x = f32_slice(name, s2, l2)?;
        let w = f32_slice(name, s3, l3)?;
        let (rows, in_dim) = l2.shape().dims2()?;
        let (_, out_dim, w_as_in_out) = weight_operand(self.layout, l3)?;
        let Wanted { dx, dw, db } = self.wanted;
        let len = dx as usize * rows * in_dim + dw as usize * w.len() + db as usize * out_dim;
        let mut out = vec![0f32; len];
        let (dx_buf, rest) = out.split_at_mut(if dx { rows * in_dim } else { 0 });
        let (dw_buf, db_buf) = rest.split_at_mut(if dw { w.len() } else { 0 });
        if dx {
            // dX (rows × in) = dY (rows × out) · Wᵀ, with W read as (in × out): transpose its strides.
            let wt = Strides {
                rs: w_as_in_out.cs,
                cs: w_as_in_out.rs,
            };
            matmul_into(
                dx_buf,
                false,
                (rows, in_dim, out_dim),
                dy,
                row_major(out_dim),
                w,
                wt,
            );
        }
        if dw {
            match self.layout {
                // dW (out × in) = dYᵀ · X
                LinearLayout::OutIn => matmul_into(
                    dw_buf,
                    false,
                    (out_dim, in_dim, rows),
                    dy,
                    transposed(out_dim),
                    x,
                    row_major(in_dim),
                ),
                // dW (in × out) = Xᵀ · dY
                LinearLayout::InOut => matmul_into(
                    dw_buf,
                    false,
                    (in_dim, out_dim, rows),
                    x,
                    transposed(in_dim),
                    dy,
                    row_major(out_dim),
                ),
            }
        }
        if db {
            // Column sums in row order: deterministic whatever the thread count.
            for row in dy.chunks_exact(out_dim) {
                for (acc, &g) in db_buf.iter_mut().zip(row) {
                    *acc += g;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

fn backward(
    layout: LinearLayout,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    grad: &Tensor,
) -> Result<Grads3> {
    let wanted = Wanted {
        dx: x.track_op(),
        dw: w.track_op(),
        db: b.is_some_and(|b| b.track_op()),
    };
    if !(wanted.dx || wanted.dw || wanted.db) {
        return Ok((None, None, None));
    }
    let dy = grad.contiguous()?;
    let packed = dy.apply_op3_no_bwd(
        &x.contiguous()?,
        &w.contiguous()?,
        &LinearBwd { layout, wanted },
    )?;
    let mut offset = 0;
    let mut take = |want: bool, like: &Tensor| -> Result<Option<Tensor>> {
        if !want {
            return Ok(None);
        }
        let n = like.elem_count();
        let part = packed.narrow(0, offset, n)?.reshape(like.shape())?;
        offset += n;
        Ok(Some(part))
    };
    let dx = take(wanted.dx, x)?;
    let dw = take(wanted.dw, w)?;
    let db = match b {
        Some(b) => take(wanted.db, b)?,
        None => None,
    };
    Ok((dx, dw, db))
}

pub(crate) fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    layout: LinearLayout,
) -> Result<Tensor> {
    check_f32_cpu("linear", "x", x)?;
    check_f32_cpu("linear", "weight", weight)?;
    let in_dim = x.dims().last().copied().unwrap_or(1);
    if in_dim == 0 {
        bail!("mosaic_kernels::linear: the input's last dimension is empty")
    }
    let mut out_dims = x.dims().to_vec();
    let rows = x.elem_count() / in_dim;
    let x2 = x.contiguous()?.reshape((rows, in_dim))?;
    let w = weight.contiguous()?;
    let op = LinearFwd { layout };
    let y = match bias {
        Some(b) => {
            check_f32_cpu("linear", "bias", b)?;
            x2.apply_op3(&w, &b.contiguous()?, op)?
        }
        None => x2.apply_op2(&w, op)?,
    };
    let out_dim = y.dim(1)?;
    match out_dims.last_mut() {
        Some(last) => *last = out_dim,
        None => out_dims.push(out_dim),
    }
    y.reshape(out_dims)
}
