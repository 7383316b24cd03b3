//! DETR (Carion et al., "End-to-End Object Detection with Transformers") as transformers'
//! `DetrForObjectDetection` has it with an HF ResNet backbone (`use_timm_backbone = false`): the ResNet with
//! frozen batch norms, a 1×1 input projection, sine position embeddings from the pixel mask, a post-norm
//! transformer encoder-decoder over learned object queries, a class head (`labels + 1`, the last "no object") and a
//! 3-layer box head with a sigmoid, plus the auxiliary predictions of every decoder layer; loading and saving HF
//! folders under transformers' names, and `post_process_object_detection`.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use mosaic_models::detr::{Detr, post_process_object_detection};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let detr = Detr::from_folder("fixtures/models/tiny-detr".as_ref(), None, 0, &Device::Cpu)?;
//! let pixels = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
//! let out = mosaic_models::no_grad(|| detr.forward(&pixels, None))?;
//! let detections = post_process_object_detection(&out.logits, &out.pred_boxes, 0.5, Some(&[(480, 640)]))?;
//! # let _ = detections; Ok(()) }
//! ```

mod config;
mod model;
mod position;
mod postprocess;
mod transformer;

pub use config::{DetrConfig, RawDetrConfig};
pub use model::{BackboneNorms, Detr, DetrOutput, DetrPrediction};
pub use position::FeatureMask;
pub use postprocess::{Detection, post_process_object_detection};
pub use transformer::{DecoderOutput, DetrDecoder, DetrDecoderLayer, DetrEncoder};
