//! Fusion of several modalities' features into one representation, each method a small module whose
//! parameters come from a [`ParamLoader`](crate::params::ParamLoader) under dotted names, like every model's:
//!
//! * [`ConcatFusion`]: pooled features `[(B, d_i)]` concatenated, then `Linear → activation → dropout`.
//! * [`CrossAttentionFusion`]: tokens of one modality attend to another's through the shared
//!   [`MultiHeadAttention`](crate::layers::MultiHeadAttention) block (optionally both ways), residual + layer norm,
//!   pooled over the valid tokens.
//! * [`WeightedSumFusion`]: each modality projected to a common width and summed with softmax weights, static or
//!   conditioned on the inputs, which it returns so a caller can report the modality the model leans on.
//! * [`TwoBranchCnn`]: two small convolution branches (two images or views) whose feature maps are summed, then
//!   globally average pooled.
//!
//! None of these has a transformers counterpart, so their parameter names are this crate's own.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mosaic_models::fusion::{Scoring, WeightedSumFusion};
//! use mosaic_models::params::{ParamLoader, ParamStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = ParamStore::new();
//! let loader = ParamLoader::fresh(store.clone(), 0, &Device::Cpu);
//! let fusion = WeightedSumFusion::load(&loader.pp("fusion"), &[4, 6], 8, Scoring::Static)?;
//! let text = Tensor::ones((2, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let image = Tensor::ones((2, 6), candle_core::DType::F32, &Device::Cpu)?;
//! let out = fusion.forward(&[text, image])?;
//! assert_eq!(out.fused.dims(), [2, 8]);
//! // Static scores start at zero: both modalities weigh 1/2.
//! assert_eq!(out.weights.to_vec2::<f32>()?, [[0.5, 0.5], [0.5, 0.5]]);
//! # Ok(()) }
//! ```

mod concat;
mod cross_attention;
mod two_branch_cnn;
mod weighted_sum;

#[cfg(test)]
mod tests;

pub use concat::ConcatFusion;
pub use cross_attention::{
    CrossAttentionConfig, CrossAttentionFusion, CrossAttentionOutput, Direction,
};
pub use two_branch_cnn::TwoBranchCnn;
pub use weighted_sum::{Scoring, WeightedSumFusion, WeightedSumOutput};

use candle_core::Tensor;

use crate::error::{ModelError, Result};

/// The std of fresh projection weights (BERT's `initializer_range`).
const INIT_STD: f64 = 0.02;

/// Checks pooled features against the widths a module was built for: as many inputs as widths, each
/// `(B, d_i)` with one batch size. `what` names the module in the message.
fn check_pooled(what: &str, inputs: &[Tensor], widths: &[usize]) -> Result<usize> {
    if inputs.len() != widths.len() {
        return Err(ModelError::InvalidInput(format!(
            "{what}: expected {} modality inputs, got {}",
            widths.len(),
            inputs.len()
        )));
    }
    let mut batch = None;
    for (i, (x, &want)) in inputs.iter().zip(widths).enumerate() {
        let (b, got) = x.dims2().map_err(|_| {
            ModelError::InvalidInput(format!(
                "{what}: modality {i} must be (batch, {want}), got shape {:?}",
                x.dims()
            ))
        })?;
        if got != want {
            return Err(ModelError::InvalidInput(format!(
                "{what}: modality {i} has width {got}, expected {want}"
            )));
        }
        match batch {
            None => batch = Some(b),
            Some(b0) if b0 != b => {
                return Err(ModelError::InvalidInput(format!(
                    "{what}: modality {i} has batch size {b}, modality 0 has {b0}"
                )));
            }
            Some(_) => {}
        }
    }
    batch.ok_or_else(|| ModelError::InvalidInput(format!("{what}: no modality inputs")))
}
