//! Seeded training augmentation for detection, moving boxes with the pixels: horizontal flip, random crop and
//! DETR's multi-scale resize (`RandomResize(scales, max_size)` of the original DETR's `transforms.py`).
//!
//! Each call draws from `(seed, stream)` only, as [`ImageAugmentation`](crate::image::ImageAugmentation) does, so an
//! example's augmentation does not depend on batch order or threads, and a resumed run sees the same images.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::objects::PixelObjects;
use crate::image::decode::RgbImage;
use crate::image::error::{ImageError, ImageResult};
use crate::seed::mix;

/// Random changes applied to a detection training image and its boxes before resizing and normalising.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetrAugmentation {
    /// Probability of mirroring left to right (boxes mirrored too). Default 0.5.
    pub hflip_prob: f64,
    /// Probability of cropping a random region. Default 0 (off).
    pub crop_prob: f64,
    /// Range of the crop's width and height as fractions of the image's (drawn independently). Boxes are clipped
    /// to the crop; a box left with no width or height is dropped, with its label; areas are recomputed from the
    /// clipped boxes (as the original DETR's `crop`). Default `[0.5, 1.0]`.
    pub crop_scale: [f64; 2],
    /// Shortest edges to draw from (DETR's multi-scale training, e.g. 480..800 by 32); when not empty the drawn
    /// one replaces the processor's resize step. Default empty (the processor's own resize).
    pub scales: Vec<usize>,
    /// The cap on the longer side with `scales` (DETR: 1333). Default none.
    pub max_size: Option<usize>,
    /// The seed.
    pub seed: u64,
}

impl Default for DetrAugmentation {
    fn default() -> Self {
        DetrAugmentation {
            hflip_prob: 0.5,
            crop_prob: 0.0,
            crop_scale: [0.5, 1.0],
            scales: Vec::new(),
            max_size: None,
            seed: 0,
        }
    }
}

/// An augmented image with its boxes, before the resize step.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentedImage {
    /// The flipped and / or cropped image.
    pub image: RgbImage,
    /// Its objects, corner boxes in its pixels.
    pub objects: PixelObjects,
    /// The drawn multi-scale resize `(shortest_edge, max_size)` when `scales` is set; the caller resizes, moving
    /// the boxes too.
    pub scale: Option<(usize, Option<usize>)>,
}

impl DetrAugmentation {
    /// Checks that the probabilities and ranges make sense.
    pub fn validate(&self) -> ImageResult<()> {
        let bad = |m: String| Err(ImageError::Transform(m));
        for (name, p) in [
            ("hflip_prob", self.hflip_prob),
            ("crop_prob", self.crop_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p} is not a probability"));
            }
        }
        let [s0, s1] = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return bad(format!(
                "crop_scale [{s0}, {s1}] must satisfy 0 < min <= max <= 1"
            ));
        }
        if self.scales.contains(&0) || self.max_size == Some(0) {
            return bad("scales and max_size must be positive".into());
        }
        Ok(())
    }

    /// Augments one image and its corner boxes with random stream `stream`.
    pub fn apply(
        &self,
        image: &RgbImage,
        objects: PixelObjects,
        stream: u64,
    ) -> ImageResult<AugmentedImage> {
        self.validate()?;
        let mut rng = StdRng::seed_from_u64(mix(self.seed, stream));
        let (mut image, mut objects) = if rng.random::<f64>() < self.hflip_prob {
            hflip(image, &objects)
        } else {
            (image.clone(), objects)
        };
        if rng.random::<f64>() < self.crop_prob {
            let (w, h) = (image.width(), image.height());
            let side = |n: usize, rng: &mut StdRng| {
                let f = rng.random_range(self.crop_scale[0]..=self.crop_scale[1]);
                ((n as f64 * f).round() as usize).clamp(1, n)
            };
            let (cw, ch) = (side(w, &mut rng), side(h, &mut rng));
            let left = rng.random_range(0..=w - cw);
            let top = rng.random_range(0..=h - ch);
            (image, objects) = crop(&image, &objects, left, top, cw, ch)?;
        }
        let scale = if self.scales.is_empty() {
            None
        } else {
            let i = rng.random_range(0..self.scales.len());
            Some((self.scales[i], self.max_size))
        };
        Ok(AugmentedImage {
            image,
            objects,
            scale,
        })
    }
}

/// Mirrors an image left to right with its corner boxes: `x0, x1` become `width - x1, width - x0`.
pub fn hflip(image: &RgbImage, objects: &PixelObjects) -> (RgbImage, PixelObjects) {
    let w = image.width() as f32;
    let mut out = objects.clone();
    for b in &mut out.boxes {
        *b = [w - b[2], b[1], w - b[0], b[3]];
    }
    (image.flip_horizontal(), out)
}

/// The `width` x `height` region at `(left, top)` with its boxes: shifted, clipped to the region, dropped when
/// nothing of them is left, areas recomputed from the clipped boxes.
pub fn crop(
    image: &RgbImage,
    objects: &PixelObjects,
    left: usize,
    top: usize,
    width: usize,
    height: usize,
) -> ImageResult<(RgbImage, PixelObjects)> {
    let cropped = image.crop(left, top, width, height)?;
    let (l, t, w, h) = (left as f32, top as f32, width as f32, height as f32);
    let mut out = PixelObjects::default();
    for (i, b) in objects.boxes.iter().enumerate() {
        let x0 = (b[0] - l).clamp(0.0, w);
        let y0 = (b[1] - t).clamp(0.0, h);
        let x1 = (b[2] - l).clamp(0.0, w);
        let y1 = (b[3] - t).clamp(0.0, h);
        if x1 > x0 && y1 > y0 {
            out.push(
                [x0, y0, x1, y1],
                objects.class_labels[i],
                (x1 - x0) * (y1 - y0),
            );
        }
    }
    Ok((cropped, out))
}

