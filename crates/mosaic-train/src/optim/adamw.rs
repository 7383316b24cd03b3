//! `torch.optim.AdamW`: decoupled weight decay, bias-corrected moments, per-parameter step counts.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

use super::Optimizer;
use super::groups::*;

/// Hyper-parameters of [`AdamW`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// Weight decay for parameters that decay (see [`AdamW::new`]).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// AdamW's moments: in plain f32 buffers for f32 parameters on the CPU (updated in place by the fused
/// [`mosaic_kernels::adamw_step`]), as tensors elsewhere (the composed update).
#[derive(Debug)]
enum Moments {
    Host {
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
    },
    Tensors {
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
    },
}

#[derive(Debug)]
pub(super) struct AdamState {
    step: u64,
    moments: Moments,
}

/// Whether `var` takes the fused in-place update.
pub(super) fn fused_adamw(var: &Var) -> bool {
    var.dtype() == DType::F32 && var.device().is_cpu()
}

impl Moments {
    fn zeros(var: &Var) -> Result<Self> {
        Ok(if fused_adamw(var) {
            Moments::Host {
                exp_avg: vec![0.0; var.elem_count()],
                exp_avg_sq: vec![0.0; var.elem_count()],
            }
        } else {
            let z = var.zeros_like()?.to_dtype(state_dtype(var.dtype()))?;
            Moments::Tensors {
                exp_avg: z.clone(),
                exp_avg_sq: z,
            }
        })
    }

    fn from_tensors(var: &Var, exp_avg: Tensor, exp_avg_sq: Tensor) -> Result<Self> {
        Ok(if fused_adamw(var) {
            Moments::Host {
                exp_avg: exp_avg.flatten_all()?.to_vec1::<f32>()?,
                exp_avg_sq: exp_avg_sq.flatten_all()?.to_vec1::<f32>()?,
            }
        } else {
            Moments::Tensors {
                exp_avg,
                exp_avg_sq,
            }
        })
    }

    /// `(exp_avg, exp_avg_sq)` as tensors shaped like `var`, for export.
    fn tensors(&self, var: &Var) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Moments::Host {
                exp_avg,
                exp_avg_sq,
            } => (
                Tensor::from_slice(exp_avg, var.shape(), var.device())?,
                Tensor::from_slice(exp_avg_sq, var.shape(), var.device())?,
            ),
            Moments::Tensors {
                exp_avg,
                exp_avg_sq,
            } => (exp_avg.clone(), exp_avg_sq.clone()),
        })
    }
}

/// `torch.optim.AdamW`:
///
/// ```text
/// p  <- p * (1 - lr * wd)
/// m  <- b1 * m + (1 - b1) * g
/// v  <- b2 * v + (1 - b2) * g^2
/// p  <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// ```
#[derive(Debug)]
pub struct AdamW {
    params: Vec<Slot<AdamState>>,
    cfg: AdamWConfig,
}

impl AdamW {
    /// Named parameters; those matching [`default_no_decay`] get no weight decay.
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        Self::with_no_decay(params, cfg, default_no_decay)
    }

    /// Named parameters; those for which `no_decay(name)` is true get no weight decay.
    pub fn with_no_decay(
        params: Vec<(String, Var)>,
        cfg: AdamWConfig,
        no_decay: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        Self::from_groups(decay_groups(params, cfg.weight_decay, no_decay), cfg)
    }

    /// Explicit groups; each group's `weight_decay` is used and
    /// `cfg.weight_decay` is ignored.
    pub fn from_groups(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        Ok(Self {
            params: build_slots(groups)?,
            cfg,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// `(name, weight decay)` of every parameter, in order.
    pub fn weight_decays(&self) -> Vec<(&str, f64)> {
        self.params
            .iter()
            .map(|p| (p.name.as_str(), p.weight_decay))
            .collect()
    }

    /// The step count of parameter `name` (0 before its first update).
    pub fn param_step(&self, name: &str) -> Option<u64> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.state.as_ref().map_or(0, |s| s.step))
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (beta1, beta2) = self.cfg.betas;
        for slot in self.params.iter_mut() {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let mut state = match slot.state.take() {
                Some(s) => s,
                None => AdamState {
                    step: 0,
                    moments: Moments::zeros(&slot.var)?,
                },
            };
            state.step += 1;
            let h = mosaic_kernels::AdamWStep {
                lr: self.cfg.lr * slot.lr_scale,
                beta1,
                beta2,
                eps: self.cfg.eps,
                weight_decay: slot.weight_decay,
                step: state.step,
            };
            match &mut state.moments {
                Moments::Host {
                    exp_avg,
                    exp_avg_sq,
                } => {
                    mosaic_kernels::adamw_step(slot.var.as_tensor(), grad, exp_avg, exp_avg_sq, h)?;
                }
                Moments::Tensors {
                    exp_avg,
                    exp_avg_sq,
                } => {
                    let sd = state_dtype(slot.var.dtype());
                    let g = grad.to_dtype(sd)?.detach();
                    let p = slot.var.as_tensor().to_dtype(sd)?.detach();
                    let (p, m, v) =
                        mosaic_kernels::reference::adamw_step(&p, &g, exp_avg, exp_avg_sq, &h)?;
                    slot.var.set(&p.to_dtype(slot.var.dtype())?)?;
                    (*exp_avg, *exp_avg_sq) = (m, v);
                }
            }
            slot.state = Some(state);
        }
        Ok(())
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for slot in &self.params {
            if let Some(s) = &slot.state {
                let (m, v) = s.moments.tensors(&slot.var)?;
                out.push((format!("{}.exp_avg", slot.name), m));
                out.push((format!("{}.exp_avg_sq", slot.name), v));
                out.push((format!("{}.step", slot.name), scalar_step(s.step)));
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        const OPT: &str = "AdamW";
        let by_param = group_state(OPT, &self.params, state, &["exp_avg", "exp_avg_sq", "step"])?;
        let mut loaded = Vec::with_capacity(self.params.len());
        for slot in &self.params {
            let s = match by_param.get(&slot.name) {
                None => None,
                Some(e) => {
                    let key = |s: &str| format!("{}.{s}", slot.name);
                    let exp_avg = load_moment(OPT, &key("exp_avg"), e["exp_avg"], &slot.var)?;
                    let exp_avg_sq =
                        load_moment(OPT, &key("exp_avg_sq"), e["exp_avg_sq"], &slot.var)?;
                    Some(AdamState {
                        step: read_step(OPT, &key("step"), e["step"])?,
                        moments: Moments::from_tensors(&slot.var, exp_avg, exp_avg_sq)?,
                    })
                }
            };
            loaded.push(s);
        }
        for (slot, s) in self.params.iter_mut().zip(loaded) {
            slot.state = s;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// SGD
// ---------------------------------------------------------------------------
