//! Gradient clipping by global L2 norm, non-finite gradient detection, and
//! gradient accumulation over micro-batches.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, TensorId, Var};

/// What [`clip_grad_norm`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipReport {
    /// The global L2 norm of the gradients before clipping (non-finite when
    /// some gradient is).
    pub total_norm: f64,
    /// Whether the gradients were scaled down.
    pub clipped: bool,
    /// The name of the first parameter (in the order given) whose gradient
    /// has a non-finite squared norm: it holds an inf or a NaN, or is so
    /// large its f32 sum of squares overflows. Nothing is scaled then.
    pub non_finite: Option<String>,
}

/// Per-gradient sums of squares (f32, one device round trip), in `vars`
/// order, `None` for vars without a gradient (or listed twice).
fn sums_of_squares(vars: &[(String, Var)], grads: &GradStore) -> Result<Vec<Option<f64>>> {
    let mut present = Vec::new();
    let mut sums = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, var) in vars {
        let first = seen.insert(var.id());
        match grads.get(var.as_tensor()).filter(|_| first) {
            Some(g) => {
                present.push(true);
                sums.push(g.to_dtype(DType::F32)?.sqr()?.sum_all()?);
            }
            None => present.push(false),
        }
    }
    let values: Vec<f32> = if sums.is_empty() {
        Vec::new()
    } else {
        Tensor::stack(&sums, 0)?.to_vec1::<f32>()?
    };
    let mut it = values.into_iter();
    Ok(present
        .into_iter()
        .map(|p| if p { it.next().map(f64::from) } else { None })
        .collect())
}

/// The global L2 norm of the gradients of `vars` (vars without a gradient
/// are ignored), and the first non-finite one's name.
pub fn grad_norm(vars: &[(String, Var)], grads: &GradStore) -> Result<(f64, Option<String>)> {
    let sums = sums_of_squares(vars, grads)?;
    let mut total = 0.0f64;
    let mut non_finite = None;
    for ((name, _), s) in vars.iter().zip(&sums) {
        if let Some(s) = s {
            if !s.is_finite() && non_finite.is_none() {
                non_finite = Some(name.clone());
            }
            total += s;
        }
    }
    Ok((total.sqrt(), non_finite))
}

/// Like `torch.nn.utils.clip_grad_norm_`: computes the global L2 norm of the
/// gradients of `vars` and, when `max_norm / (norm + 1e-6) < 1`, scales each
/// gradient in `grads` by that factor (in place, via `GradStore::insert`).
/// Returns the pre-clip norm. When some gradient is non-finite nothing is
/// scaled and its name is reported, so that the caller can skip the step.
pub fn clip_grad_norm(
    vars: &[(String, Var)],
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<ClipReport> {
    let (total_norm, non_finite) = grad_norm(vars, grads)?;
    let mut clipped = false;
    if non_finite.is_none() && total_norm.is_finite() {
        let coef = max_norm / (total_norm + 1e-6);
        if coef < 1.0 {
            clipped = true;
            let mut seen = std::collections::HashSet::new();
            for (_, var) in vars {
                if !seen.insert(var.id()) {
                    continue;
                }
                if let Some(g) = grads.get(var.as_tensor()) {
                    let scaled = (g * coef)?;
                    grads.insert(var.as_tensor(), scaled);
                }
            }
        }
    }
    Ok(ClipReport {
        total_norm,
        clipped,
        non_finite,
    })
}

/// How accumulated gradients are combined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduction {
    /// The sum over micro-batches.
    Sum,
    /// The sum divided by a given number (e.g. the number of micro-batches,
    /// or of examples when each micro-batch loss is a sum).
    Mean(f64),
}

/// Accumulates gradients of a fixed set of vars over micro-batches.
///
/// Each call to [`GradAccumulator::add`] adds the gradients it finds for the
/// tracked vars (others are ignored); [`GradAccumulator::take`] returns them
/// as a fresh `GradStore` and resets.
#[derive(Debug)]
pub struct GradAccumulator {
    vars: Vec<Var>,
    sums: HashMap<TensorId, Tensor>,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new(vars: impl IntoIterator<Item = Var>) -> Self {
        Self {
            vars: vars.into_iter().collect(),
            sums: HashMap::new(),
            micro_batches: 0,
        }
    }

    /// Adds one micro-batch's gradients.
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        for var in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let sum = match self.sums.remove(&var.id()) {
                Some(acc) => (acc + g)?,
                None => g,
            };
            self.sums.insert(var.id(), sum);
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// The number of micro-batches added since the last reset.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Whether no micro-batch has been added since the last reset.
    pub fn is_empty(&self) -> bool {
        self.micro_batches == 0
    }

    /// The accumulated gradient of `var`, if any (not reduced).
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.sums.get(&var.id())
    }

    /// Returns the accumulated gradients, reduced, and resets.
    pub fn take(&mut self, reduction: Reduction) -> Result<GradStore> {
        let mut store = GradStore::default();
        for var in &self.vars {
            if let Some(sum) = self.sums.remove(&var.id()) {
                let g = match reduction {
                    Reduction::Sum => sum,
                    Reduction::Mean(d) => (sum / d)?,
                };
                store.insert(var.as_tensor(), g);
            }
        }
        self.reset();
        Ok(store)
    }

    /// Drops everything accumulated.
    pub fn reset(&mut self) {
        self.sums.clear();
        self.micro_batches = 0;
    }
}
