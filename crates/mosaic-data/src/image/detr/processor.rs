//! DETR's image processor, as transformers' `DetrImageProcessorPil` (what `DetrImageProcessor` resolves to without
//! torchvision): resize by shortest / longest edge through PIL-exact resampling, rescale, normalise, pad a batch
//! bottom-right to its largest height and width with a pixel mask, and COCO boxes transformed with the image.
//!
//! Boxes follow transformers to the float: `prepare_coco_detection_annotation` (crowd objects dropped, `[x, y, w, h]`
//! to corners, clipped to the image, empty boxes dropped), `resize_annotation` (scaled in `f32`),
//! `normalize_annotation` (corners to `(cx, cy, w, h)` divided by the resized size) and, when a batch is padded,
//! `_update_annotation_for_padded_image`: transformers then re-expresses the normalised boxes **relative to the
//! padded canvas** (and `size` becomes the padded size), so a box keeps its place in pixels. An image that is not
//! padded keeps boxes relative to its own size.

use std::path::Path;

use super::augment::DetrAugmentation;
use super::config::{DetrProcessorConfig, DetrResize, size_with_aspect_ratio};
use super::objects::{ObjectAnnotation, PixelObjects};
use crate::image::decode::RgbImage;
use crate::image::error::{ImageError, ImageResult};
use crate::image::processor::{ImageProcessor, ImageProcessorConfig, PixelValues, ResizeTarget};
use crate::image::resize::resize;

/// The labels of one image, as transformers' `labels[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetrTarget {
    /// `[n]` class labels.
    pub class_labels: Vec<i64>,
    /// `[n]` boxes: normalised `(cx, cy, w, h)` relative to `size` when `do_convert_annotations`, else corner
    /// pixels `(x0, y0, x1, y1)` of the resized image.
    pub boxes: Vec<[f32; 4]>,
    /// `[n]` areas in resized pixels.
    pub area: Vec<f32>,
    /// `(height, width)` of the image given (before resizing; before augmentation too).
    pub orig_size: (usize, usize),
    /// `(height, width)` of the resized image, without padding: where its real pixels end.
    pub resized_size: (usize, usize),
    /// `(height, width)` the boxes are relative to: the padded size in a padded batch, else `resized_size`.
    pub size: (usize, usize),
}

/// One processed image before collation.
#[derive(Debug, Clone, PartialEq)]
pub struct DetrExample {
    /// `[3, h, w]` resized, rescaled and normalised pixels.
    pub pixels: PixelValues,
    /// Its labels, boxes relative to the resized image.
    pub target: DetrTarget,
}

/// A collated batch: what `DetrImageProcessor(images, annotations)` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct DetrBatch {
    /// `[batch, 3, height, width]` f32, zero where padded.
    pub pixel_values: Vec<f32>,
    /// `[batch, height, width]`, 1 on real pixels, 0 on padding (transformers' `int64`; `u32` here as candle
    /// takes it).
    pub pixel_mask: Vec<u32>,
    /// Per image, in batch order.
    pub targets: Vec<DetrTarget>,
    /// The batch size.
    pub batch: usize,
    /// The common height.
    pub height: usize,
    /// The common width.
    pub width: usize,
}

/// Applies a [`DetrProcessorConfig`] to images and their COCO annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct DetrImageProcessor {
    /// The settings.
    pub config: DetrProcessorConfig,
    /// The rescale and normalise steps, shared with the CLIP / ViT processor.
    pixels: ImageProcessor,
}

impl DetrImageProcessor {
    /// A processor with these settings.
    pub fn new(config: DetrProcessorConfig) -> Self {
        let pixels = ImageProcessor::new(ImageProcessorConfig {
            do_resize: false,
            size: ResizeTarget::ShortestEdge(1),
            resample: config.resample,
            do_center_crop: false,
            crop_size: (1, 1),
            do_rescale: config.do_rescale,
            rescale_factor: config.rescale_factor,
            do_normalize: config.do_normalize,
            image_mean: config.image_mean,
            image_std: config.image_std,
        });
        DetrImageProcessor { config, pixels }
    }

    /// The processor of a model folder (its `preprocessor_config.json`).
    pub fn from_folder(dir: &Path) -> ImageResult<Self> {
        Ok(Self::new(DetrProcessorConfig::read(
            &dir.join("preprocessor_config.json"),
        )?))
    }

    /// The `(height, width)` the resize step gives a `width` x `height` image.
    pub fn output_size(&self, width: usize, height: usize) -> (usize, usize) {
        if !self.config.do_resize {
            return (height, width);
        }
        match self.config.size {
            DetrResize::ShortestEdge {
                shortest_edge,
                longest_edge,
            } => size_with_aspect_ratio(height, width, shortest_edge, longest_edge),
            DetrResize::Exact { height, width } => (height, width),
        }
    }

