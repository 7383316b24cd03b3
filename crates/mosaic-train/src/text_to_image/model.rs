//! The text → image model: a LLaVA (whose language model gives the text embedding `T`, and whose vision tower
//! and projector give the image tokens the contrastive objective aligns `T` with) and the new
//! [`TextToImageDecoder`] `G(T)`, whose parameters live in their own store under `decoder.*`.

use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_models::image_decoder::{DecoderConfig, TextToImageDecoder};
use mosaic_models::params::{Checkpoint, ParamLoader};
use mosaic_models::{Llava, ParamStore, l2_normalize, mean_pool};

use crate::error::{Result, TrainError};

/// The channels of the decoder's first feature map (halved with each upsampling, down to 16).
pub const DECODER_CHANNELS: usize = 128;
/// The parameter prefix of the decoder.
pub const DECODER_PREFIX: &str = "decoder";
/// The checkpoint file of the decoder's parameters.
pub const DECODER_FILE: &str = "decoder.safetensors";
/// The temperature of the contrastive objective (CLIP's initial one).
pub const CONTRASTIVE_TEMPERATURE: f64 = 0.07;

/// A LLaVA and the decoder trained on its text embeddings.
pub struct TextToImageModel {
    pub llava: Llava,
    pub decoder: TextToImageDecoder,
    /// The decoder's parameters, `decoder.*`.
    pub decoder_params: ParamStore,
    /// The token the text batches are padded with.
    pub pad_id: u32,
}

impl TextToImageModel {
    /// `llava` with a fresh decoder of `config` (initialised with `seed`).
    pub fn new(llava: Llava, config: &DecoderConfig, pad_id: u32, seed: u64) -> Result<Self> {
        let store = ParamStore::new();
        let loader = ParamLoader::fresh(store.clone(), seed, &llava.device());
        let decoder = TextToImageDecoder::new(config, &loader.pp(DECODER_PREFIX))?;
        Ok(TextToImageModel {
            llava,
            decoder,
            decoder_params: store,
            pad_id,
        })
    }

    /// `llava` with the decoder of `config` read from `path` (every tensor must be there, shaped as `config`
    /// says).
    pub fn with_saved_decoder(
        llava: Llava,
        config: &DecoderConfig,
        pad_id: u32,
        path: &Path,
    ) -> Result<Self> {
        let device = llava.device();
        let store = ParamStore::new();
        let loader = ParamLoader::new(Checkpoint::read(path, &device)?, store.clone(), 0, &device);
        let decoder = TextToImageDecoder::new(config, &loader.pp(DECODER_PREFIX))?;
        Ok(TextToImageModel {
            llava,
            decoder,
            decoder_params: store,
            pad_id,
        })
    }

    /// Writes the decoder's parameters to `path` (atomically).
    pub fn save_decoder(&self, path: &Path) -> Result<()> {
        let tensors = mosaic_models::folder::param_tensors(&self.decoder_params);
        Ok(mosaic_models::folder::save_safetensors(&tensors, path)?)
    }

    /// The text embeddings `T: (B, n_embd)` of token-id rows: the mean over each row's tokens of the language
    /// model's final hidden state (GPT-2 after `ln_f`). Rows are right-padded; every row needs a token.
    pub fn text_embeddings(&self, rows: &[&[u32]]) -> Result<Tensor> {
        let device = self.llava.device();
        let (ids, mask) = pad_rows(rows, self.pad_id, &device)?;
        let hidden = self
            .llava
            .language_model
            .hidden_states(&ids, None, Some(&mask))?;
        Ok(mean_pool(&hidden, &mask)?)
    }

    /// Generated images `(B, 3, S, S)` in `[0, 1]` of text embeddings `(B, n_embd)`.
    pub fn generate(&self, text: &Tensor) -> Result<Tensor> {
        Ok(self.decoder.forward(text)?)
    }

    /// The image objective: the mean squared error of `G(T)` against `targets` `(B, 3, S, S)` in `[0, 1]`,
    /// averaged over every pixel and channel.
    pub fn image_loss(&self, text: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let generated = self.generate(text)?;
        Ok(generated.sub(targets)?.sqr()?.mean_all()?)
    }

    /// The contrastive objective: symmetric InfoNCE (CLIP's `clip_loss`) between the mean of each image's
    /// projected image tokens and its text embedding, both L2-normalised, at temperature 0.07; pair `i` is
    /// image `i` with text `i`, every other row a negative. `pixel_values`: `(B, C, S, S)` CLIP-normalised.
    pub fn contrastive_loss(&self, text: &Tensor, pixel_values: &Tensor) -> Result<Tensor> {
        let image = self.llava.image_features(pixel_values)?.mean(1)?;
        let logits_per_text = l2_normalize(text)?
            .matmul(&l2_normalize(&image)?.t()?)?
            .affine(1.0 / CONTRASTIVE_TEMPERATURE, 0.0)?;
        Ok(mosaic_models::clip::clip_loss(&logits_per_text)?)
    }
}

/// Right-padded `(B, T)` ids and the `(B, T)` mask (1 = token) of token rows; an empty row is an error.
fn pad_rows(rows: &[&[u32]], pad_id: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let b = rows.len();
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if b == 0 || rows.iter().any(|r| r.is_empty()) {
        return Err(TrainError::Invalid(
            "a text embedding needs at least one token per text".into(),
        ));
    }
    let mut ids = vec![pad_id; b * t];
    let mut mask = vec![0u32; b * t];
    for (i, row) in rows.iter().enumerate() {
        ids[i * t..i * t + row.len()].copy_from_slice(row);
        mask[i * t..i * t + row.len()].fill(1);
    }
    Ok((
        Tensor::from_vec(ids, (b, t), device)?,
        Tensor::from_vec(mask, (b, t), device)?,
    ))
}
