//! Lookup tables: token, token-type and learned position embeddings.

use candle_core::{DType, Module, Tensor};

use crate::error::Result;
use crate::grad_mode::param;
use crate::params::{Init, ParamLoader};

/// A lookup table `(vocab, hidden)`.
#[derive(Debug, Clone)]
pub struct Embedding {
    inner: candle_nn::Embedding,
}

impl Embedding {
    pub fn load(loader: &ParamLoader, vocab: usize, hidden: usize, std: f64) -> Result<Self> {
        let weight = loader.get("weight", &[vocab, hidden], Init::Normal(std))?;
        Ok(Embedding {
            inner: candle_nn::Embedding::new(weight, hidden),
        })
    }

    /// `(vocab, hidden)`.
    pub fn weight(&self) -> &Tensor {
        self.inner.embeddings()
    }

    /// `ids: [...] u32 -> [..., hidden]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let table = param(self.inner.embeddings());
        let hidden = table.dim(1)?;
        candle_nn::Embedding::new(table, hidden).forward(ids)
    }

    /// Learned absolute positions added to `x: [batch, seq, hidden]`: `position_ids` `[batch | 1, seq]` (any
    /// integer dtype) when given, else `start..start + seq` for every row.
    pub fn add_positions(
        &self,
        x: &Tensor,
        position_ids: Option<&Tensor>,
        start: usize,
    ) -> candle_core::Result<Tensor> {
        let positions = match position_ids {
            Some(ids) if ids.dtype() == DType::U32 => self.forward(ids)?,
            Some(ids) => self.forward(&ids.to_dtype(DType::U32)?)?,
            None => {
                let t = x.dim(1)?;
                let range = Tensor::arange(start as u32, (start + t) as u32, x.device())?;
                self.forward(&range)?.unsqueeze(0)?
            }
        };
        x.broadcast_add(&positions)
    }
}
