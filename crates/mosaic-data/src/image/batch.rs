//! Decoding and transforming a batch of image files in parallel, stopping at or skipping unreadable ones.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::decode::{RgbImage, decode_file};
use super::error::{ImageError, ImageResult};
use super::processor::{ImageProcessor, PixelValues};

/// What to do with an image that cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadImage {
    /// Fail the batch with the first bad image's error (in batch order).
    #[default]
    Stop,
    /// Leave it out and report it in [`ImageBatch::skipped`].
    Skip,
}

/// Pixel values of the images of a batch that could be read, stacked `N x C x H x W`.
#[derive(Debug)]
pub struct ImageBatch {
    /// `N * C * H * W` values.
    pub pixel_values: Vec<f32>,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// For each of the `N` rows, its index in the requested paths.
    pub kept: Vec<usize>,
    /// The images left out (with [`OnBadImage::Skip`]), each error naming its file.
    pub skipped: Vec<ImageError>,
}

/// Decodes `paths` in parallel and turns each image into pixel values with `transform(index, image)`.
/// All transformed images must have the same shape. With [`OnBadImage::Skip`], a batch in which no image can
/// be read is still an error.
pub fn load_batch<F>(paths: &[PathBuf], on_bad: OnBadImage, transform: F) -> ImageResult<ImageBatch>
where
    F: Fn(usize, &RgbImage) -> ImageResult<PixelValues> + Sync,
{
    let results: Vec<ImageResult<PixelValues>> = paths
        .par_iter()
        .enumerate()
        .map(|(i, path)| decode_file(path).and_then(|image| transform(i, &image)))
        .collect();
    let mut pixel_values = Vec::new();
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let mut shape: Option<[usize; 3]> = None;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(px) => {
                match shape {
                    None => shape = Some(px.shape()),
                    Some(s) if s != px.shape() => {
                        return Err(ImageError::Transform(format!(
                            "{}: pixel values of shape {:?} differ from the batch's {:?} (the preprocessing \
                             must give a fixed size)",
                            paths[i].display(),
                            px.shape(),
                            s
                        )));
                    }
                    Some(_) => {}
                }
                pixel_values.extend_from_slice(&px.data);
                kept.push(i);
            }
            Err(e) if on_bad == OnBadImage::Skip => skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    let Some([c, h, w]) = shape else {
        let first = skipped
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "the batch is empty".into());
        return Err(ImageError::Batch {
            message: format!(
                "no image of the batch could be read ({} skipped); first: {first}",
                skipped.len()
            ),
        });
    };
    Ok(ImageBatch {
        pixel_values,
        shape: [kept.len(), c, h, w],
        kept,
        skipped,
    })
}

impl ImageProcessor {
    /// Decodes and preprocesses `paths` in parallel (see [`load_batch`]).
    pub fn load_batch(&self, paths: &[PathBuf], on_bad: OnBadImage) -> ImageResult<ImageBatch> {
        load_batch(paths, on_bad, |_, image| self.preprocess(image))
    }
}
