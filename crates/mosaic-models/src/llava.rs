//! LLaVA (Liu et al., visual instruction tuning) as Hugging Face's `LlavaForConditionalGeneration` defines it:
//! a CLIP vision tower, a projector into the language model's embedding space, and a GPT-2 whose `<image>`
//! placeholder tokens are replaced by the projected image features. Folders load in both of transformers'
//! weight layouts and save in the one `save_pretrained` writes; [`Llava::from_parts`] joins a CLIP and a GPT-2.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use mosaic_models::Llava;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let llava = Llava::from_folder("fixtures/models/tiny-llava".as_ref(), 0, &Device::Cpu)?;
//! let pixels = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?;
//! let mut ids = vec![llava.config.image_token_index; llava.config.image_features()];
//! ids.extend([10u32, 11, 12]);
//! let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
//! let logits = llava.logits(&ids, Some(&pixels), &[1], None)?; // (1, T, vocab)
//! # let _ = logits; Ok(()) }
//! ```

mod config;
mod generate;
mod model;
mod parts;

pub use config::{FeatureLayers, FeatureSelect, LlavaConfig, ProjectorKind};
pub use model::{Llava, LlavaProjector, file_layout_name};
pub use parts::LlavaParts;
