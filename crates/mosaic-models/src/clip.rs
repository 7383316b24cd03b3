//! CLIP (Radford et al.) as Hugging Face's `modeling_clip` defines it — both towers, projections and
//! `logit_scale`, training grade (every op has a backward pass; attention dropout is seeded) — and zero-shot
//! classification with prompt ensembles, and CoOp's learned prompt context ([`CoopPrompt`]).
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use mosaic_models::Clip;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clip = Clip::from_folder("fixtures/models/tiny-clip".as_ref(), 0, &Device::Cpu)?;
//! let pixels = Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &Device::Cpu)?;
//! let ids = Tensor::new(&[[540u32, 320, 516, 541]], &Device::Cpu)?;
//! let out = clip.forward(&ids, None, &pixels)?;
//! println!("{}", out.logits_per_image); // (1, 1)
//! # Ok(()) }
//! ```

mod config;
pub mod coop;
mod encoder;
mod model;
mod text;
mod vision;
pub mod zero_shot;

pub use config::{ClipActivation, ClipConfig, ClipEncoderConfig, ClipTextConfig, ClipVisionConfig};
pub use coop::CoopPrompt;
pub use encoder::ClipEncoder;
pub use model::{Clip, ClipOutput, clip_loss, probabilities};
pub use text::{ClipTextOutput, ClipTextTransformer};
pub use vision::{ClipVisionOutput, ClipVisionTransformer};
