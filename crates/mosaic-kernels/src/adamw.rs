//! One AdamW step in a single pass over each parameter: decay, both moments and the update, written in place.
//! The composed version (candle ops, [`crate::reference::adamw_step`]) reads and writes each element about ten
//! times and allocates a fresh buffer per op; this one reads `p, g, m, v` once and writes `p, m, v` once. The
//! arithmetic is the composed version's, op for op in f32 (no fused multiply-add), so the two agree bit for bit
//! and a run that switches between them resumes exactly.

use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor, bail};
use rayon::prelude::*;

use crate::cpu_storage::f32_slice;

/// Elements per parallel chunk: below this the update runs on one thread.
const CHUNK: usize = 1 << 15;

/// The scalars of one AdamW step, as `torch.optim.AdamW` (non-amsgrad, not maximising) computes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// The step number, 1 for the first update.
    pub step: u64,
}

/// The step's scalars in f32, each computed once in f64 as the composed version does.
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    decay: Option<f32>,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bias_correction2_sqrt: f32,
    eps: f32,
    step_size: f32,
}

impl Coefficients {
    fn new(h: &AdamWStep) -> Self {
        let t = i32::try_from(h.step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - h.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - h.beta2.powi(t)).sqrt();
        Self {
            decay: (h.weight_decay != 0.0).then_some((1.0 - h.lr * h.weight_decay) as f32),
            beta1: h.beta1 as f32,
            one_minus_beta1: (1.0 - h.beta1) as f32,
            beta2: h.beta2 as f32,
            one_minus_beta2: (1.0 - h.beta2) as f32,
            inv_bias_correction2_sqrt: (1.0 / bias_correction2_sqrt) as f32,
            eps: h.eps as f32,
            step_size: (h.lr / bias_correction1) as f32,
        }
    }

    #[inline]
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let mut x = *p;
            if let Some(d) = self.decay {
                x *= d;
            }
            let mi = *m * self.beta1 + g * self.one_minus_beta1;
            let vi = *v * self.beta2 + (g * g) * self.one_minus_beta2;
            let denom = vi.sqrt() * self.inv_bias_correction2_sqrt + self.eps;
            *p = x - (mi / denom) * self.step_size;
            *m = mi;
            *v = vi;
        }
    }
}

/// Applies one AdamW step to f32 slices in place: `p` the parameter, `g` its gradient, `m`/`v` the first and
/// second moments (zeros before the first step). All four must have the same length.
pub fn adamw_step_slices(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamWStep,
) -> Result<()> {
    let n = p.len();
    if g.len() != n || m.len() != n || v.len() != n {
        bail!(
            "mosaic_kernels::adamw_step: lengths differ (param {n}, grad {}, exp_avg {}, exp_avg_sq {})",
            g.len(),
            m.len(),
            v.len()
        );
    }
    let c = Coefficients::new(h);
    if n <= CHUNK {
        c.update(p, g, m, v);
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| c.update(p, g, m, v));
    }
    Ok(())
}

/// The in-place op on the parameter's storage; the moments live in the optimizer, outside candle.
struct AdamWInPlace<'a> {
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
    step: AdamWStep,
}

impl InplaceOp2 for AdamWInPlace<'_> {
    fn name(&self) -> &'static str {
        "adamw_step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = f32_slice(self.name(), s2, l2)?;
        let Some((start, end)) = l1.contiguous_offsets() else {
            bail!("mosaic_kernels::adamw_step: the parameter must be contiguous");
        };
        let p = match s1 {
            CpuStorage::F32(data) => &mut data[start..end],
            _ => bail!("mosaic_kernels::adamw_step: expected an f32 parameter"),
        };
        let mut moments = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        let (m, v) = &mut *moments;
        adamw_step_slices(p, g, m, v, &self.step)
    }
}

/// One AdamW step on `param` (an f32 CPU tensor, e.g. a `Var`'s) in place, given its gradient `grad` (same
/// shape) and the moments `exp_avg`, `exp_avg_sq` (as many elements), which are updated too.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use mosaic_kernels::{AdamWStep, adamw_step};
///
/// let p = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
/// let g = Tensor::new(&[0.5f32, 0.5], &Device::Cpu)?;
/// let (mut m, mut v) = (vec![0.0f32; 2], vec![0.0f32; 2]);
/// let h = AdamWStep { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
/// adamw_step(p.as_tensor(), &g, &mut m, &mut v, h)?;
/// // The first step moves each weight by lr against the gradient's sign.
/// let after = p.as_tensor().to_vec1::<f32>()?;
/// assert!((after[0] - 0.9).abs() < 1e-6 && (after[1] + 2.1).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    step: AdamWStep,
) -> Result<()> {
    if param.shape() != grad.shape() {
        bail!(
            "mosaic_kernels::adamw_step: parameter {:?} and gradient {:?} differ in shape",
            param.shape(),
            grad.shape()
        );
    }
    let grad = grad.contiguous()?;
    let op = AdamWInPlace {
        moments: Mutex::new((exp_avg, exp_avg_sq)),
        step,
    };
    param.inplace_op2(&grad, &op)
}
