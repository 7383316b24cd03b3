//! The settings of a DETR `preprocessor_config.json` (`DetrImageProcessor`'s keys and defaults) and
//! transformers' `get_size_with_aspect_ratio`.

use std::path::Path;

use serde_json::Value;

use crate::image::error::{ImageError, ImageResult};
use crate::image::processor::channels;
use crate::image::resize::Resample;

/// ImageNet's channel means (`IMAGENET_DEFAULT_MEAN`), DETR's default.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's channel standard deviations (`IMAGENET_DEFAULT_STD`), DETR's default.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How DETR's resize step sizes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetrResize {
    /// The shorter side becomes `shortest_edge`, unless the longer would then pass `longest_edge`, in which case
    /// the longer side becomes (about) `longest_edge` (transformers' `get_size_with_aspect_ratio`).
    ShortestEdge {
        /// The target of the shorter side.
        shortest_edge: usize,
        /// The cap on the longer side; `None` is no cap.
        longest_edge: Option<usize>,
    },
    /// Exactly this size, ignoring the aspect ratio.
    Exact {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
}

/// The settings of a DETR `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetrProcessorConfig {
    /// Whether to resize.
    pub do_resize: bool,
    /// The resize target (default shortest edge 800, longest 1333).
    pub size: DetrResize,
    /// The resampling filter (default bilinear).
    pub resample: Resample,
    /// Whether to multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Whether to normalise with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean (default ImageNet's).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation (default ImageNet's).
    pub image_std: [f32; 3],
    /// Whether boxes become normalised `(cx, cy, w, h)`; otherwise they stay `(x0, y0, x1, y1)` pixels of the
    /// resized image. Defaults to `do_normalize`, as in transformers.
    pub do_convert_annotations: bool,
    /// Whether to pad a batch to a common size (with a pixel mask).
    pub do_pad: bool,
    /// Pad to this `(height, width)` instead of the batch's largest.
    pub pad_size: Option<(usize, usize)>,
}

impl Default for DetrProcessorConfig {
    /// `DetrImageProcessor()`'s defaults.
    fn default() -> Self {
        DetrProcessorConfig {
            do_resize: true,
            size: DetrResize::ShortestEdge {
                shortest_edge: 800,
                longest_edge: Some(1333),
            },
            resample: Resample::Bilinear,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: IMAGENET_MEAN,
            image_std: IMAGENET_STD,
            do_convert_annotations: true,
            do_pad: true,
            pad_size: None,
        }
    }
}

impl DetrProcessorConfig {
    /// Reads `preprocessor_config.json`.
    pub fn read(path: &Path) -> ImageResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|cause| ImageError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a DETR `preprocessor_config.json`; `path` only names the file in errors. Absent keys
    /// take `DetrImageProcessor`'s defaults. `size` may be an integer (the shortest edge, capped by the legacy
    /// `max_size` key or 1333), `{shortest_edge, longest_edge}`, `{shortest_edge}` (no cap: a mosaic extension;
    /// transformers refuses it) or `{height, width}`.
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
        let d = Self::default();
        let flag = |key: &str, default: bool| -> ImageResult<bool> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(bad(format!("key `{key}` should be true or false"))),
            }
        };
        if let Some(format) = map.get("format").and_then(Value::as_str)
            && format != "coco_detection"
        {
            return Err(bad(format!(
                "key `format`: only \"coco_detection\" is supported, got \"{format}\""
            )));
        }
        let max_size = match map.get("max_size") {
            None | Some(Value::Null) => None,
            Some(v) => Some(positive(v, "max_size").map_err(&bad)?),
        };
        let size = match map.get("size") {
            None | Some(Value::Null) => d.size,
            Some(v) => parse_size(v, max_size).map_err(|m| bad(format!("key `size`: {m}")))?,
        };
        let pad_size = match map.get("pad_size") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => match (m.get("height"), m.get("width")) {
                (Some(h), Some(w)) => Some((
                    positive(h, "pad_size.height").map_err(&bad)?,
                    positive(w, "pad_size.width").map_err(&bad)?,
                )),
                _ => {
                    return Err(bad(
                        "key `pad_size`: expected {\"height\": H, \"width\": W}".into(),
                    ));
                }
            },
            Some(other) => {
                return Err(bad(format!(
                    "key `pad_size`: expected an object, got {other}"
                )));
            }
        };
        let resample = match map.get("resample") {
            None | Some(Value::Null) => d.resample,
            Some(v) => v.as_i64().and_then(Resample::from_pil).ok_or_else(|| {
                bad(format!(
                    "key `resample`: {v} is not a supported PIL filter (1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)"
                ))
            })?,
        };
        let rescale_factor = match map.get("rescale_factor") {
            None | Some(Value::Null) => d.rescale_factor,
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad("key `rescale_factor` should be a number".into()))?,
        };
        let image_mean = channels(&map, "image_mean", d.image_mean).map_err(&bad)?;
        let image_std = channels(&map, "image_std", d.image_std).map_err(&bad)?;
        if image_std.contains(&0.0) {
            return Err(bad("key `image_std`: a standard deviation is 0".into()));
        }
        let do_normalize = flag("do_normalize", d.do_normalize)?;
        // `pad_and_return_pixel_mask` is the old name of `do_pad` (transformers still reads it).
        let do_pad = flag("do_pad", flag("pad_and_return_pixel_mask", d.do_pad)?)?;
        Ok(DetrProcessorConfig {
            do_resize: flag("do_resize", d.do_resize)?,
            size,
            resample,
            do_rescale: flag("do_rescale", d.do_rescale)?,
            rescale_factor,
            do_normalize,
            image_mean,
            image_std,
            do_convert_annotations: flag("do_convert_annotations", do_normalize)?,
            do_pad,
            pad_size,
        })
    }
}

