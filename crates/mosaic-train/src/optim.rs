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

use std::collections::{BTreeMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Error, Result, Tensor, Var};

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

/// A group of named parameters sharing weight decay and a learning-rate scale.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub params: Vec<(String, Var)>,
    pub weight_decay: f64,
    /// Multiplies the optimizer's base learning rate for this group.
    pub lr_scale: f64,
}

impl ParamGroup {
    pub fn new(params: Vec<(String, Var)>, weight_decay: f64) -> Self {
        Self {
            params,
            weight_decay,
            lr_scale: 1.0,
        }
    }
}

/// Whether a parameter should be excluded from weight decay, following the
/// Hugging Face `Trainer` (`get_decay_parameter_names`): on the lower-cased
/// name, anything containing `bias`, `layernorm` or `rmsnorm`, a path segment
/// equal to `norm` or ending in `_norm`. Parameters of `LayerNorm` modules
/// that the `Trainer` recognises by type are matched by name here: a path
/// segment `ln`, `ln_*` or `ln<digits>` (GPT-2's `ln_1`, `ln_f`).
pub fn default_no_decay(name: &str) -> bool {
    let lower = name.to_lowercase();
    if lower.contains("bias") || lower.contains("layernorm") || lower.contains("rmsnorm") {
        return true;
    }
    lower.split('.').any(|seg| {
        seg == "norm"
            || seg.ends_with("_norm")
            || seg == "ln"
            || seg.starts_with("ln_")
            || (seg.len() > 2
                && seg.starts_with("ln")
                && seg[2..].bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Splits `params` into two groups: those for which `no_decay` is false get
/// `weight_decay`, the rest get none. Empty groups are dropped.
pub fn decay_groups(
    params: Vec<(String, Var)>,
    weight_decay: f64,
    no_decay: impl Fn(&str) -> bool,
) -> Vec<ParamGroup> {
    let (without, with): (Vec<_>, Vec<_>) = params.into_iter().partition(|(n, _)| no_decay(n));
    let mut groups = Vec::new();
    if !with.is_empty() {
        groups.push(ParamGroup::new(with, weight_decay));
    }
    if !without.is_empty() {
        groups.push(ParamGroup::new(without, 0.0));
    }
    groups
}

fn state_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// One parameter slot shared by both optimizers.
#[derive(Debug)]
struct Slot<S> {
    name: String,
    var: Var,
    weight_decay: f64,
    lr_scale: f64,
    state: Option<S>,
}

fn build_slots<S>(groups: Vec<ParamGroup>) -> Result<Vec<Slot<S>>> {
    let mut seen = HashSet::new();
    let mut slots = Vec::new();
    for group in groups {
        for (name, var) in group.params {
            if !var.dtype().is_float() {
                continue;
            }
            if !seen.insert(name.clone()) {
                return Err(Error::Msg(format!(
                    "optimizer: parameter `{name}` given twice"
                )));
            }
            slots.push(Slot {
                name,
                var,
                weight_decay: group.weight_decay,
                lr_scale: group.lr_scale,
                state: None,
            });
        }
    }
    Ok(slots)
}

/// Groups exported state entries by parameter name, checking every
/// parameter name is known and every slot name is one of `slots`.
fn group_state<'a, S>(
    opt: &str,
    params: &[Slot<S>],
    state: &'a [(String, Tensor)],
    slot_names: &[&str],
) -> Result<BTreeMap<String, BTreeMap<String, &'a Tensor>>> {
    let known: HashSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
    let mut by_param: BTreeMap<String, BTreeMap<String, &Tensor>> = BTreeMap::new();
    for (key, tensor) in state {
        let Some((param, slot)) = key.rsplit_once('.') else {
            return Err(Error::Msg(format!("{opt} state: malformed key `{key}`")));
        };
        if !slot_names.contains(&slot) {
            return Err(Error::Msg(format!(
                "{opt} state: unknown slot `{slot}` in `{key}` (expected one of {})",
                slot_names.join(", ")
            )));
        }
        if !known.contains(param) {
            return Err(Error::Msg(format!(
                "{opt} state: unknown parameter `{param}`"
            )));
        }
        by_param
            .entry(param.to_string())
            .or_default()
            .insert(slot.to_string(), tensor);
    }
    for (param, slots) in &by_param {
        for s in slot_names {
            if !slots.contains_key(*s) {
                return Err(Error::Msg(format!("{opt} state: missing `{param}.{s}`")));
            }
        }
    }
    Ok(by_param)
}

fn load_moment(opt: &str, key: &str, t: &Tensor, var: &Var) -> Result<Tensor> {
    if t.dims() != var.dims() {
        return Err(Error::Msg(format!(
            "{opt} state: `{key}` has shape {:?}, the parameter has {:?}",
            t.dims(),
            var.dims()
        )));
    }
    t.to_device(var.device())?
        .to_dtype(state_dtype(var.dtype()))?
        .detach()
        .copy()
}

fn scalar_step(step: u64) -> Tensor {
    Tensor::from_vec(vec![step as i64], (), &Device::Cpu).expect("a CPU scalar")
}

fn read_step(opt: &str, key: &str, t: &Tensor) -> Result<u64> {
    let v: f64 = t
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .first()
        .copied()
        .ok_or_else(|| Error::Msg(format!("{opt} state: `{key}` is empty")))?;
    if !(v >= 0.0 && v.fract() == 0.0) {
        return Err(Error::Msg(format!(
            "{opt} state: `{key}` = {v} is not a step count"
        )));
    }
    Ok(v as u64)
}

// ---------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------

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
struct AdamState {
    step: u64,
    moments: Moments,
}

/// Whether `var` takes the fused in-place update.
fn fused_adamw(var: &Var) -> bool {
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

/// Hyper-parameters of [`Sgd`]; the defaults are PyTorch's except `lr`
/// (PyTorch requires it) which defaults to 1e-3 here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// L2 weight decay (added to the gradient) for parameters that decay.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// `torch.optim.SGD`:
///
/// ```text
/// d   <- g + wd * p
/// buf <- d                                 (first step)
/// buf <- momentum * buf + (1 - dampening) * d
/// d   <- nesterov ? d + momentum * buf : buf   (when momentum != 0)
/// p   <- p - lr * d
/// ```
#[derive(Debug)]
pub struct Sgd {
    params: Vec<Slot<Tensor>>,
    cfg: SgdConfig,
}

impl Sgd {
    /// Named parameters; those matching [`default_no_decay`] get no weight decay.
    pub fn new(params: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        Self::with_no_decay(params, cfg, default_no_decay)
    }

    /// Named parameters; those for which `no_decay(name)` is true get no weight decay.
    pub fn with_no_decay(
        params: Vec<(String, Var)>,
        cfg: SgdConfig,
        no_decay: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        Self::from_groups(decay_groups(params, cfg.weight_decay, no_decay), cfg)
    }

    /// Explicit groups; each group's `weight_decay` is used and
    /// `cfg.weight_decay` is ignored.
    pub fn from_groups(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Result<Self> {
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(Error::Msg(
                "SGD: Nesterov momentum requires a momentum and zero dampening".into(),
            ));
        }
        Ok(Self {
            params: build_slots(groups)?,
            cfg,
        })
    }

    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// `(name, weight decay)` of every parameter, in order.
    pub fn weight_decays(&self) -> Vec<(&str, f64)> {
        self.params
            .iter()
            .map(|p| (p.name.as_str(), p.weight_decay))
            .collect()
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let SgdConfig {
            momentum,
            dampening,
            nesterov,
            ..
        } = self.cfg;
        for slot in self.params.iter_mut() {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let sd = state_dtype(slot.var.dtype());
            let lr = self.cfg.lr * slot.lr_scale;
            let p = slot.var.as_tensor().to_dtype(sd)?.detach();
            let mut d = grad.to_dtype(sd)?.detach();
            if slot.weight_decay != 0.0 {
                d = (d + (&p * slot.weight_decay)?)?;
            }
            if momentum != 0.0 {
                let buf = match slot.state.take() {
                    None => d.copy()?,
                    Some(buf) => ((buf * momentum)? + (&d * (1.0 - dampening))?)?,
                };
                d = if nesterov {
                    (d + (&buf * momentum)?)?
                } else {
                    buf.clone()
                };
                slot.state = Some(buf);
            }
            let p = (p - (d * lr)?)?;
            slot.var.set(&p.to_dtype(slot.var.dtype())?)?;
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
        Ok(self
            .params
            .iter()
            .filter_map(|slot| {
                slot.state
                    .as_ref()
                    .map(|b| (format!("{}.momentum_buffer", slot.name), b.clone()))
            })
            .collect())
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        const OPT: &str = "SGD";
        let by_param = group_state(OPT, &self.params, state, &["momentum_buffer"])?;
        let mut loaded = Vec::with_capacity(self.params.len());
        for slot in &self.params {
            let s = match by_param.get(&slot.name) {
                None => None,
                Some(e) => {
                    let key = format!("{}.momentum_buffer", slot.name);
                    Some(load_moment(OPT, &key, e["momentum_buffer"], &slot.var)?)
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
