//! Text → image examples: the visual-instruction task's conversation rows (read by its
//! [`VisualEncoder`], so the captioning objective sees exactly what visual-instruction trains on), each with its
//! caption — the first reply — tokenized alone for the text embedding, and its image as the decoder's target:
//! resized and cropped as the LLaVA's image processor does, to the decoder's size, in `[0, 1]` (not
//! CLIP-normalised).

use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_data::image::{Resample, decode_file, resize};

use crate::error::{Result, TrainError};
use crate::visual_instruction::{LlavaProcessor, VisualData, VisualEncoder};

/// The examples of one data file.
pub struct CaptionSet {
    /// The conversations and their CLIP-normalised images (what the caption and contrastive objectives read).
    pub visual: VisualData,
    /// Each example's caption, as text and as token ids (no special tokens).
    pub captions: Vec<String>,
    pub caption_ids: Vec<Vec<u32>>,
    /// The images as the decoder should draw them: `(U, 3, S, S)` in `[0, 1]`, one per distinct image.
    pub targets: Tensor,
}

impl CaptionSet {
    /// How many examples there are.
    pub fn len(&self) -> usize {
        self.visual.examples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.visual.examples.is_empty()
    }

    /// The target images `(B, 3, S, S)` of examples `batch`.
    pub fn targets_of(&self, batch: &[usize]) -> Result<Tensor> {
        Ok(self.targets.index_select(&self.image_index(batch)?, 0)?)
    }

    /// The CLIP-normalised images `(B, C, S', S')` of examples `batch`.
    pub fn pixels_of(&self, batch: &[usize]) -> Result<Tensor> {
        Ok(self
            .visual
            .pixel_values
            .index_select(&self.image_index(batch)?, 0)?)
    }

    /// The caption token rows of examples `batch`.
    pub fn caption_rows(&self, batch: &[usize]) -> Vec<&[u32]> {
        batch
            .iter()
            .map(|&i| self.caption_ids[i].as_slice())
            .collect()
    }

    fn image_index(&self, batch: &[usize]) -> Result<Tensor> {
        let rows: Vec<u32> = batch
            .iter()
            .map(|&i| self.visual.examples[i].image as u32)
            .collect();
        Ok(Tensor::from_vec(
            rows,
            batch.len(),
            self.visual.pixel_values.device(),
        )?)
    }
}

/// How rows are read.
pub struct CaptionReader<'a> {
    pub processor: &'a LlavaProcessor,
    /// The column holding the image path (relative to the data file).
    pub image_field: &'a str,
    /// The most tokens a conversation (image features included) or a caption may have.
    pub max_length: usize,
    /// The side of the decoder's images.
    pub image_size: usize,
}

impl CaptionReader<'_> {
    /// Reads a data file; a bad row (a missing image, an empty caption) is an error naming the file and row.
    pub fn load(&self, path: &Path, device: &Device) -> Result<CaptionSet> {
        let encoder = VisualEncoder {
            processor: self.processor,
            image_field: self.image_field,
            max_length: self.max_length,
        };
        let visual = encoder.load(path, device)?;
        let mut captions = Vec::with_capacity(visual.examples.len());
        let mut caption_ids = Vec::with_capacity(visual.examples.len());
        for example in &visual.examples {
            let at = || format!("{}: {}", path.display(), example.id);
            let ids = self.processor.tokenize(&example.answer)?.get_ids().to_vec();
            if ids.is_empty() {
                return Err(TrainError::Invalid(format!(
                    "{}: the caption (the first reply) is empty; the text embedding needs at least one token",
                    at()
                )));
            }
            if ids.len() > self.max_length {
                return Err(TrainError::Invalid(format!(
                    "{}: the caption has {} tokens, more than the {} the language model takes",
                    at(),
                    ids.len(),
                    self.max_length
                )));
            }
            captions.push(example.answer.clone());
            caption_ids.push(ids);
        }
        let targets = target_images(self.processor, &visual.image_paths, self.image_size, device)?;
        Ok(CaptionSet {
            visual,
            captions,
            caption_ids,
            targets,
        })
    }
}

/// The images of `paths` as `(N, 3, size, size)` in `[0, 1]`: resized and cropped as `processor` does, then
/// resized to `size` when the processor's output is not already that.
pub fn target_images(
    processor: &LlavaProcessor,
    paths: &[std::path::PathBuf],
    size: usize,
    device: &Device,
) -> Result<Tensor> {
    let plane = size * size;
    let mut data = Vec::with_capacity(paths.len() * 3 * plane);
    for path in paths {
        let bad = |e: mosaic_data::image::ImageError| TrainError::Invalid(e.to_string());
        let image = decode_file(path).map_err(bad)?;
        let mut image = processor.image.resize_and_crop(&image).map_err(bad)?;
        if (image.width(), image.height()) != (size, size) {
            image = resize(&image, size, size, Resample::Bicubic).map_err(bad)?;
        }
        let mut chw = vec![0f32; 3 * plane];
        for (i, px) in image.pixels().chunks_exact(3).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                chw[ch * plane + i] = f32::from(v) / 255.0;
            }
        }
        data.extend_from_slice(&chw);
    }
    Ok(Tensor::from_vec(
        data,
        (paths.len(), 3, size, size),
        device,
    )?)
}
