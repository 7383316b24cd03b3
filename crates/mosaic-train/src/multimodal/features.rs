//! The features a multimodal classifier's towers give, per batch or cached for a whole split: shared by the data
//! (which keeps a split's cache) and the model (which computes and fuses them).

use candle_core::Tensor;

use crate::error::Result;

/// What the towers give a batch (or, cached, a whole split): the image's pooled `(B, H_v)` features and tokens
/// `(B, P, H_v)`, the text's token states `(B, T, H_t)` and their mask `(B, T)` u32. A modality the fusion does
/// not read is `None`.
#[derive(Debug, Clone)]
pub struct TowerFeatures {
    pub image_pooled: Option<Tensor>,
    pub image_tokens: Option<Tensor>,
    pub text_tokens: Option<Tensor>,
    pub text_mask: Tensor,
}

impl TowerFeatures {
    /// The rows `idx` (u32 indices) of every feature.
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        let pick = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            Ok(match t {
                Some(t) => Some(t.index_select(idx, 0)?),
                None => None,
            })
        };
        Ok(TowerFeatures {
            image_pooled: pick(&self.image_pooled)?,
            image_tokens: pick(&self.image_tokens)?,
            text_tokens: pick(&self.text_tokens)?,
            text_mask: self.text_mask.index_select(idx, 0)?,
        })
    }
}
