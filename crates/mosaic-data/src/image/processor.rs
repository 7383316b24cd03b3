//! Hugging Face's image preprocessing (`CLIPImageProcessor`, `ViTImageProcessor`) driven by
//! `preprocessor_config.json`: resize (shortest edge or fixed size, through PIL-exact resampling), centre crop
//! (zero-padded when the image is smaller), rescale and normalise, giving CHW `f32` pixel values.

use std::path::Path;

use serde_json::{Map, Value};

use super::decode::RgbImage;
use super::error::{ImageError, ImageResult};
use super::resize::{Resample, resize};

/// OpenAI CLIP's channel means (`OPENAI_CLIP_MEAN`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's channel standard deviations (`OPENAI_CLIP_STD`).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// How the resize step sizes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// The shorter side becomes this many pixels, the longer keeps the aspect ratio (truncated), as
    /// `get_resize_output_image_size(default_to_square=False)`.
    ShortestEdge(usize),
    /// Exactly this size.
    Exact {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
}

/// The settings of `preprocessor_config.json` that shape the pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Whether to resize.
    pub do_resize: bool,
    /// The resize target.
    pub size: ResizeTarget,
    /// The resampling filter.
    pub resample: Resample,
    /// Whether to centre-crop.
    pub do_center_crop: bool,
    /// The crop as `(height, width)`.
    pub crop_size: (usize, usize),
    /// Whether to multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Whether to normalise with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation.
    pub image_std: [f32; 3],
}

impl ImageProcessorConfig {
    /// `CLIPImageProcessor`'s defaults for a model taking `image_size` square inputs.
    pub fn clip(image_size: usize) -> Self {
        ImageProcessorConfig {
            do_resize: true,
            size: ResizeTarget::ShortestEdge(image_size),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: (image_size, image_size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
        }
    }

    /// `ViTImageProcessor`'s defaults (fixed-size bilinear resize, mean and std 0.5, no crop).
    pub fn vit(image_size: usize) -> Self {
        ImageProcessorConfig {
            do_resize: true,
            size: ResizeTarget::Exact {
                height: image_size,
                width: image_size,
            },
            resample: Resample::Bilinear,
            do_center_crop: false,
            crop_size: (image_size, image_size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        }
    }

    /// Reads `preprocessor_config.json`.
    pub fn read(path: &Path) -> ImageResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|cause| ImageError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `preprocessor_config.json`; `path` only names the file in errors. Keys that are
    /// absent take the defaults of the class named by `image_processor_type` (ViT's for `ViTImageProcessor`,
    /// CLIP's otherwise).
    pub fn parse(text: &str, path: &Path) -> ImageResult<Self> {
        let bad = |message: String| ImageError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(bad("expected a JSON object".into()));
        };
        let kind = map
            .get("image_processor_type")
            .and_then(Value::as_str)
            .unwrap_or("CLIPImageProcessor");
        let is_vit = kind.starts_with("ViTImageProcessor");
        let defaults = if is_vit {
            Self::vit(224)
        } else {
            Self::clip(224)
        };
        let flag = |key: &str, default: bool| -> ImageResult<bool> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(bad(format!("key `{key}` should be true or false"))),
            }
        };
        let size = match map.get("size") {
            None | Some(Value::Null) => defaults.size,
            // An integer means the shortest edge for CLIP and a square for ViT (`get_size_dict`'s
            // `default_to_square`).
            Some(v) => parse_size(v, !is_vit).map_err(|m| bad(format!("key `size`: {m}")))?,
        };
        let crop_size = match map.get("crop_size") {
            None | Some(Value::Null) => match size {
                ResizeTarget::ShortestEdge(n) => (n, n),
                ResizeTarget::Exact { height, width } => (height, width),
            },
            Some(v) => match parse_size(v, false) {
                Ok(ResizeTarget::Exact { height, width }) => (height, width),
                Ok(ResizeTarget::ShortestEdge(_)) => {
                    return Err(bad("key `crop_size`: expected height and width".into()));
                }
                Err(m) => return Err(bad(format!("key `crop_size`: {m}"))),
            },
        };
        let resample = match map.get("resample") {
            None | Some(Value::Null) => defaults.resample,
            Some(v) => v.as_i64().and_then(Resample::from_pil).ok_or_else(|| {
                bad(format!(
                    "key `resample`: {v} is not a supported PIL filter (1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)"
                ))
            })?,
        };
        let rescale_factor = match map.get("rescale_factor") {
            None | Some(Value::Null) => defaults.rescale_factor,
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad("key `rescale_factor` should be a number".into()))?,
        };
        let image_mean = channels(&map, "image_mean", defaults.image_mean).map_err(bad)?;
        let image_std = channels(&map, "image_std", defaults.image_std).map_err(bad)?;
        if image_std.contains(&0.0) {
            return Err(bad("key `image_std`: a standard deviation is 0".into()));
        }
        Ok(ImageProcessorConfig {
            do_resize: flag("do_resize", defaults.do_resize)?,
            size,
            resample,
            do_center_crop: flag("do_center_crop", defaults.do_center_crop)?,
            crop_size,
            do_rescale: flag("do_rescale", defaults.do_rescale)?,
            rescale_factor,
            do_normalize: flag("do_normalize", defaults.do_normalize)?,
            image_mean,
            image_std,
        })
    }

    /// The `(height, width)` of the pixel values this config produces, when it is fixed.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        if self.do_center_crop {
            return Some(self.crop_size);
        }
        match (self.do_resize, self.size) {
            (true, ResizeTarget::Exact { height, width }) => Some((height, width)),
            _ => None,
        }
    }
}

