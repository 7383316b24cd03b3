//! Late fusion by concatenation: the simplest baseline every other fusion is compared against.

use std::sync::Arc;

use candle_core::Tensor;

use super::{INIT_STD, check_pooled};
use crate::dropout::{Dropout, Mode};
use crate::error::{ModelError, Result};
use crate::layers::{Activation, Linear};
use crate::params::ParamLoader;

/// `dropout(act(proj([x_0 | x_1 | …])))` over pooled features `x_i: (B, d_i)`.
///
/// Parameters: `proj.weight (out, Σ d_i)`, `proj.bias (out)`.
#[derive(Debug, Clone)]
pub struct ConcatFusion {
    in_dims: Vec<usize>,
    proj: Linear,
    activation: Activation,
    dropout: Dropout,
    /// Kept so [`with_dropout`](Self::with_dropout) can build a new dropout on the same train/eval switch.
    mode: Arc<Mode>,
}

impl ConcatFusion {
    /// A fusion of `in_dims.len()` modalities (at least one) into `out_dim`, with GELU and no dropout; see
    /// [`with_activation`](Self::with_activation) and [`with_dropout`](Self::with_dropout).
    pub fn load(
        loader: &ParamLoader,
        in_dims: &[usize],
        out_dim: usize,
        mode: Arc<Mode>,
    ) -> Result<Self> {
        if in_dims.is_empty() || in_dims.contains(&0) || out_dim == 0 {
            return Err(ModelError::InvalidInput(format!(
                "concat fusion: needs at least one modality and non-zero widths, got inputs {in_dims:?} → {out_dim}"
            )));
        }
        let total = in_dims.iter().sum();
        Ok(ConcatFusion {
            in_dims: in_dims.to_vec(),
            proj: Linear::load(&loader.pp("proj"), total, out_dim, INIT_STD)?,
            activation: Activation::Gelu,
            dropout: Dropout::new(0.0, mode.clone()),
            mode,
        })
    }

    /// Replaces the activation after the projection.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Dropout with probability `p` on the output (training mode only).
    pub fn with_dropout(mut self, p: f32) -> Self {
        self.dropout = Dropout::new(p, self.mode.clone());
        self
    }

    /// The widths the inputs must have, in order.
    pub fn in_dims(&self) -> &[usize] {
        &self.in_dims
    }

    /// `inputs: [(B, d_i)] -> (B, out)`. A wrong number of inputs, width or batch size is an error naming the
    /// modality.
    pub fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        check_pooled("concat fusion", inputs, &self.in_dims)?;
        let joined = Tensor::cat(inputs, 1)?;
        let y = self.activation.forward(&self.proj.forward(&joined)?)?;
        Ok(self.dropout.forward(&y)?)
    }
}
