//! ResNet (He et al.) as Hugging Face's `modeling_resnet` defines it — training grade: convolutions and batch
//! norms record backward passes, batch norm keeps PyTorch's running statistics (updated in training mode, used in
//! eval mode) — with the image-classification head, loading and saving HF folders.
//!
//! The running statistics are buffers, not parameters: [`ResNet::params`] (what an optimizer updates) holds only
//! trainable tensors; [`ResNet::buffers`] holds `….running_mean`, `….running_var` and `….num_batches_tracked`,
//! which [`ResNet::save`] writes and [`ResNet::state_tensors`] lists alongside the parameters.
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use mosaic_models::ResNet;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let resnet = ResNet::from_folder("fixtures/models/tiny-resnet".as_ref(), None, 0, &Device::Cpu)?;
//! let pixels = Tensor::zeros((2, 3, 32, 32), candle_core::DType::F32, &Device::Cpu)?;
//! let logits = resnet.logits(&pixels)?; // (2, 3), eval mode: running statistics
//! resnet.set_training(true); // batch statistics, running averages updated on each forward
//! # let _ = logits; Ok(()) }
//! ```

mod buffers;
mod config;
mod layers;
mod model;
mod pretrained;

pub(crate) use buffers::BufferLoader;
pub use buffers::{BufferStore, FixedTensor, RunningStats};
pub use config::{BATCH_NORM_EPS, BATCH_NORM_MOMENTUM, LayerType, ResNetConfig};
pub(crate) use layers::Scope;
pub use layers::{
    BatchNorm2d, Conv2d, ConvLayer, FrozenBatchNorm2d, Normalization, conv2d, max_pool2d,
};
pub use model::{ResNetEmbeddings, ResNetModel, ResNetShortCut, ResidualBlock};
pub use pretrained::ResNet;
