//! Detection data: a COCO detection JSON split (`data.train`, `data.valid`, `data.test`) with its images, decoded
//! and preprocessed once by the DETR processor and kept in memory, and the padded batches (pixel values, pixel
//! mask and one [`DetectionTarget`] per image) the model trains on.
//!
//! `images[].file_name` is resolved against the folder of the JSON file (a name leading outside it is refused),
//! as the bundled `fixtures/data/shapes-detection` lays it out. Category ids become contiguous labels sorted by id
//! ([`CocoDataset::label`]); every split must have the training split's categories.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mosaic_data::CocoDataset;
use mosaic_data::image::{
    DetrAugmentation, DetrExample, DetrImageProcessor, ImageError, ObjectAnnotation, RgbImage,
    decode_file, resolve_inside,
};
use rayon::prelude::*;

use super::matcher::DetectionTarget;
use crate::error::{Result, TrainError};

/// An image error as a train error (a data error stays one, so its file and line survive).
pub(crate) fn image_error(e: ImageError) -> TrainError {
    match e {
        ImageError::Data(d) => TrainError::Data(d),
        other => TrainError::Invalid(other.to_string()),
    }
}

/// One split: the COCO file, its decoded images and their processed form.
pub struct DetectionSet {
    /// The ground truth (what COCO mAP scores against).
    pub coco: CocoDataset,
    /// The decoded images, in the file's image order.
    pub images: Vec<RgbImage>,
    /// Each image's objects as the processor takes them (labels contiguous, boxes clipped to the image).
    pub objects: Vec<Vec<ObjectAnnotation>>,
    /// Each image resized, rescaled and normalised, with its normalised boxes (no augmentation).
    pub examples: Vec<DetrExample>,
}

/// A collated batch on a device.
pub struct DetrInputs {
    /// `[B, 3, H, W]` f32, zero where padded.
    pub pixel_values: Tensor,
    /// `[B, H, W]` f32, 1 on real pixels.
    pub pixel_mask: Tensor,
    /// Per image, boxes normalised to the padded size.
    pub targets: Vec<DetectionTarget>,
    /// Per image, how to bring a box relative to the padded image back to the original image's pixels:
    /// `(x scale, y scale)`, i.e. padded width (height) times original over resized width (height).
    pub scales: Vec<(f32, f32)>,
}

/// The image file of `file_name` in a COCO file at `json`.
fn image_path(json: &Path, file_name: &str, id: i64) -> Result<PathBuf> {
    let root = json.parent().unwrap_or(Path::new("."));
    resolve_inside(root, file_name).ok_or_else(|| {
        TrainError::file(
            json,
            format!(
                "image {id}: file_name {file_name:?} is empty or leads outside {}",
                root.display()
            ),
        )
    })
}