fn positive(v: &Value, what: &str) -> Result<usize, String> {
    v.as_u64()
        .filter(|n| *n > 0)
        .map(|n| n as usize)
        .ok_or_else(|| format!("`{what}` should be a positive integer, got {v}"))
}

fn parse_size(v: &Value, max_size: Option<usize>) -> Result<DetrResize, String> {
    match v {
        // `get_size_dict(size, max_size=max_size or 1333, default_to_square=False)`.
        Value::Number(_) => Ok(DetrResize::ShortestEdge {
            shortest_edge: positive(v, "size")?,
            longest_edge: Some(max_size.unwrap_or(1333)),
        }),
        Value::Object(m) => {
            let get = |k: &str| m.get(k).filter(|v| !v.is_null());
            match (get("shortest_edge"), get("longest_edge"), get("height"), get("width")) {
                (Some(s), longest, None, None) => Ok(DetrResize::ShortestEdge {
                    shortest_edge: positive(s, "shortest_edge")?,
                    longest_edge: match longest {
                        Some(l) => Some(positive(l, "longest_edge")?),
                        None => max_size,
                    },
                }),
                (None, None, Some(h), Some(w)) => Ok(DetrResize::Exact {
                    height: positive(h, "height")?,
                    width: positive(w, "width")?,
                }),
                _ => Err("expected {\"shortest_edge\": N, \"longest_edge\": M} or {\"height\": H, \"width\": W} \
                          (max_height / max_width are not supported)"
                    .into()),
            }
        }
        other => Err(format!("expected an integer or an object, got {other}")),
    }
}

/// transformers' `get_size_with_aspect_ratio((height, width), size, max_size)`: the `(height, width)` of an image
/// whose shorter side becomes `size`, unless the longer would pass `max_size`. Python's rounding is kept: the
/// capped size is `round(max_size * short / long)` (ties to even), sides are truncated.
pub fn size_with_aspect_ratio(
    height: usize,
    width: usize,
    size: usize,
    max_size: Option<usize>,
) -> (usize, usize) {
    let mut size = size;
    let mut raw_size = None;
    if let Some(max_size) = max_size {
        let min_side = height.min(width) as f64;
        let max_side = height.max(width) as f64;
        if max_side / min_side * size as f64 > max_size as f64 {
            let raw = max_size as f64 * min_side / max_side;
            raw_size = Some(raw);
            size = raw.round_ties_even() as usize;
        }
    }
    if (height <= width && height == size) || (width <= height && width == size) {
        return (height, width);
    }
    // `int(raw_size * long / short)` when capped, else `int(size * long / short)`: float division, truncated.
    let scaled = |long: usize, short: usize| match raw_size {
        Some(raw) => (raw * long as f64 / short as f64) as usize,
        None => ((size * long) as f64 / short as f64) as usize,
    };
    if width < height {
        (scaled(height, width), size)
    } else {
        (size, scaled(width, height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_with_aspect_ratio_matches_python() {
        // Values computed with transformers' get_size_with_aspect_ratio.
        assert_eq!(size_with_aspect_ratio(48, 64, 40, Some(64)), (40, 53));
        assert_eq!(size_with_aspect_ratio(40, 50, 40, Some(64)), (40, 50));
        assert_eq!(size_with_aspect_ratio(28, 20, 40, Some(64)), (56, 40));
        assert_eq!(size_with_aspect_ratio(48, 64, 32, Some(40)), (30, 40));
        assert_eq!(
            size_with_aspect_ratio(480, 640, 800, Some(1333)),
            (800, 1066)
        );
        assert_eq!(
            size_with_aspect_ratio(100, 1000, 800, Some(1333)),
            (133, 1333)
        );
        assert_eq!(size_with_aspect_ratio(100, 1000, 800, None), (800, 8000));
    }

    #[test]
    fn config_parses_legacy_keys_and_refuses_bad_ones() {
        let p = Path::new("preprocessor_config.json");
        let c = DetrProcessorConfig::parse(
            r#"{"size": 800, "max_size": 1000, "do_normalize": false}"#,
            p,
        )
        .unwrap();
        assert_eq!(
            c.size,
            DetrResize::ShortestEdge {
                shortest_edge: 800,
                longest_edge: Some(1000)
            }
        );
        assert!(!c.do_convert_annotations);
        let c = DetrProcessorConfig::parse(r#"{"pad_and_return_pixel_mask": false}"#, p).unwrap();
        assert!(!c.do_pad);
        for bad in [
            r#"{"format": "coco_panoptic"}"#,
            r#"{"size": {"max_height": 3, "max_width": 4}}"#,
            r#"{"size": {"shortest_edge": 0}}"#,
            r#"{"image_std": [0, 1, 1]}"#,
            r#"[1]"#,
        ] {
            let e = DetrProcessorConfig::parse(bad, p).unwrap_err().to_string();
            assert!(e.starts_with("preprocessor_config.json:"), "{e}");
        }
    }
}