    /// Processes one image and its objects (boxes in pixels of `image`), without augmentation.
    pub fn process(
        &self,
        image: &RgbImage,
        objects: &[ObjectAnnotation],
    ) -> ImageResult<DetrExample> {
        self.process_augmented(image, objects, None)
    }

    /// Processes one image, first applying `augmentation` with random stream `stream` (derive it from the epoch
    /// and the example index) when given. The augmentation's multi-scale resize, when it has scales, replaces the
    /// config's resize step.
    pub fn process_augmented(
        &self,
        image: &RgbImage,
        objects: &[ObjectAnnotation],
        augmentation: Option<(&DetrAugmentation, u64)>,
    ) -> ImageResult<DetrExample> {
        let orig_size = (image.height(), image.width());
        let objects = PixelObjects::from_coco(objects, image.width(), image.height());
        let (image, mut objects, size) = match augmentation {
            Some((aug, stream)) => {
                let a = aug.apply(image, objects, stream)?;
                let (h, w) = (a.image.height(), a.image.width());
                let size = match a.scale {
                    Some((shortest, longest)) => size_with_aspect_ratio(h, w, shortest, longest),
                    None => self.output_size(w, h),
                };
                (a.image, a.objects, size)
            }
            None => (
                image.clone(),
                objects,
                self.output_size(image.width(), image.height()),
            ),
        };
        let image = if size != (image.height(), image.width()) {
            let resized = resize(&image, size.1, size.0, self.config.resample)?;
            scale_objects(&mut objects, (image.height(), image.width()), size);
            resized
        } else {
            image
        };
        let pixels = self.pixels.to_pixel_values(&image);
        let boxes = if self.config.do_convert_annotations {
            normalize_boxes(&objects.boxes, size)
        } else {
            objects.boxes
        };
        Ok(DetrExample {
            pixels,
            target: DetrTarget {
                class_labels: objects.class_labels,
                boxes,
                area: objects.area,
                orig_size,
                resized_size: size,
                size,
            },
        })
    }

    /// Pads examples bottom-right to the batch's largest height and width (or `pad_size`) with zeros, makes the
    /// pixel mask and re-expresses normalised boxes relative to the padded size, as transformers' `pad`.
    /// Without `do_pad` every image must already have the same size; the mask is then all ones.
    pub fn collate(&self, examples: Vec<DetrExample>) -> ImageResult<DetrBatch> {
        let Some(first) = examples.first() else {
            return Err(ImageError::Transform(
                "cannot collate an empty batch".into(),
            ));
        };
        let (height, width) = match (self.config.do_pad, self.config.pad_size) {
            (true, Some(pad)) => pad,
            (true, None) => examples.iter().fold((0, 0), |(h, w), e| {
                (h.max(e.pixels.height), w.max(e.pixels.width))
            }),
            (false, _) => (first.pixels.height, first.pixels.width),
        };
        let batch = examples.len();
        let mut pixel_values = vec![0f32; batch * 3 * height * width];
        let mut pixel_mask = vec![0u32; batch * height * width];
        let mut targets = Vec::with_capacity(batch);
        for (i, example) in examples.into_iter().enumerate() {
            let DetrExample { pixels, mut target } = example;
            let (h, w) = (pixels.height, pixels.width);
            if h > height || w > width || (!self.config.do_pad && (h, w) != (height, width)) {
                return Err(ImageError::Transform(format!(
                    "image {i} of the batch is {h}x{w} (height x width), which does not fit {height}x{width} \
                     (turn on do_pad, or raise pad_size)"
                )));
            }
            let image = &mut pixel_values[i * 3 * height * width..(i + 1) * 3 * height * width];
            for c in 0..3 {
                for y in 0..h {
                    let src = &pixels.data[(c * h + y) * w..(c * h + y + 1) * w];
                    image[(c * height + y) * width..(c * height + y) * width + w]
                        .copy_from_slice(src);
                }
            }
            let mask = &mut pixel_mask[i * height * width..(i + 1) * height * width];
            for row in mask.chunks_exact_mut(width).take(h) {
                row[..w].fill(1);
            }
            if (h, w) != (height, width) {
                if self.config.do_convert_annotations {
                    // `boxes *= [w / W, h / H, w / W, h / H]` with a float64 factor, stored back in float32.
                    let (fx, fy) = (w as f64 / width as f64, h as f64 / height as f64);
                    for b in &mut target.boxes {
                        *b = [
                            (b[0] as f64 * fx) as f32,
                            (b[1] as f64 * fy) as f32,
                            (b[2] as f64 * fx) as f32,
                            (b[3] as f64 * fy) as f32,
                        ];
                    }
                }
                target.size = (height, width);
            }
            targets.push(target);
        }
        Ok(DetrBatch {
            pixel_values,
            pixel_mask,
            targets,
            batch,
            height,
            width,
        })
    }

