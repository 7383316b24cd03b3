//! What DETR derives from the pixel mask: the mask downsampled to the feature map (transformers'
//! `DetrConvEncoder.forward`: `nn.functional.interpolate(pixel_mask[None].float(), size=feature_map.shape[-2:])`,
//! nearest) and the sine position embeddings over it (`DetrSinePositionEmbedding` with `normalize=True`).
//! Both are constants of the input, computed on the host in f32 as torch computes them; no gradient flows here.

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};

/// The sine embedding's temperature and the scale of the normalised coordinates (`2π`), as DETR fixes them.
const TEMPERATURE: f32 = 10000.0;
const SCALE: f32 = 2.0 * std::f32::consts::PI;
/// Added to the per-row/column totals before dividing, as transformers does.
const NORMALIZE_EPS: f32 = 1e-6;

/// A pixel mask at feature-map resolution: `batch × height × width` values, 1 = a real pixel, 0 = padding.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMask {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// Row-major `[batch, height, width]`.
    pub values: Vec<f32>,
}

/// PyTorch's nearest source index for upsampling/downsampling `input` → `output` samples (`nearest_idx` in
/// ATen's `UpSample.h`: identity, halving, else `floor(i · in/out)` in f32, clamped).
fn nearest_source(i: usize, input: usize, output: usize) -> usize {
    if output == input {
        i
    } else if output == 2 * input {
        i >> 1
    } else {
        let scale = input as f32 / output as f32;
        ((i as f32 * scale).floor() as usize).min(input - 1)
    }
}

impl FeatureMask {
    /// `pixel_mask: [B, H, W]` (non-zero = real) → the mask at `height × width`, nearest-neighbour as
    /// `nn.functional.interpolate` does it, then thresholded to 0/1 as `.to(torch.bool)` does.
    pub fn downsample(pixel_mask: &Tensor, height: usize, width: usize) -> Result<Self> {
        let (batch, in_h, in_w) = pixel_mask.dims3().map_err(|_| {
            ModelError::InvalidInput(format!(
                "DETR: pixel_mask must be (batch, height, width), got {:?}",
                pixel_mask.dims()
            ))
        })?;
        if height == 0 || width == 0 || in_h == 0 || in_w == 0 {
            return Err(ModelError::InvalidInput(format!(
                "DETR: cannot downsample a {in_h}×{in_w} pixel mask to {height}×{width}"
            )));
        }
        let flat = pixel_mask
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let rows: Vec<usize> = (0..height)
            .map(|y| nearest_source(y, in_h, height))
            .collect();
        let cols: Vec<usize> = (0..width).map(|x| nearest_source(x, in_w, width)).collect();
        let mut values = Vec::with_capacity(batch * height * width);
        for b in 0..batch {
            for &sy in &rows {
                for &sx in &cols {
                    let v = flat[(b * in_h + sy) * in_w + sx];
                    values.push(if v != 0.0 { 1.0 } else { 0.0 });
                }
            }
        }
        Ok(FeatureMask {
            batch,
            height,
            width,
            values,
        })
    }

    /// The mask flattened over positions, `[B, height · width]` f32 (1 = attend): the encoder's key padding.
    pub fn flattened(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.values.clone(),
            (self.batch, self.height * self.width),
            device,
        )?)
    }

    /// DETR's sine position embeddings, `[B, height · width, 2 · features]` f32 with positions in row-major
    /// order (as `pos.flatten(2).transpose(1, 2)`): the first `features` channels encode the row, the rest the
    /// column, each as `sin`/`cos` pairs of the cumulative count of real pixels along that axis, normalised by
    /// the axis total and scaled to `[0, 2π]`.
    pub fn sine_embedding(&self, features: usize, device: &Device) -> Result<Tensor> {
        let (b, h, w) = (self.batch, self.height, self.width);
        let at = |bi: usize, y: usize, x: usize| self.values[(bi * h + y) * w + x];
        // Cumulative sums down the rows (y) and along the columns (x), as `mask.cumsum(1)` / `cumsum(2)`.
        let mut y_embed = vec![0f32; b * h * w];
        let mut x_embed = vec![0f32; b * h * w];
        for bi in 0..b {
            for x in 0..w {
                let mut acc = 0f32;
                for y in 0..h {
                    acc += at(bi, y, x);
                    y_embed[(bi * h + y) * w + x] = acc;
                }
            }
            for y in 0..h {
                let mut acc = 0f32;
                for x in 0..w {
                    acc += at(bi, y, x);
                    x_embed[(bi * h + y) * w + x] = acc;
                }
            }
        }
        // `dim_t = temperature ** (2 * (i // 2) / features)`, in f32.
        let dim_t: Vec<f32> = (0..features)
            .map(|i| TEMPERATURE.powf(2.0 * (i / 2) as f32 / features as f32))
            .collect();
        let channels = 2 * features;
        let mut out = vec![0f32; b * h * w * channels];
        for bi in 0..b {
            for y in 0..h {
                for x in 0..w {
                    let i = (bi * h + y) * w + x;
                    let y_total = y_embed[(bi * h + h - 1) * w + x];
                    let x_total = x_embed[(bi * h + y) * w + w - 1];
                    let ye = y_embed[i] / (y_total + NORMALIZE_EPS) * SCALE;
                    let xe = x_embed[i] / (x_total + NORMALIZE_EPS) * SCALE;
                    let row = &mut out[i * channels..(i + 1) * channels];
                    for (c, &d) in dim_t.iter().enumerate() {
                        let (py, px) = (ye / d, xe / d);
                        // Even features take the sine, odd ones the cosine (the stack-and-flatten interleave).
                        let (vy, vx) = if c % 2 == 0 {
                            (py.sin(), px.sin())
                        } else {
                            (py.cos(), px.cos())
                        };
                        row[c] = vy;
                        row[features + c] = vx;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, (b, h * w, channels), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_torch_index_rule() {
        // interpolate(size=3) of 10 samples picks floor(i * 10/3) = 0, 3, 6.
        let picked: Vec<usize> = (0..3).map(|i| nearest_source(i, 10, 3)).collect();
        assert_eq!(picked, [0, 3, 6]);
        assert_eq!(nearest_source(5, 4, 8), 2);
        assert_eq!(nearest_source(2, 3, 3), 2);
    }

    #[test]
    fn unmasked_embedding_is_normalised_position() {
        let mask = Tensor::ones((1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let m = FeatureMask::downsample(&mask, 2, 2).unwrap();
        let pos = m.sine_embedding(4, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = pos.squeeze(0).unwrap().to_vec2().unwrap();
        // Position (y=1, x=0): y is at the end of its column (2π), x at half its row (π).
        let y = 2.0 * std::f32::consts::PI * 2.0 / (2.0 + 1e-6);
        let x = 2.0 * std::f32::consts::PI * 1.0 / (2.0 + 1e-6);
        assert!((v[2][0] - y.sin()).abs() < 1e-6);
        assert!((v[2][1] - y.cos()).abs() < 1e-6);
        assert!((v[2][4] - x.sin()).abs() < 1e-6);
        assert!((v[2][5] - x.cos()).abs() < 1e-6);
    }
}
