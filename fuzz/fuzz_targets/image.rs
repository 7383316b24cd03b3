//! The image decoder path: `decode_bytes` (PNG/JPEG → RGB, as a data set's images are read), then the
//! preprocessing a model applies (CLIP-style shortest-edge resize + centre crop, ViT-style fixed resize) and
//! seeded training augmentation.
//!
//! Input: the image file's bytes.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mosaic_data::image::{ImageAugmentation, ImageProcessor, ImageProcessorConfig, decode_bytes};

fuzz_target!(|data: &[u8]| {
    let Ok(image) = decode_bytes(data, Path::new("image.png")) else {
        return;
    };
    assert_eq!(
        image.pixels().len(),
        image.width() * image.height() * 3,
        "decoded pixels do not match the image's size"
    );
    for config in [ImageProcessorConfig::clip(16), ImageProcessorConfig::vit(8)] {
        let processor = ImageProcessor::new(config);
        if let Ok(pixels) = processor.preprocess(&image) {
            let [c, h, w] = pixels.shape();
            assert_eq!(c * h * w, pixels.data.len());
        }
        let augmentation = ImageAugmentation {
            random_resized_crop: true,
            hflip_prob: 0.5,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            ..ImageAugmentation::default()
        };
        let _ = augmentation.apply(&image, &processor, 7);
    }
});