    /// [`process`](Self::process) every image, then [`collate`](Self::collate): `DetrImageProcessor(images,
    /// annotations)`. `annotations` is empty (no labels wanted: targets then have no objects) or one slice per image.
    pub fn preprocess(
        &self,
        images: &[&RgbImage],
        annotations: &[&[ObjectAnnotation]],
    ) -> ImageResult<DetrBatch> {
        if !annotations.is_empty() && annotations.len() != images.len() {
            return Err(ImageError::Transform(format!(
                "{} images but {} annotation lists",
                images.len(),
                annotations.len()
            )));
        }
        let examples = images
            .iter()
            .enumerate()
            .map(|(i, image)| self.process(image, annotations.get(i).copied().unwrap_or(&[])))
            .collect::<ImageResult<Vec<_>>>()?;
        self.collate(examples)
    }
}

/// `resize_annotation`: boxes times `[rw, rh, rw, rh]` as float32, areas times `rw * rh`.
fn scale_objects(objects: &mut PixelObjects, from: (usize, usize), to: (usize, usize)) {
    let rh = to.0 as f64 / from.0 as f64;
    let rw = to.1 as f64 / from.1 as f64;
    let (rh32, rw32) = (rh as f32, rw as f32);
    for b in &mut objects.boxes {
        *b = [b[0] * rw32, b[1] * rh32, b[2] * rw32, b[3] * rh32];
    }
    // numpy 2 treats the Python float as a weak scalar: the product is taken in float32.
    let ra = (rw * rh) as f32;
    for a in &mut objects.area {
        *a *= ra;
    }
}

/// `normalize_annotation`: corners to `(cx, cy, w, h)` over `(height, width)`, in float32.
fn normalize_boxes(boxes: &[[f32; 4]], (height, width): (usize, usize)) -> Vec<[f32; 4]> {
    let (h, w) = (height as f32, width as f32);
    boxes
        .iter()
        .map(|b| {
            [
                (b[0] + b[2]) / 2.0 / w,
                (b[1] + b[3]) / 2.0 / h,
                (b[2] - b[0]) / w,
                (b[3] - b[1]) / h,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_clipped_and_degenerate_boxes_dropped() {
        let mut crowd = ObjectAnnotation::new([1.0, 1.0, 2.0, 2.0], 5);
        crowd.iscrowd = true;
        let objects = [
            ObjectAnnotation::new([-2.0, 1.0, 5.0, 3.0], 1),
            ObjectAnnotation::new([8.0, 8.0, 5.0, 5.0], 2),
            ObjectAnnotation::new([3.0, 3.0, 0.0, 2.0], 3),
            ObjectAnnotation::new([12.0, 1.0, 2.0, 2.0], 4),
            crowd,
        ];
        let p = PixelObjects::from_coco(&objects, 10, 10);
        assert_eq!(p.boxes, [[0.0, 1.0, 3.0, 4.0], [8.0, 8.0, 10.0, 10.0]]);
        assert_eq!(p.class_labels, [1, 2]);
        assert_eq!(p.area, [15.0, 25.0]);
    }

    #[test]
    fn padding_keeps_boxes_in_place_and_masks_real_pixels() {
        let processor = DetrImageProcessor::new(DetrProcessorConfig {
            do_resize: false,
            ..DetrProcessorConfig::default()
        });
        let small = RgbImage::from_fn(4, 2, |_, _| [255; 3]).unwrap();
        let big = RgbImage::from_fn(6, 5, |_, _| [0; 3]).unwrap();
        let box_ = ObjectAnnotation::new([1.0, 0.0, 2.0, 2.0], 0);
        let batch = processor
            .preprocess(&[&small, &big], &[&[box_], &[]])
            .unwrap();
        assert_eq!((batch.batch, batch.height, batch.width), (2, 5, 6));
        let mask: u32 = batch.pixel_mask[..30].iter().sum();
        assert_eq!(mask, 8);
        assert_eq!(batch.pixel_mask[5], 0);
        let t = &batch.targets[0];
        assert_eq!(
            (t.size, t.resized_size, t.orig_size),
            ((5, 6), (2, 4), (2, 4))
        );
        // The box covers pixels x 1..3, y 0..2: centre (2, 1), 2x2, now over the 6x5 canvas.
        let expected = [2.0 / 6.0, 1.0 / 5.0, 2.0 / 6.0, 2.0 / 5.0];
        for (a, e) in t.boxes[0].iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{:?}", t.boxes[0]);
        }
        assert!(batch.targets[1].boxes.is_empty());
        // Padded pixels are 0 after normalisation.
        assert_eq!(batch.pixel_values[5], 0.0);
    }
}
