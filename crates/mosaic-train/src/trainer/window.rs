//! One accumulation window: the micro-batches' losses, each divided by the window's counted targets so the parts
//! add up to one big batch's mean, their summed gradients (plus FGM's adversarial ones), global-norm clipping and
//! the non-finite guard.

use candle_core::Var;
use candle_core::backprop::GradStore;

use super::task::TrainTask;
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
    /// Targets counted, and examples.
    pub counted: usize,
    pub examples: usize,
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
}

impl WindowPlan<'_> {
    /// The window's gradients, or what was not finite.
    pub fn run(
        &self,
        task: &dyn TrainTask,
        window: &[&[usize]],
    ) -> Result<std::result::Result<WindowGradients, NonFiniteWindow>> {
        // Counted before any forward pass, so each micro-batch's graph is dropped before the next is built.
        let counted: usize = window.iter().map(|batch| task.count(batch)).sum();
        let mut acc = GradAccumulator::new(self.params.iter().map(|(_, v)| v.clone()));
        let mut window_loss = 0.0;
        let mut objectives: Vec<(&'static str, f64)> = Vec::new();
        for batch in window {
            let loss = task.batch_loss(batch)?;
            for (name, value) in loss.part_shares(counted, window.len()) {
                match objectives.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, sum)) => *sum += value,
                    None => objectives.push((name, value)),
                }
            }
            let share = loss.window_share(counted, window.len())?;
            let value = share.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Ok(Err(NonFiniteWindow {
                    what: "loss",
                    param: None,
                }));
            }
            window_loss += value;
            let grads = share.backward()?;
            acc.add(&grads)?;
            if let Some((embeddings, epsilon)) = self.fgm {
                self.adversarial(
                    task,
                    batch,
                    &grads,
                    embeddings,
                    epsilon,
                    counted,
                    window.len(),
                    &mut acc,
                )?;
            }
        }
        let mut grads = acc.take(Reduction::Sum)?;
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
            examples: window.iter().map(|b| b.len()).sum(),
        }))
    }

    /// FGM (Miyato et al.): add ε·g/‖g‖ to the embeddings, accumulate the gradient of the loss there, restore.
    #[allow(clippy::too_many_arguments)]
    fn adversarial(
        &self,
        task: &dyn TrainTask,
        batch: &[usize],
        grads: &GradStore,
        embeddings: &Var,
        epsilon: f64,
        counted: usize,
        batches: usize,
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
            Ok(loss.window_share(counted, batches)?.backward()?)
        })();
        embeddings.set(&original)?;
        acc.add(&adversarial?)?;
        Ok(())
    }
}
