//! `torch.optim.SGD`: momentum, dampening, optional Nesterov, L2 weight decay added to the gradient.

use candle_core::backprop::GradStore;
use candle_core::{Error, Result, Tensor, Var};

use super::Optimizer;
use super::groups::*;

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
