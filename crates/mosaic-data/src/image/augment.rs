//! Seeded training augmentation for images: random resized crop (torchvision's `RandomResizedCrop` sampling),
//! horizontal flip and colour jitter (brightness, contrast, saturation, blended as PIL's `ImageEnhance`).
//!
//! Each call draws from `(seed, stream)` only, so an example's augmentation does not depend on the order or the
//! thread in which examples are processed, and a resumed run sees the same images.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::decode::RgbImage;
use super::error::{ImageError, ImageResult};
use super::processor::{ImageProcessor, PixelValues};
use super::resize::resize;
use crate::seed::mix;

/// Random changes applied to training images before rescaling and normalising.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageAugmentation {
    /// Crop a random region (area fraction in `scale`, aspect ratio in `ratio`) and resize it to the
    /// processor's output size; otherwise the processor's own resize and centre crop are used.
    pub random_resized_crop: bool,
    /// Range of the crop's area as a fraction of the image. Default `[0.08, 1.0]`.
    pub scale: [f64; 2],
    /// Range of the crop's width / height. Default `[3/4, 4/3]`.
    pub ratio: [f64; 2],
    /// Probability of mirroring left to right. Default 0.5.
    pub hflip_prob: f64,
    /// Brightness factor drawn from `[max(0, 1 - b), 1 + b]`; 0 = off.
    pub brightness: f64,
    /// Contrast factor drawn likewise; 0 = off.
    pub contrast: f64,
    /// Saturation factor drawn likewise; 0 = off.
    pub saturation: f64,
    /// The seed.
    pub seed: u64,
}

impl Default for ImageAugmentation {
    fn default() -> Self {
        ImageAugmentation {
            random_resized_crop: true,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip_prob: 0.5,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            seed: 0,
        }
    }
}

impl ImageAugmentation {
    /// Checks that the ranges and probabilities make sense.
    pub fn validate(&self) -> ImageResult<()> {
        let bad = |m: String| Err(ImageError::Transform(m));
        let [s0, s1] = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return bad(format!(
                "scale [{s0}, {s1}] must satisfy 0 < min <= max <= 1"
            ));
        }
        let [r0, r1] = self.ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return bad(format!("ratio [{r0}, {r1}] must satisfy 0 < min <= max"));
        }
        if !(0.0..=1.0).contains(&self.hflip_prob) {
            return bad(format!(
                "hflip_prob {} is not a probability",
                self.hflip_prob
            ));
        }
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("{name} {v} must be a non-negative number"));
            }
        }
        Ok(())
    }

    /// Augments one image and turns it into pixel values with `processor`'s rescale and normalisation.
    /// `stream` picks the random draw (derive it from the epoch and the example index).
    pub fn apply(
        &self,
        image: &RgbImage,
        processor: &ImageProcessor,
        stream: u64,
    ) -> ImageResult<PixelValues> {
        self.validate()?;
        let mut rng = StdRng::seed_from_u64(mix(self.seed, stream));
        let mut image = if self.random_resized_crop {
            let (out_h, out_w) = processor.config.output_size().ok_or_else(|| {
                ImageError::Transform(
                    "random_resized_crop needs a fixed output size (a crop_size, or a height/width size)"
                        .into(),
                )
            })?;
            let (left, top, w, h) = self.crop_box(image.width(), image.height(), &mut rng);
            resize(
                &image.crop(left, top, w, h)?,
                out_w,
                out_h,
                processor.config.resample,
            )?
        } else {
            processor.resize_and_crop(image)?
        };
        if rng.random::<f64>() < self.hflip_prob {
            image = image.flip_horizontal();
        }
        if self.brightness > 0.0 {
            let f = factor(self.brightness, &mut rng);
            blend_with(&mut image, f, |_| [0.0; 3]);
        }
        if self.contrast > 0.0 {
            let f = factor(self.contrast, &mut rng);
            // PIL's Contrast enhancer blends towards the (rounded) mean grey level of the whole image.
            let pixels = image.pixels();
            let sum: f64 = pixels.chunks_exact(3).map(|p| luma(p) as f64).sum();
            let mean = (sum / (pixels.len() / 3) as f64 + 0.5).floor();
            blend_with(&mut image, f, |_| [mean; 3]);
        }
        if self.saturation > 0.0 {
            let f = factor(self.saturation, &mut rng);
            blend_with(&mut image, f, |p| [luma(p) as f64; 3]);
        }
        Ok(processor.to_pixel_values(&image))
    }

    /// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and log-uniform aspect ratio,
    /// then a centre crop with the ratio clamped into range. Returns `(left, top, width, height)`.
    fn crop_box(
        &self,
        width: usize,
        height: usize,
        rng: &mut StdRng,
    ) -> (usize, usize, usize, usize) {
        let area = (width * height) as f64;
        let (log_r0, log_r1) = (self.ratio[0].ln(), self.ratio[1].ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale[0]..=self.scale[1]);
            let aspect = rng.random_range(log_r0..=log_r1).exp();
            let w = (target * aspect).sqrt().round() as usize;
            let h = (target / aspect).sqrt().round() as usize;
            if w > 0 && h > 0 && w <= width && h <= height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return (left, top, w, h);
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio[0] {
            (
                width,
                ((width as f64 / self.ratio[0]).round() as usize).clamp(1, height),
            )
        } else if in_ratio > self.ratio[1] {
            (
                ((height as f64 * self.ratio[1]).round() as usize).clamp(1, width),
                height,
            )
        } else {
            (width, height)
        };
        ((width - w) / 2, (height - h) / 2, w, h)
    }
}

fn factor(amount: f64, rng: &mut StdRng) -> f64 {
    rng.random_range((1.0 - amount).max(0.0)..=1.0 + amount)
}

/// ITU-R 601-2 luma as PIL's `convert("L")`: `(R*299 + G*587 + B*114) / 1000`, in fixed point.
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `out = degenerate + factor * (pixel - degenerate)`, rounded and clamped (PIL's `Image.blend`).
fn blend_with(image: &mut RgbImage, factor: f64, degenerate: impl Fn(&[u8]) -> [f64; 3]) {
    for p in image.pixels_mut().chunks_exact_mut(3) {
        let d = degenerate(p);
        for c in 0..3 {
            let v = d[c] + factor * (p[c] as f64 - d[c]);
            p[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}
