//! The image pipeline: decoding (PNG, JPEG), conversion to RGB, Hugging Face-compatible preprocessing
//! (`preprocessor_config.json`: shortest-edge or fixed resize with PIL-exact resampling, centre crop, rescale,
//! normalise), DETR's detection processor (`DetrImageProcessor`: boxes moved with the image, batches padded with a
//! pixel mask), seeded training augmentation, image data sets and parallel batch decoding.
//!
//! Pixel values are plain `Vec<f32>` in CHW order (no tensor library), equal to transformers'
//! `CLIPImageProcessor` (PIL backend) output.
//!
//! ```no_run
//! use mosaic_data::image::{ImageProcessor, OnBadImage, decode_file};
//!
//! # fn main() -> Result<(), mosaic_data::image::ImageError> {
//! let processor = ImageProcessor::from_folder("fixtures/models/tiny-clip".as_ref())?;
//! let image = decode_file("fixtures/images/landscape.png".as_ref())?;
//! let pixels = processor.preprocess(&image)?; // 3 x 32 x 32
//! assert_eq!(pixels.shape(), [3, 32, 32]);
//! let batch = processor.load_batch(&["fixtures/images/photo.jpg".into()], OnBadImage::Skip)?;
//! assert_eq!(batch.shape, [1, 3, 32, 32]);
//! # Ok(()) }
//! ```

mod augment;
mod batch;
mod dataset;
mod decode;
mod detr;
mod error;
mod processor;
mod resize;

pub use augment::ImageAugmentation;
pub use batch::{ImageBatch, OnBadImage, load_batch};
pub use dataset::{
    IMAGE_EXTENSIONS, ImageDataset, ImageExample, ImageRecordConfig, ImageTextDataset,
    ImageTextExample, resolve_inside,
};
pub use decode::{MAX_IMAGE_PIXELS, RgbImage, decode_bytes, decode_file};
pub use detr::{
    AugmentedImage, DetrAugmentation, DetrBatch, DetrExample, DetrImageProcessor,
    DetrProcessorConfig, DetrResize, DetrTarget, IMAGENET_MEAN, IMAGENET_STD, ObjectAnnotation,
    PixelObjects, crop as crop_with_boxes, hflip as hflip_with_boxes, size_with_aspect_ratio,
};
pub use error::{ImageError, ImageResult};
pub use processor::{
    CLIP_MEAN, CLIP_STD, ImageProcessor, ImageProcessorConfig, PixelValues, ResizeTarget,
    center_crop, resize_output_size,
};
pub use resize::{Resample, resize};
