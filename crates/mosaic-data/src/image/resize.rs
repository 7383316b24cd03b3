//! Resampling exactly as Pillow's `Image.resize` does for 8-bit images (libImaging/Resample.c), since Hugging
//! Face's image processors resize through PIL: a separable convolution, horizontal pass then vertical, whose
//! kernel support is widened by the scale factor when downsampling (antialiasing), with coefficients in fixed
//! point (22 fractional bits) and each pass rounded and clamped to `u8`. Matching it bit for bit is what lets the
//! pixel values equal `CLIPImageProcessor`'s.

use serde::{Deserialize, Serialize};

use super::decode::RgbImage;
use super::error::{ImageError, ImageResult};

/// Resampling filters, numbered as PIL's `Image.Resampling` (the `resample` key of `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    /// `LANCZOS` (1): windowed sinc, support 3.
    Lanczos,
    /// `BILINEAR` (2): triangle, support 1.
    Bilinear,
    /// `BICUBIC` (3): cubic convolution with a = -0.5, support 2.
    Bicubic,
    /// `BOX` (4): support 0.5.
    Box,
    /// `HAMMING` (5): Hamming-windowed sinc, support 1.
    Hamming,
}

impl Resample {
    /// The filter with PIL's id; `NEAREST` (0) is not supported (it is not a convolution in PIL).
    pub fn from_pil(id: i64) -> Option<Self> {
        match id {
            1 => Some(Resample::Lanczos),
            2 => Some(Resample::Bilinear),
            3 => Some(Resample::Bicubic),
            4 => Some(Resample::Box),
            5 => Some(Resample::Hamming),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Resample::Box => 0.5,
            Resample::Bilinear | Resample::Hamming => 1.0,
            Resample::Bicubic => 2.0,
            Resample::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Resample::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Resample::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Resample::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Resample::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Resample::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output sample's taps: the first input index and fixed-point weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` samples to `out_size`.
fn taps(in_size: usize, out_size: usize, filter: Resample) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filter_scale;
            // `(int)(v + 0.5)` in C truncates towards zero: the same as `as i64` here.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            let raw: Vec<f64> = (0..count)
                .map(|x| filter.weight(((x + xmin) as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let fixed = w * (1u32 << PRECISION_BITS) as f64;
                    if w < 0.0 {
                        (fixed - 0.5) as i32
                    } else {
                        (fixed + 0.5) as i32
                    }
                })
                .collect();
            Taps {
                first: xmin,
                weights,
            }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes to `width`x`height` with PIL's semantics (see the module docs).
///
/// Pass order follows Pillow 13: horizontal first, unless the height shrinks by more than twice as many pixels
/// as the width does; the intermediate image is rounded to `u8`, so the order changes results.
pub fn resize(
    image: &RgbImage,
    width: usize,
    height: usize,
    filter: Resample,
) -> ImageResult<RgbImage> {
    if width == 0 || height == 0 {
        return Err(ImageError::Transform(format!(
            "cannot resize to {width}x{height}"
        )));
    }
    let (in_w, in_h) = (image.width(), image.height());
    if (width, height) == (in_w, in_h) {
        return Ok(image.clone());
    }
    let (need_h, need_v) = (width != in_w, height != in_h);
    let shrink_h = in_h as i64 - height as i64;
    let shrink_w = in_w as i64 - width as i64;
    let horizontal_first = !(shrink_h > 0 && shrink_h > shrink_w * 2);
    let vertical = taps(in_h, height, filter);
    let horizontal = taps(in_w, width, filter);
    let src = image.pixels();
    let pixels = if horizontal_first {
        // Only the input rows that the vertical pass reads go through the horizontal pass, as in PIL.
        let (first, last) = if need_v {
            let first = vertical.first().map_or(0, |t| t.first);
            let last = vertical.last().map_or(in_h, |t| t.first + t.weights.len());
            (first, last.max(first + 1))
        } else {
            (0, in_h)
        };
        let rows = if need_h {
            horizontal_pass(&src[first * in_w * 3..last * in_w * 3], in_w, &horizontal)
        } else {
            src[first * in_w * 3..last * in_w * 3].to_vec()
        };
        if need_v {
            vertical_pass(&rows, width, &vertical, first)
        } else {
            rows
        }
    } else {
        let rows = vertical_pass(src, in_w, &vertical, 0);
        if need_h {
            horizontal_pass(&rows, in_w, &horizontal)
        } else {
            rows
        }
    };
    RgbImage::new(width, height, pixels)
}

/// Resamples every row of `src` (rows of `in_w` RGB pixels) to `taps.len()` pixels.
fn horizontal_pass(src: &[u8], in_w: usize, taps: &[Taps]) -> Vec<u8> {
    let out_w = taps.len();
    let rows = src.len() / (in_w * 3);
    let mut out = vec![0u8; rows * out_w * 3];
    for (in_row, out_row) in src
        .chunks_exact(in_w * 3)
        .zip(out.chunks_exact_mut(out_w * 3))
    {
        for (xx, t) in taps.iter().enumerate() {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &w) in t.weights.iter().enumerate() {
                let px = &in_row[(t.first + i) * 3..(t.first + i) * 3 + 3];
                for c in 0..3 {
                    acc[c] += px[c] as i64 * w as i64;
                }
            }
            for c in 0..3 {
                out_row[xx * 3 + c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Resamples the columns of `src` (rows of `width` RGB pixels whose first row is input row `row_offset`) to
/// `taps.len()` rows.
fn vertical_pass(src: &[u8], width: usize, taps: &[Taps], row_offset: usize) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; taps.len() * stride];
    for (t, out_row) in taps.iter().zip(out.chunks_exact_mut(stride)) {
        for (x, o) in out_row.iter_mut().enumerate() {
            let mut acc = 1i64 << (PRECISION_BITS - 1);
            for (i, &w) in t.weights.iter().enumerate() {
                let y = t.first + i - row_offset;
                acc += src[y * stride + x] as i64 * w as i64;
            }
            *o = clip8(acc);
        }
    }
    out
}
