//! Parameter groups (weight decay and learning-rate scale per group, HF's no-decay rule) and the per-parameter
//! state slots and state export/import both optimizers share.

use std::collections::{BTreeMap, HashSet};

use candle_core::{DType, Device, Error, Result, Tensor, Var};

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

pub(super) fn state_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// One parameter slot shared by both optimizers.
#[derive(Debug)]
pub(super) struct Slot<S> {
    pub(super) name: String,
    pub(super) var: Var,
    pub(super) weight_decay: f64,
    pub(super) lr_scale: f64,
    pub(super) state: Option<S>,
}

pub(super) fn build_slots<S>(groups: Vec<ParamGroup>) -> Result<Vec<Slot<S>>> {
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
pub(super) fn group_state<'a, S>(
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

pub(super) fn load_moment(opt: &str, key: &str, t: &Tensor, var: &Var) -> Result<Tensor> {
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

pub(super) fn scalar_step(step: u64) -> Tensor {
    Tensor::from_vec(vec![step as i64], (), &Device::Cpu).expect("a CPU scalar")
}

pub(super) fn read_step(opt: &str, key: &str, t: &Tensor) -> Result<u64> {
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
