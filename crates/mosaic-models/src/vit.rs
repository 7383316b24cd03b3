//! ViT (Dosovitskiy et al.) as Hugging Face's `modeling_vit` defines it — training grade (every op has a backward
//! pass, dropout is seeded) — with the image-classification head, loading and saving HF folders.
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use mosaic_models::Vit;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vit = Vit::from_folder("fixtures/models/tiny-vit".as_ref(), None, None, 0, &Device::Cpu)?;
//! let pixels = Tensor::zeros((2, 3, 32, 32), candle_core::DType::F32, &Device::Cpu)?;
//! let out = vit.forward(&pixels)?;
//! let logits = vit.logits(&out.last_hidden_state)?; // (2, 3)
//! # let _ = logits; Ok(()) }
//! ```

mod config;
mod model;
mod patch;
mod pretrained;

pub use config::VitConfig;
pub use model::{VitEmbeddings, VitModel, VitOutput};
pub use patch::PatchEmbedding;
pub use pretrained::{Vit, VitTask};
