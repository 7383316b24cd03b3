//! Pictures out of the decoder: the run folder's `samples.png` (generated above real, one column per caption),
//! and [`imagine`], what `mosaic imagine` runs. Images are enlarged by repeating pixels (nearest neighbour) so
//! that 32-pixel scenes are visible; PNGs are written atomically (a temporary file renamed into place).

use std::path::Path;

use candle_core::{Device, Tensor};

use super::checkpoint::load_checkpoint;
use super::data::CaptionSet;
use super::model::TextToImageModel;
use crate::error::{Result, TrainError};

/// How many held-out captions `samples.png` shows.
pub const SAMPLE_COUNT: usize = 8;
/// How much `samples.png` enlarges each image.
pub const SAMPLE_SCALE: usize = 4;
/// Pixels of grey between the images of the grid.
const GAP: usize = 2;

/// `images: (N, 3, S, S)` in `[0, 1]` as `N` RGB byte images `S·S·3`, row-major.
fn to_bytes(images: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (n, c, h, w) = images.dims4()?;
    if c != 3 {
        return Err(TrainError::Invalid(format!(
            "expected RGB images, got {c} channels"
        )));
    }
    let data: Vec<f32> = images.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    let plane = h * w;
    Ok((0..n)
        .map(|i| {
            let image = &data[i * 3 * plane..(i + 1) * 3 * plane];
            (0..plane)
                .flat_map(|p| (0..3).map(move |ch| image[ch * plane + p]))
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect()
        })
        .collect())
}

/// Encodes an RGB image as PNG and writes it to `path` atomically.
fn write_png(path: &Path, width: usize, height: usize, rgb: Vec<u8>) -> Result<()> {
    let image = image::RgbImage::from_raw(width as u32, height as u32, rgb).ok_or_else(|| {
        TrainError::Invalid(format!(
            "{}: pixel buffer does not fit {width}×{height}",
            path.display()
        ))
    })?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| TrainError::file(path, e))?;
    Ok(mosaic_models::folder::write_atomic(path, bytes.get_ref())?)
}

/// A grid of images: `rows[r][c]` is an `S·S·3` byte image, drawn enlarged `scale` times with grey gaps.
fn grid(rows: &[Vec<Vec<u8>>], side: usize, scale: usize) -> (usize, usize, Vec<u8>) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cell = side * scale;
    let width = cols * cell + (cols + 1) * GAP;
    let height = rows.len() * cell + (rows.len() + 1) * GAP;
    let mut out = vec![128u8; width * height * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, image) in row.iter().enumerate() {
            let (x0, y0) = (GAP + c * (cell + GAP), GAP + r * (cell + GAP));
            for y in 0..cell {
                for x in 0..cell {
                    let src = ((y / scale) * side + x / scale) * 3;
                    let dst = ((y0 + y) * width + x0 + x) * 3;
                    out[dst..dst + 3].copy_from_slice(&image[src..src + 3]);
                }
            }
        }
    }
    (width, height, out)
}

/// Writes `path`: the images `model` generates for the first [`SAMPLE_COUNT`] captions of `set` (top row) above
/// the real ones (bottom row); returns the captions, in column order.
pub fn write_samples(
    model: &TextToImageModel,
    set: &CaptionSet,
    path: &Path,
) -> Result<Vec<String>> {
    let n = set.len().min(SAMPLE_COUNT);
    let batch: Vec<usize> = (0..n).collect();
    let generated = mosaic_models::no_grad(|| {
        let text = model.text_embeddings(&set.caption_rows(&batch))?;
        model.generate(&text)
    })?;
    let real = set.targets_of(&batch)?;
    let side = model.decoder.config.image_size;
    let rows = [to_bytes(&generated)?, to_bytes(&real)?];
    let (width, height, rgb) = grid(&rows, side, SAMPLE_SCALE);
    write_png(path, width, height, rgb)?;
    Ok(batch.iter().map(|&i| set.captions[i].clone()).collect())
}

/// What [`imagine`] wrote.
#[derive(Debug, Clone)]
pub struct Imagined {
    /// The PNG's size in pixels.
    pub width: usize,
    pub height: usize,
}

/// Generates the image of `prompt` with the text → image checkpoint `checkpoint` and writes it to `output` as a
/// PNG enlarged `scale` times (nearest neighbour).
pub fn imagine(checkpoint: &Path, prompt: &str, scale: usize, output: &Path) -> Result<Imagined> {
    if scale == 0 {
        return Err(TrainError::Invalid("--scale must be at least 1".into()));
    }
    let loaded = load_checkpoint(checkpoint, &Device::Cpu)?;
    let ids = loaded.processor.tokenize(prompt)?.get_ids().to_vec();
    if ids.is_empty() {
        return Err(TrainError::Invalid(
            "--prompt is empty: the text embedding needs at least one token".into(),
        ));
    }
    let context = loaded.model.llava.config.text.n_positions;
    if ids.len() > context {
        return Err(TrainError::Invalid(format!(
            "--prompt has {} tokens, more than the {context} the language model takes",
            ids.len()
        )));
    }
    let model = &loaded.model;
    model.llava.set_training(false);
    let image = mosaic_models::no_grad(|| model.generate(&model.text_embeddings(&[&ids])?))?;
    let side = model.decoder.config.image_size;
    let rows = [to_bytes(&image)?];
    let (width, height, rgb) = grid(&rows, side, scale);
    // One image needs no frame: crop the grid's gap away.
    let (inner_w, inner_h) = (width - 2 * GAP, height - 2 * GAP);
    let mut cropped = Vec::with_capacity(inner_w * inner_h * 3);
    for y in GAP..GAP + inner_h {
        cropped.extend_from_slice(&rgb[(y * width + GAP) * 3..(y * width + GAP + inner_w) * 3]);
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::file(parent, e))?;
    }
    write_png(output, inner_w, inner_h, cropped)?;
    Ok(Imagined {
        width: inner_w,
        height: inner_h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_enlarges_and_frames() {
        // Two 1×1 images (red, green) in one row, ×2: 2·2 + 3 gaps wide, 2 + 2 gaps high.
        let rows = [vec![vec![255, 0, 0], vec![0, 255, 0]]];
        let (w, h, rgb) = grid(&rows, 1, 2);
        assert_eq!((w, h), (2 * 2 + 3 * GAP, 2 + 2 * GAP));
        let at = |x: usize, y: usize| &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(at(0, 0), [128, 128, 128]);
        assert_eq!(at(GAP, GAP), [255, 0, 0]);
        assert_eq!(at(GAP + 1, GAP + 1), [255, 0, 0]);
        assert_eq!(at(2 * GAP + 2, GAP), [0, 255, 0]);
    }
}