#[cfg(test)]
mod tests {
    use super::super::{DetrImageProcessor, DetrProcessorConfig, DetrResize, ObjectAnnotation};
    use super::*;

    /// A black 40x30 image with a white square over x 5..15, y 8..18, and its box.
    fn square() -> (RgbImage, PixelObjects) {
        let image = RgbImage::from_fn(40, 30, |x, y| {
            if (5..15).contains(&x) && (8..18).contains(&y) {
                [255; 3]
            } else {
                [0; 3]
            }
        })
        .unwrap();
        let objects =
            PixelObjects::from_coco(&[ObjectAnnotation::new([5.0, 8.0, 10.0, 10.0], 7)], 40, 30);
        (image, objects)
    }

    /// The corner box `[x0, y0, x1, y1)` of the pixels brighter than mid-grey, if any.
    fn white_box(
        width: usize,
        height: usize,
        value: impl Fn(usize, usize) -> f32,
    ) -> Option<[f32; 4]> {
        let mut b: Option<[usize; 4]> = None;
        for y in 0..height {
            for x in 0..width {
                if value(x, y) > 127.5 {
                    let e = b.get_or_insert([x, y, x + 1, y + 1]);
                    *e = [e[0].min(x), e[1].min(y), e[2].max(x + 1), e[3].max(y + 1)];
                }
            }
        }
        b.map(|b| b.map(|v| v as f32))
    }

    fn image_box(image: &RgbImage) -> Option<[f32; 4]> {
        white_box(image.width(), image.height(), |x, y| {
            image.get(x, y)[0] as f32
        })
    }

    #[test]
    fn flip_moves_the_box_with_the_square() {
        let (image, objects) = square();
        let (flipped, out) = hflip(&image, &objects);
        assert_eq!(out.boxes, [[25.0, 8.0, 35.0, 18.0]]);
        assert_eq!(image_box(&flipped), Some(out.boxes[0]));
    }

    #[test]
    fn crop_clips_the_box_to_the_visible_square_or_drops_it() {
        let (image, objects) = square();
        let (c, out) = crop(&image, &objects, 10, 0, 20, 15).unwrap();
        assert_eq!(out.boxes, [[0.0, 8.0, 5.0, 15.0]]);
        assert_eq!(out.area, [35.0]);
        assert_eq!(image_box(&c), Some(out.boxes[0]));
        let (c, out) = crop(&image, &objects, 20, 0, 20, 30).unwrap();
        assert!(out.is_empty() && image_box(&c).is_none());
    }

    #[test]
    fn random_augmentation_keeps_boxes_on_the_pixels() {
        let (image, objects) = square();
        let aug = DetrAugmentation {
            hflip_prob: 0.5,
            crop_prob: 1.0,
            crop_scale: [0.3, 1.0],
            ..DetrAugmentation::default()
        };
        let (mut kept, mut dropped) = (0, 0);
        for stream in 0..64 {
            let AugmentedImage {
                image: img,
                objects: out,
                scale,
            } = aug.apply(&image, objects.clone(), stream).unwrap();
            assert!(scale.is_none());
            assert_eq!(
                image_box(&img),
                out.boxes.first().copied(),
                "stream {stream}"
            );
            if out.is_empty() {
                dropped += 1
            } else {
                kept += 1
            }
        }
        assert!(kept > 0 && dropped > 0, "{kept} kept, {dropped} dropped");
        // The same stream gives the same draw.
        assert_eq!(
            aug.apply(&image, objects.clone(), 3).unwrap(),
            aug.apply(&image, objects, 3).unwrap()
        );
    }

    #[test]
    fn multi_scale_resize_moves_the_box_within_a_pixel() {
        let (image, _) = square();
        let processor = DetrImageProcessor::new(DetrProcessorConfig {
            size: DetrResize::ShortestEdge {
                shortest_edge: 30,
                longest_edge: None,
            },
            do_rescale: false,
            do_normalize: false,
            do_convert_annotations: false,
            ..DetrProcessorConfig::default()
        });
        let aug = DetrAugmentation {
            scales: vec![21, 45, 60],
            max_size: Some(70),
            ..DetrAugmentation::default()
        };
        let objects = [ObjectAnnotation::new([5.0, 8.0, 10.0, 10.0], 7)];
        let mut sizes = std::collections::BTreeSet::new();
        for stream in 0..16 {
            let ex = processor
                .process_augmented(&image, &objects, Some((&aug, stream)))
                .unwrap();
            let (h, w) = ex.target.resized_size;
            sizes.insert((h, w));
            let px = &ex.pixels;
            let found = white_box(w, h, |x, y| px.data[y * px.width + x]).unwrap();
            for (a, e) in ex.target.boxes[0].iter().zip(found) {
                assert!(
                    (a - e).abs() <= 1.0,
                    "{:?} vs {found:?} at {h}x{w}",
                    ex.target.boxes[0]
                );
            }
        }
        // 21 -> 21x28, 45 -> 45x60, 60 -> capped at 70 wide: 52x70.
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            [(21, 28), (45, 60), (52, 70)]
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        for aug in [
            DetrAugmentation {
                hflip_prob: 1.5,
                ..DetrAugmentation::default()
            },
            DetrAugmentation {
                crop_scale: [0.0, 1.0],
                ..DetrAugmentation::default()
            },
            DetrAugmentation {
                scales: vec![0],
                ..DetrAugmentation::default()
            },
        ] {
            assert!(aug.validate().is_err());
        }
    }
}
