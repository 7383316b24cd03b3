//! One accumulation window: the micro-batches' losses, each divided by the window's counted targets so the parts
//! add up to one big batch's mean, their summed gradients (plus FGM's adversarial ones), global-norm clipping and
//! the non-finite guard. With several ranks the targets are counted over all of them, each rank's micro-batch
//! shares are of that global count, and the summed gradients are all-reduced once, before clipping.

use candle_core::Var;
use candle_core::backprop::GradStore;

use super::task::TrainTask;
use crate::collective::{Collective, GradientBuckets, ReduceStats};
use crate::error::Result;
use crate::gradients::{GradAccumulator, Reduction, clip_grad_norm, grad_norm};

/// The gradients of a window, ready for the optimizer.
pub struct WindowGradients {
    pub grads: GradStore,
    /// The window's mean loss.
    pub loss: f64,
    /// Each objective's window mean, for a joint loss (`[loss]`); empty otherwise.
    pub objectives: Vec<(&'static str, f64)>,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    /// Targets counted, and examples (over all ranks).
    pub counted: usize,
    pub examples: usize,
    /// What the gradients' all-reduce moved (zero for one process).
    pub reduced: ReduceStats,
}

/// Why a window gave no step.
pub struct NonFiniteWindow {
    /// `"loss"` or `"gradient"`.
    pub what: &'static str,
    /// The first parameter whose gradient is not finite.
    pub param: Option<String>,
}

/// How the window's gradients are taken.
pub struct WindowPlan<'a> {
    /// The parameters that train.
    pub params: &'a [(String, Var)],
    /// FGM: the embedding matrix and ε.
    pub fgm: Option<(&'a Var, f64)>,
    /// Global-norm clipping (0: none).
    pub max_grad_norm: f64,
    /// The ranks training together, and how gradients travel between them.
    pub collective: &'a dyn Collective,
    pub buckets: GradientBuckets,
}

impl WindowPlan<'_> {
    /// The window's gradients, or what was not finite.
    pub fn run(
        &self,
        task: &dyn TrainTask,
        window: &[&[usize]],
    ) -> Result<std::result::Result<WindowGradients, NonFiniteWindow>> {
        let ranks = self.collective.world_size();
        // Counted before any forward pass (over all ranks), so each micro-batch's graph is dropped before the
        // next is built.
        let local: usize = window.iter().map(|batch| task.count(batch)).sum();
        let mut global = [local as f64];
        self.collective.all_reduce_sum_f64(&mut global)?;
        let counted = global[0] as usize;
        let mut acc = GradAccumulator::new(self.params.iter().map(|(_, v)| v.clone()));
        let mut window_loss = 0.0;
        let mut objectives: Vec<(&'static str, f64)> = Vec::new();
        for batch in window {
            let loss = task.batch_loss(batch)?;
            for (name, value) in loss.part_shares(counted, window.len(), ranks) {
                match objectives.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, sum)) => *sum += value,
                    None => objectives.push((name, value)),
                }
            }
            let share = loss.window_share(counted, window.len(), ranks)?;
            let value = share.to_scalar::<f32>()? as f64;
            window_loss += value;
            if !value.is_finite() {
                // Every rank still meets the others below, where the non-finite loss stops them all.
                break;
            }
            let grads = share.backward()?;
            acc.add(&grads)?;
            if let Some((embeddings, epsilon)) = self.fgm {
                self.adversarial(
                    task,
                    batch,
                    &grads,
                    embeddings,
                    epsilon,
                    (counted, window.len(), ranks),
                    &mut acc,
                )?;
            }
        }
        // The window's loss, objectives and examples over all ranks (one small all-reduce).
        let examples: usize = window.iter().map(|b| b.len()).sum();
        let mut scalars: Vec<f64> = std::iter::once(window_loss)
            .chain(std::iter::once(examples as f64))
            .chain(objectives.iter().map(|(_, v)| *v))
            .collect();
        self.collective.all_reduce_sum_f64(&mut scalars)?;
        let window_loss = scalars[0];
        for ((_, v), sum) in objectives.iter_mut().zip(&scalars[2..]) {
            *v = *sum;
        }
        if !window_loss.is_finite() {
            return Ok(Err(NonFiniteWindow {
                what: "loss",
                param: None,
            }));
        }
        let mut grads = acc.take(Reduction::Sum)?;
        let reduced = self
            .buckets
            .all_reduce(self.collective, self.params, &mut grads)?;
        let (norm, bad) = if self.max_grad_norm > 0.0 {
            let report = clip_grad_norm(self.params, &mut grads, self.max_grad_norm)?;
            (report.total_norm, report.non_finite)
        } else {
            grad_norm(self.params, &grads)?
        };
        if let Some(param) = bad {
            return Ok(Err(NonFiniteWindow {
                what: "gradient",
                param: Some(param),
            }));
        }
        Ok(Ok(WindowGradients {
            grads,
            loss: window_loss,
            objectives,
            grad_norm: norm,
            counted,
            examples: scalars[1] as usize,
            reduced,
        }))
    }

    /// FGM (Miyato et al.): add ε·g/‖g‖ to the embeddings, accumulate the gradient of the loss there, restore.
    /// `shape`: the window's global target count, this rank's micro-batches, the ranks.
    #[allow(clippy::too_many_arguments)]
    fn adversarial(
        &self,
        task: &dyn TrainTask,
        batch: &[usize],
        grads: &GradStore,
        embeddings: &Var,
        epsilon: f64,
        shape: (usize, usize, usize),
        acc: &mut GradAccumulator,
    ) -> Result<()> {
        let Some(g) = grads.get(embeddings.as_tensor()) else {
            return Ok(());
        };
        let norm = g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
        if !(norm.is_finite() && norm > 0.0) {
            return Ok(());
        }
        let original = embeddings.as_tensor().copy()?;
        embeddings.set(&original.add(&g.affine(epsilon / norm, 0.0)?)?)?;
        let adversarial = (|| -> Result<GradStore> {
            let loss = task.batch_loss(batch)?;
            Ok(loss.window_share(shape.0, shape.1, shape.2)?.backward()?)
        })();
        embeddings.set(&original)?;
        acc.add(&adversarial?)?;
        Ok(())
    }
}
