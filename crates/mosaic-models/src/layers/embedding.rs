//! Lookup tables: token, token-type and learned position embeddings.

use candle_core::{DType, Module, Tensor};

use super::hooks::Slot;
use crate::error::Result;
use crate::grad_mode::param;
use crate::params::{Init, ParamLoader};

/// A lookup table `(vocab, hidden)`.
#[derive(Debug, Clone)]
pub struct Embedding {
    inner: candle_nn::Embedding,
    /// Added to every position (learned position tables only): prefix and prompt tuning put their virtual
    /// tokens at positions `0..P`, so the real tokens start at `P`, as transformers does with a `past_key_values`
    /// of length `P`.
    position_offset: Slot<usize>,
}

impl Embedding {
    pub fn load(loader: &ParamLoader, vocab: usize, hidden: usize, std: f64) -> Result<Self> {
        let weight = loader.get("weight", &[vocab, hidden], Init::Normal(std))?;
        Ok(Embedding {
            inner: candle_nn::Embedding::new(weight, hidden),
            position_offset: Slot::default(),
        })
    }

    /// A learned position table, its position offset registered under the loader's name (where prefix and
    /// prompt tuning set it).
    pub fn load_positions(
        loader: &ParamLoader,
        positions: usize,
        hidden: usize,
        std: f64,
    ) -> Result<Self> {
        let table = Self::load(loader, positions, hidden, std)?;
        loader
            .store()
            .register_position_offset(loader.name(), table.position_offset.clone());
        Ok(table)
    }

    /// The positions prefix or prompt tuning has taken (0 without).
    pub fn position_offset(&self) -> usize {
        self.position_offset.get().unwrap_or(0)
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
        let offset = self.position_offset.get().unwrap_or(0);
        let positions = match position_ids {
            Some(ids) if offset > 0 => {
                self.forward(&(ids.to_dtype(DType::U32)? + offset as f64)?)?
            }
            Some(ids) if ids.dtype() == DType::U32 => self.forward(ids)?,
            Some(ids) => self.forward(&ids.to_dtype(DType::U32)?)?,
            None => {
                let start = start + offset;
                let t = x.dim(1)?;
                let table = self.inner.embeddings().dim(0)?;
                if start + t > table {
                    candle_core::bail!(
                        "positions {start}..{} exceed the model's {table} positions{}",
                        start + t,
                        if offset > 0 {
                            format!(
                                " (the adapter's {offset} virtual tokens take the first {offset}: shorten the input, e.g. data.max_length)"
                            )
                        } else {
                            String::new()
                        }
                    )
                }
                let range = Tensor::arange(start as u32, (start + t) as u32, x.device())?;
                self.forward(&range)?.unsqueeze(0)?
            }
        };
        x.broadcast_add(&positions)
    }
}