fn parse_size(v: &Value, int_is_shortest_edge: bool) -> Result<ResizeTarget, String> {
    let positive = |v: &Value, what: &str| -> Result<usize, String> {
        v.as_u64()
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| format!("`{what}` should be a positive integer, got {v}"))
    };
    match v {
        Value::Number(_) if int_is_shortest_edge => {
            Ok(ResizeTarget::ShortestEdge(positive(v, "size")?))
        }
        Value::Number(_) => {
            let n = positive(v, "size")?;
            Ok(ResizeTarget::Exact {
                height: n,
                width: n,
            })
        }
        Value::Object(m) => {
            if m.get("longest_edge").is_some_and(|v| !v.is_null()) {
                return Err("`longest_edge` is not supported".into());
            }
            match (m.get("shortest_edge"), m.get("height"), m.get("width")) {
                (Some(s), None, None) if !s.is_null() => {
                    Ok(ResizeTarget::ShortestEdge(positive(s, "shortest_edge")?))
                }
                (_, Some(h), Some(w)) => Ok(ResizeTarget::Exact {
                    height: positive(h, "height")?,
                    width: positive(w, "width")?,
                }),
                _ => Err("expected {\"shortest_edge\": N} or {\"height\": H, \"width\": W}".into()),
            }
        }
        other => Err(format!("expected an integer or an object, got {other}")),
    }
}

/// A `[f32; 3]` per-channel key (a number or a list of 3), shared with the DETR config.
pub(super) fn channels(
    map: &Map<String, Value>,
    key: &str,
    default: [f32; 3],
) -> Result<[f32; 3], String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN) as f32;
            Ok([x; 3])
        }
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, v) in out.iter_mut().zip(a) {
                *o = v
                    .as_f64()
                    .ok_or_else(|| format!("key `{key}`: {v} is not a number"))?
                    as f32;
            }
            Ok(out)
        }
        Some(other) => Err(format!(
            "key `{key}`: expected a number or a list of 3, got {other}"
        )),
    }
}

/// Pixel values of one image: `channels x height x width`, row-major (CHW).
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// The number of channels (3).
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// `channels * height * width` values.
    pub data: Vec<f32>,
}

impl PixelValues {
    /// `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// Applies an [`ImageProcessorConfig`] to decoded images.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// The settings.
    pub config: ImageProcessorConfig,
}

impl ImageProcessor {
    /// A processor with these settings.
    pub fn new(config: ImageProcessorConfig) -> Self {
        ImageProcessor { config }
    }