impl DetectionSet {
    /// Reads the COCO file at `path`, decodes its images (relative to the file) and preprocesses them. With
    /// `categories` (the training split's `(id, name)` list), the file must have exactly those categories.
    pub fn load(
        path: &Path,
        processor: &DetrImageProcessor,
        categories: Option<&[(i64, String)]>,
    ) -> Result<Self> {
        let coco = CocoDataset::load(path)?;
        if coco.num_labels() == 0 {
            return Err(TrainError::file(
                path,
                "has no categories: detection needs at least one",
            ));
        }
        if let Some(expected) = categories {
            let got = category_list(&coco);
            if got != expected {
                return Err(TrainError::file(
                    path,
                    format!(
                        "its categories {} differ from the training split's {}",
                        describe(&got),
                        describe(expected)
                    ),
                ));
            }
        }
        let paths = coco
            .images()
            .iter()
            .map(|i| image_path(path, &i.file_name, i.id))
            .collect::<Result<Vec<_>>>()?;
        let images = paths
            .par_iter()
            .zip(coco.images())
            .map(|(file, info)| {
                let image = decode_file(file).map_err(image_error)?;
                if (image.width(), image.height()) != (info.width as usize, info.height as usize) {
                    return Err(TrainError::file(
                        file,
                        format!(
                            "is {}x{} pixels, but {} says image {} is {}x{}",
                            image.width(),
                            image.height(),
                            path.display(),
                            info.id,
                            info.width,
                            info.height
                        ),
                    ));
                }
                Ok(image)
            })
            .collect::<Result<Vec<_>>>()?;
        let objects: Vec<Vec<ObjectAnnotation>> = (0..images.len())
            .map(|i| {
                coco.annotations_of(i)
                    .map(|a| ObjectAnnotation {
                        bbox: a.bbox,
                        class_label: a.label as i64,
                        area: a.area,
                        iscrowd: a.iscrowd,
                    })
                    .collect()
            })
            .collect();
        let examples = images
            .par_iter()
            .zip(&objects)
            .map(|(image, objects)| processor.process(image, objects).map_err(image_error))
            .collect::<Result<Vec<_>>>()?;
        Ok(DetectionSet {
            coco,
            images,
            objects,
            examples,
        })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True without images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The number of objects.
    pub fn num_objects(&self) -> usize {
        self.objects.iter().map(Vec::len).sum()
    }

    /// The category names in label order.
    pub fn labels(&self) -> Vec<String> {
        self.coco
            .label_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// The images `indices` padded into one batch; with `augmentation` (and the epoch's random stream base), each
    /// image is augmented afresh instead of taken from the cache.
    pub fn collate(
        &self,
        processor: &DetrImageProcessor,
        indices: &[usize],
        augmentation: Option<(&DetrAugmentation, u64)>,
        device: &Device,
    ) -> Result<DetrInputs> {
        let examples = indices
            .iter()
            .map(|&i| {
                let (Some(image), Some(objects), Some(cached)) = (
                    self.images.get(i),
                    self.objects.get(i),
                    self.examples.get(i),
                ) else {
                    return Err(TrainError::Invalid(format!(
                        "detection batch: image {i} out of range"
                    )));
                };
                match augmentation {
                    Some((aug, base)) => processor
                        .process_augmented(image, objects, Some((aug, base + i as u64)))
                        .map_err(image_error),
                    None => Ok(cached.clone()),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        collate(processor, examples, device)
    }
}

/// Pads processed examples into a batch on `device` (see [`DetrImageProcessor::collate`]).
pub fn collate(
    processor: &DetrImageProcessor,
    examples: Vec<DetrExample>,
    device: &Device,
) -> Result<DetrInputs> {
    let batch = processor.collate(examples).map_err(image_error)?;
    let (b, h, w) = (batch.batch, batch.height, batch.width);
    let pixel_values = Tensor::from_vec(batch.pixel_values, (b, 3, h, w), device)?;
    let mask: Vec<f32> = batch.pixel_mask.iter().map(|&m| m as f32).collect();
    let pixel_mask = Tensor::from_vec(mask, (b, h, w), device)?;
    let scales = batch
        .targets
        .iter()
        .map(|t| {
            let (oh, ow) = t.orig_size;
            let (rh, rw) = t.resized_size;
            (
                (w as f64 * ow as f64 / rw.max(1) as f64) as f32,
                (h as f64 * oh as f64 / rh.max(1) as f64) as f32,
            )
        })
        .collect();
    let targets = batch
        .targets
        .into_iter()
        .map(|t| DetectionTarget {
            // Labels come from `CocoDataset::label` (0..K), so the conversion cannot truncate.
            class_labels: t.class_labels.iter().map(|&l| l.max(0) as u32).collect(),
            boxes: t.boxes,
        })
        .collect();
    Ok(DetrInputs {
        pixel_values,
        pixel_mask,
        targets,
        scales,
    })
}

/// A COCO file's `(category id, name)` pairs in label order.
pub fn category_list(coco: &CocoDataset) -> Vec<(i64, String)> {
    coco.categories()
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect()
}

fn describe(categories: &[(i64, String)]) -> String {
    let items: Vec<String> = categories
        .iter()
        .map(|(id, name)| format!("{id} {name:?}"))
        .collect();
    format!("[{}]", items.join(", "))
}
