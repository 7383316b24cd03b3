//! DETR's image processor, as transformers' `DetrImageProcessor`: the `preprocessor_config.json` settings
//! (`config`), resizing, rescaling, normalising and padding images with their boxes (`processor`), and seeded
//! augmentation that moves boxes with the pixels (`augment`).

mod augment;
mod config;
mod objects;
mod processor;

pub use augment::{AugmentedImage, DetrAugmentation, crop, hflip};
pub use config::{
    DetrProcessorConfig, DetrResize, IMAGENET_MEAN, IMAGENET_STD, size_with_aspect_ratio,
};
pub use objects::{ObjectAnnotation, PixelObjects};
pub use processor::{DetrBatch, DetrExample, DetrImageProcessor, DetrTarget};
