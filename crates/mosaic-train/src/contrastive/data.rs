//! The data of CLIP runs: image-caption pairs (contrastive training) and labelled images (CoOp), read from
//! JSONL/CSV records, with every image decoded and preprocessed once up front (the sets these runs are meant for
//! are small; decoding each epoch again would dominate the run time on CPU).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mosaic_data::Encoder;
use mosaic_data::image::{
    ImageDataset, ImageProcessor, ImageRecordConfig, ImageTextDataset, OnBadImage,
};
use mosaic_models::Clip;

use crate::error::{Result, TrainError};

/// Which record fields hold what (the recipe's `data.*_field` keys, saved in the checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fields {
    pub image_field: String,
    pub caption_field: String,
    pub label_field: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            image_field: "image".into(),
            caption_field: "caption".into(),
            label_field: "label".into(),
        }
    }
}

fn image_error(e: mosaic_data::image::ImageError) -> TrainError {
    TrainError::Invalid(e.to_string())
}

/// Decodes and preprocesses `paths` into one `(N, C, H, W)` tensor (an unreadable image is an error naming it).
pub fn load_pixels(
    processor: &ImageProcessor,
    paths: &[PathBuf],
    device: &Device,
) -> Result<Tensor> {
    let batch = processor
        .load_batch(paths, OnBadImage::Stop)
        .map_err(image_error)?;
    Ok(Tensor::from_vec(
        batch.pixel_values,
        batch.shape.to_vec(),
        device,
    )?)
}

/// Captions to CLIP token ids: the model's tokenizer with its special tokens, cut to the model's positions,
/// padded with the config's pad id.
pub struct CaptionTokenizer {
    encoder: Encoder,
    max_len: usize,
    pad_id: u32,
}

impl CaptionTokenizer {
    /// The `tokenizer.json` of `model_dir`, for `clip`.
    pub fn load(model_dir: &Path, clip: &Clip) -> Result<Self> {
        Ok(CaptionTokenizer {
            encoder: Encoder::from_file(model_dir.join("tokenizer.json"))?,
            max_len: clip.config.text.max_position_embeddings,
            pad_id: clip.config.text.pad_token_id,
        })
    }

    /// Token ids (with the start and end tokens) of each text, and how many texts were cut.
    pub fn ids<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<(Vec<Vec<u32>>, usize)> {
        let (encodings, truncated) = self.encoder.encode_texts(texts, self.max_len)?;
        Ok((
            encodings.iter().map(|e| e.get_ids().to_vec()).collect(),
            truncated,
        ))
    }

    /// Right-padded `(B, T)` ids and attention mask (u32, 1 = token).
    pub fn batch(&self, rows: &[&[u32]], device: &Device) -> Result<(Tensor, Tensor)> {
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(rows.len() * t);
        let mut mask = Vec::with_capacity(rows.len() * t);
        for row in rows {
            ids.extend(
                row.iter()
                    .copied()
                    .chain(std::iter::repeat(self.pad_id))
                    .take(t),
            );
            mask.extend((0..t).map(|i| u32::from(i < row.len())));
        }
        Ok((
            Tensor::from_vec(ids, (rows.len(), t), device)?,
            Tensor::from_vec(mask, (rows.len(), t), device)?,
        ))
    }
}

/// Image-caption pairs, decoded: row `i` of `pixels` goes with `captions[i]`.
pub struct PairData {
    /// `(N, C, H, W)`.
    pub pixels: Tensor,
    /// The captions' token ids.
    pub captions: Vec<Vec<u32>>,
    /// How many captions were cut to the model's length.
    pub truncated: usize,
}

impl PairData {
    /// Reads `path`'s records (`fields.image_field`, `fields.caption_field`; image paths relative to the file).
    pub fn load(
        path: &Path,
        fields: &Fields,
        processor: &ImageProcessor,
        tokenizer: &CaptionTokenizer,
        device: &Device,
    ) -> Result<Self> {
        let config = ImageRecordConfig {
            image_field: fields.image_field.clone(),
            text_field: fields.caption_field.clone(),
            ..ImageRecordConfig::default()
        };
        let data = ImageTextDataset::from_records(path, &config).map_err(image_error)?;
        if data.is_empty() {
            return Err(TrainError::file(path, "no image-caption pairs"));
        }
        let paths: Vec<PathBuf> = data.examples.iter().map(|e| e.path.clone()).collect();
        let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
        let (captions, truncated) = tokenizer.ids(&texts)?;
        Ok(PairData {
            pixels: load_pixels(processor, &paths, device)?,
            captions,
            truncated,
        })
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }
}

/// Labelled images, decoded: class ids index into `classes`.
pub struct ClassData {
    /// `(N, C, H, W)`.
    pub pixels: Tensor,
    /// The class id of each image.
    pub labels: Vec<usize>,
    /// The class names (the labels found, sorted, unless given).
    pub classes: Vec<String>,
}

impl ClassData {
    /// Reads `path`'s records (`fields.image_field`, `fields.label_field`). `classes`: the class names in id
    /// order (a label outside them is an error naming the line); `None` takes the labels found, sorted.
    pub fn load(
        path: &Path,
        fields: &Fields,
        classes: Option<&[String]>,
        processor: &ImageProcessor,
        device: &Device,
    ) -> Result<Self> {
        let config = ImageRecordConfig {
            image_field: fields.image_field.clone(),
            label_field: fields.label_field.clone(),
            labels: classes.map(<[String]>::to_vec),
            ..ImageRecordConfig::default()
        };
        let data = ImageDataset::from_records(path, &config).map_err(image_error)?;
        if data.is_empty() {
            return Err(TrainError::file(path, "no labelled images"));
        }
        let paths: Vec<PathBuf> = data.examples.iter().map(|e| e.path.clone()).collect();
        Ok(ClassData {
            pixels: load_pixels(processor, &paths, device)?,
            labels: data.examples.iter().map(|e| e.label).collect(),
            classes: data.labels.names().to_vec(),
        })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}
