//! Image-classification data: image folders (`<root>/<label>/*.png`) or JSONL/CSV records naming an image and a
//! label, decoded once and kept in memory as one pixel tensor per split (the sets this is for are small; every
//! epoch then costs no decoding), or — augmented training images — decoded afresh each epoch.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mosaic_data::image::{
    ImageAugmentation, ImageDataset, ImageError, ImageProcessor, ImageRecordConfig, OnBadImage,
    load_batch,
};
use mosaic_data::{SplitFractions, Splits};

use crate::error::{Result, TrainError};

/// How to read image records (the recipe's or the checkpoint's field names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The column holding the image path (relative to the data file's folder, never outside it).
    pub image: String,
    /// The column holding the label.
    pub label: String,
}

pub(crate) fn image_error(e: ImageError) -> TrainError {
    match e {
        ImageError::Data(d) => TrainError::Data(d),
        other => TrainError::Invalid(other.to_string()),
    }
}

/// An image folder when `path` is a directory, else a JSONL/CSV file of records. `labels` fixes the class ids
/// (a label outside them is an error naming its folder or line); without it the labels found are sorted.
pub fn read_dataset(
    path: &Path,
    labels: Option<&[String]>,
    fields: &Fields,
) -> Result<ImageDataset> {
    let set = if path.is_dir() {
        ImageDataset::from_folder(path, labels)
    } else {
        let config = ImageRecordConfig {
            image_field: fields.image.clone(),
            label_field: fields.label.clone(),
            labels: labels.map(<[String]>::to_vec),
            ..ImageRecordConfig::default()
        };
        ImageDataset::from_records(path, &config)
    }
    .map_err(image_error)?;
    if set.is_empty() {
        return Err(TrainError::file(path, "no images"));
    }
    Ok(set)
}

/// The recipe's data: train, and valid / test from their own files or carved out of train by `data.split`.
pub struct ImageSplits {
    pub train: ImageDataset,
    pub valid: Option<ImageDataset>,
    pub test: Option<ImageDataset>,
    /// Class names in id order, shared by the three sets.
    pub labels: Vec<String>,
}

/// Loads the splits. The labels are `preferred` (the model's `id2label`, so a trained head keeps its order)
/// when they name exactly the classes of the training data, else the training data's, sorted.
pub fn load_splits(
    train: &Path,
    valid: Option<&Path>,
    test: Option<&Path>,
    split: Option<&[f64]>,
    preferred: &[String],
    fields: &Fields,
    seed: u64,
) -> Result<ImageSplits> {
    let found = read_dataset(train, None, fields)?;
    let mut sorted_found = found.labels.names().to_vec();
    sorted_found.sort();
    let mut sorted_preferred = preferred.to_vec();
    sorted_preferred.sort();
    let (train_set, labels) = if !preferred.is_empty()
        && sorted_preferred == sorted_found
        && preferred != found.labels.names()
    {
        (
            read_dataset(train, Some(preferred), fields)?,
            preferred.to_vec(),
        )
    } else {
        let labels = found.labels.names().to_vec();
        (found, labels)
    };
    let other = |p: Option<&Path>| {
        p.map(|p| read_dataset(p, Some(&labels), fields))
            .transpose()
    };
    let (valid_set, test_set) = (other(valid)?, other(test)?);
    let fractions = match split {
        Some([_, v, t]) => SplitFractions {
            valid: *v,
            test: *t,
        },
        Some([_, v]) => SplitFractions {
            valid: *v,
            test: 0.0,
        },
        _ => SplitFractions {
            valid: 0.0,
            test: 0.0,
        },
    };
    let carve = SplitFractions {
        valid: if valid_set.is_some() {
            0.0
        } else {
            fractions.valid
        },
        test: if test_set.is_some() {
            0.0
        } else {
            fractions.test
        },
    };
    let (train_set, carved_valid, carved_test) = if carve.valid == 0.0 && carve.test == 0.0 {
        (train_set, None, None)
    } else {
        let Splits { train, valid, test } = train_set.split(carve, seed)?;
        let keep = |s: ImageDataset| (!s.is_empty()).then_some(s);
        (train, keep(valid), keep(test))
    };
    Ok(ImageSplits {
        train: train_set,
        valid: valid_set.or(carved_valid),
        test: test_set.or(carved_test),
        labels,
    })
}

/// A split decoded and preprocessed: `pixels` `(N, 3, H, W)` and the class id of each image.
pub struct PixelSet {
    pub pixels: Tensor,
    pub labels: Vec<usize>,
    pub paths: Vec<PathBuf>,
}

impl PixelSet {
    /// Decodes every image of `paths` (in parallel) with `processor`; an unreadable image is an error naming it.
    pub fn decode(
        paths: Vec<PathBuf>,
        labels: Vec<usize>,
        processor: &ImageProcessor,
        device: &Device,
    ) -> Result<Self> {
        let batch = processor
            .load_batch(&paths, OnBadImage::Stop)
            .map_err(image_error)?;
        let pixels = Tensor::from_vec(batch.pixel_values, batch.shape.to_vec(), device)?;
        Ok(PixelSet {
            pixels,
            labels,
            paths,
        })
    }

    /// The images of an [`ImageDataset`].
    pub fn from_dataset(
        set: &ImageDataset,
        processor: &ImageProcessor,
        device: &Device,
    ) -> Result<Self> {
        let paths = set.examples.iter().map(|e| e.path.clone()).collect();
        let labels = set.examples.iter().map(|e| e.label).collect();
        Self::decode(paths, labels, processor, device)
    }

    /// `self`'s images decoded again with `augmentation` (then rescaled and normalised by `processor`); each
    /// image's random draw derives from the augmentation's seed, `epoch` and its index only, so it does not depend
    /// on thread scheduling.
    pub fn augmented(
        &self,
        augmentation: &ImageAugmentation,
        processor: &ImageProcessor,
        epoch: usize,
    ) -> Result<Self> {
        let batch = load_batch(&self.paths, OnBadImage::Stop, |i, image| {
            augmentation.apply(image, processor, ((epoch as u64) << 32) | i as u64)
        })
        .map_err(image_error)?;
        let pixels = Tensor::from_vec(
            batch.pixel_values,
            batch.shape.to_vec(),
            self.pixels.device(),
        )?;
        Ok(PixelSet {
            pixels,
            labels: self.labels.clone(),
            paths: self.paths.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `(height, width)` of the preprocessed images.
    pub fn image_size(&self) -> (usize, usize) {
        let dims = self.pixels.dims();
        (dims[2], dims[3])
    }

    /// The pixels and labels (i64) of the images at `indices`.
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let device = self.pixels.device();
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, indices.len(), device)?;
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i] as i64).collect();
        Ok((
            self.pixels.index_select(&idx, 0)?,
            Tensor::from_vec(labels, indices.len(), device)?,
        ))
    }
}