    /// The processor of a model folder (its `preprocessor_config.json`).
    pub fn from_folder(dir: &Path) -> ImageResult<Self> {
        Ok(Self::new(ImageProcessorConfig::read(
            &dir.join("preprocessor_config.json"),
        )?))
    }

    /// Resize, crop, rescale and normalise one image.
    pub fn preprocess(&self, image: &RgbImage) -> ImageResult<PixelValues> {
        Ok(self.to_pixel_values(&self.resize_and_crop(image)?))
    }

    /// Only the resize and centre-crop steps (what evaluation does before rescaling).
    pub fn resize_and_crop(&self, image: &RgbImage) -> ImageResult<RgbImage> {
        let c = &self.config;
        let resized = if c.do_resize {
            let (h, w) = resize_output_size(image.width(), image.height(), c.size);
            resize(image, w, h, c.resample)?
        } else {
            image.clone()
        };
        if c.do_center_crop {
            center_crop(&resized, c.crop_size.0, c.crop_size.1)
        } else {
            Ok(resized)
        }
    }

    /// Only the rescale and normalise steps, to CHW (for images already sized, e.g. by augmentation).
    pub fn to_pixel_values(&self, image: &RgbImage) -> PixelValues {
        let c = &self.config;
        let (w, h) = (image.width(), image.height());
        let mut data = vec![0f32; 3 * h * w];
        for (i, px) in image.pixels().chunks_exact(3).enumerate() {
            for ch in 0..3 {
                // As transformers: rescale in f64 then cast to f32; normalise in f32.
                let mut v = if c.do_rescale {
                    (px[ch] as f64 * c.rescale_factor) as f32
                } else {
                    px[ch] as f32
                };
                if c.do_normalize {
                    v = (v - c.image_mean[ch]) / c.image_std[ch];
                }
                data[ch * h * w + i] = v;
            }
        }
        PixelValues {
            channels: 3,
            height: h,
            width: w,
            data,
        }
    }
}

/// `(height, width)` after resizing a `width`x`height` image to `target`.
pub fn resize_output_size(width: usize, height: usize, target: ResizeTarget) -> (usize, usize) {
    match target {
        ResizeTarget::Exact { height, width } => (height, width),
        ResizeTarget::ShortestEdge(size) => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            // Python's `int(size * long / short)`: float division, truncated.
            let new_long = ((size * long) as f64 / short as f64) as usize;
            if width <= height {
                (new_long, size)
            } else {
                (size, new_long)
            }
        }
    }
}

/// A centred `height`x`width` crop; an image smaller than that is first padded with zeros around its centre,
/// as `transformers.image_transforms.center_crop`.
pub fn center_crop(image: &RgbImage, height: usize, width: usize) -> ImageResult<RgbImage> {
    if height == 0 || width == 0 {
        return Err(ImageError::Transform(format!(
            "cannot crop to {width}x{height}"
        )));
    }
    let (h, w) = (image.height(), image.width());
    if h >= height && w >= width {
        return image.crop((w - width) / 2, (h - height) / 2, width, height);
    }
    // Pad to at least the crop size (zeros, the image centred with the extra pixel at the end), then crop.
    let (new_h, new_w) = (h.max(height), w.max(width));
    let top_pad = (new_h - h).div_ceil(2);
    let left_pad = (new_w - w).div_ceil(2);
    let mut padded = vec![0u8; new_h * new_w * 3];
    for y in 0..h {
        let dst = ((y + top_pad) * new_w + left_pad) * 3;
        padded[dst..dst + w * 3].copy_from_slice(&image.pixels()[y * w * 3..(y + 1) * w * 3]);
    }
    let padded = RgbImage::new(new_w, new_h, padded)?;
    // transformers crops at floor((orig - crop) / 2) + pad, on the padded image.
    let top = offset(h, height) + top_pad as isize;
    let left = offset(w, width) + left_pad as isize;
    padded.crop(left.max(0) as usize, top.max(0) as usize, width, height)
}

/// Python's `(orig - crop) // 2` (floor division, negative when the crop is larger).
fn offset(orig: usize, crop: usize) -> isize {
    (orig as isize - crop as isize).div_euclid(2)
}
