//! Transformer models on candle that load and save Hugging Face folders under HF's tensor names — training grade:
//! every op records a backward pass, dropout is seeded and active only in training mode.
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use mosaic_models::{Bert, BertTask};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bert = Bert::from_folder("fixtures/models/tiny-bert-mlm".as_ref(), Some(BertTask::MaskedLm), None, 0, &Device::Cpu)?;
//! let ids = Tensor::new(&[[2u32, 10, 4, 3]], &Device::Cpu)?;
//! let hidden = bert.hidden_states(&ids, None, None)?;
//! let logits = bert.mlm_logits(&hidden)?; // (1, 4, vocab)
//! # let _ = logits; Ok(()) }
//! ```

pub mod bert;
pub mod boxes;
mod checkpoint;
pub mod clip;
pub mod config;
pub mod detr;
pub mod dropout;
pub mod error;
pub mod folder;
pub mod fusion;
pub mod generation;
pub mod gpt2;
pub mod grad_mode;
mod hf_config;
pub mod image_decoder;
pub mod layers;
pub mod llava;
pub mod loss;
pub mod params;
pub mod pretrained;
pub mod resnet;
pub mod source;
pub mod testing;
pub mod vit;

pub use bert::{BertModel, MaskedLmHead, l2_normalize, mean_pool};
pub use clip::{Clip, ClipConfig, ClipOutput};
pub use config::BertConfig;
pub use detr::{Detr, DetrConfig, DetrOutput};
pub use dropout::Mode;
pub use error::{ModelError, Result};
pub use folder::HfFolder;
pub use fusion::{ConcatFusion, CrossAttentionFusion, WeightedSumFusion};
pub use generation::{CausalLm, GenerationConfig, generate};
pub use gpt2::{Gpt2, Gpt2Config};
pub use grad_mode::{NoGradGuard, no_grad};
pub use image_decoder::{DecoderConfig, TextToImageDecoder};
pub use llava::{Llava, LlavaConfig};
pub use params::ParamStore;
pub use pretrained::{Bert, BertTask};
pub use resnet::{ResNet, ResNetConfig};
pub use source::ModelSource;
pub use vit::{Vit, VitConfig, VitTask};
