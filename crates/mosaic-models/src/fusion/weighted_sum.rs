//! Fusion by a softmax-weighted sum of the modalities, projected to one width first; the weights are returned,
//! so a caller can report which modality the model leans on.

use candle_core::{D, Tensor};

use super::{INIT_STD, check_pooled};
use crate::error::{ModelError, Result};
use crate::grad_mode::param;
use crate::layers::{Linear, LinearKind};
use crate::params::{Init, ParamLoader};

/// Where the modality scores behind the weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// One learned score per modality (`scores (n)`, zeros at the start: equal weights), the same for every
    /// sample.
    Static,
    /// Each sample's projected inputs scored by one shared `Linear(w → 1)` (`scorer.weight (1, w)`), so the
    /// weights depend on the inputs.
    Conditioned,
}

#[derive(Debug, Clone)]
enum Scorer {
    Static(Tensor),
    Conditioned(Linear),
}

/// What [`WeightedSumFusion::forward`] returns.
#[derive(Debug, Clone)]
pub struct WeightedSumOutput {
    /// `(B, w)`: `Σ_i weights[:, i] · proj_i(x_i)`.
    pub fused: Tensor,
    /// `(B, n)`: the softmax weight of each modality per sample; each row sums to 1.
    pub weights: Tensor,
}

/// `Y = Σ_i w_i · proj_i(x_i)` with `w = softmax_i(s_i)` over pooled features `x_i: (B, d_i)`.
///
/// Parameters: `projections.{i}.weight (w, d_i)`, `projections.{i}.bias (w)`, and `scores (n)` or
/// `scorer.weight (1, w)` as [`Scoring`] says.
#[derive(Debug, Clone)]
pub struct WeightedSumFusion {
    in_dims: Vec<usize>,
    projections: Vec<Linear>,
    scorer: Scorer,
}

impl WeightedSumFusion {
    /// A fusion of `in_dims.len()` modalities (at least one) at the common width `width`.
    pub fn load(
        loader: &ParamLoader,
        in_dims: &[usize],
        width: usize,
        scoring: Scoring,
    ) -> Result<Self> {
        if in_dims.is_empty() || in_dims.contains(&0) || width == 0 {
            return Err(ModelError::InvalidInput(format!(
                "weighted-sum fusion: needs at least one modality and non-zero widths, got inputs {in_dims:?} → {width}"
            )));
        }
        let proj = loader.pp("projections");
        let projections = in_dims
            .iter()
            .enumerate()
            .map(|(i, &d)| Linear::load(&proj.pp(&i.to_string()), d, width, INIT_STD))
            .collect::<Result<Vec<_>>>()?;
        let scorer = match scoring {
            Scoring::Static => {
                Scorer::Static(loader.get("scores", &[in_dims.len()], Init::Zeros)?)
            }
            // No bias: one added to every modality's score cancels in the softmax and would never learn.
            Scoring::Conditioned => Scorer::Conditioned(Linear::load_as(
                &loader.pp("scorer"),
                width,
                1,
                INIT_STD,
                LinearKind::NoBias,
            )?),
        };
        Ok(WeightedSumFusion {
            in_dims: in_dims.to_vec(),
            projections,
            scorer,
        })
    }

    /// The widths the inputs must have, in order.
    pub fn in_dims(&self) -> &[usize] {
        &self.in_dims
    }

    /// `inputs: [(B, d_i)] -> fused (B, w), weights (B, n)`. A wrong number of inputs, width or batch size is
    /// an error naming the modality.
    pub fn forward(&self, inputs: &[Tensor]) -> Result<WeightedSumOutput> {
        let batch = check_pooled("weighted-sum fusion", inputs, &self.in_dims)?;
        let projected = self
            .projections
            .iter()
            .zip(inputs)
            .map(|(p, x)| p.forward(x))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // (B, n, w)
        let stacked = Tensor::stack(&projected, 1)?;
        let n = self.in_dims.len();
        let weights = match &self.scorer {
            Scorer::Static(scores) => {
                let w = mosaic_kernels::softmax_last_dim(&param(scores).reshape((1, n))?)?;
                w.broadcast_as((batch, n))?.contiguous()?
            }
            Scorer::Conditioned(scorer) => {
                let scores = scorer.forward(&stacked)?.squeeze(D::Minus1)?;
                mosaic_kernels::softmax_last_dim(&scores.contiguous()?)?
            }
        };
        let fused = stacked
            .broadcast_mul(&weights.unsqueeze(D::Minus1)?)?
            .sum(1)?;
        Ok(WeightedSumOutput { fused, weights })
    }
}
