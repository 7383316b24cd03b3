//! Decoding PNG/JPEG files into 8-bit RGB, converting grayscale and transparency exactly as PIL does for
//! Hugging Face's image processors (`convert_to_rgb`: alpha composited onto opaque white).

use std::io::Cursor;
use std::path::Path;

use ::image::{DynamicImage, ImageReader};

use super::error::{ImageError, ImageResult};

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `RGBRGB...` (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl RgbImage {
    /// An image from interleaved RGB bytes; fails unless `pixels.len() == width * height * 3` and both sides are
    /// positive.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> ImageResult<Self> {
        if width == 0 || height == 0 {
            return Err(ImageError::Transform(format!(
                "an image needs positive sides, got {width}x{height}"
            )));
        }
        if pixels.len() != width * height * 3 {
            return Err(ImageError::Transform(format!(
                "{width}x{height} RGB needs {} bytes, got {}",
                width * height * 3,
                pixels.len()
            )));
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }

    /// An image whose pixel `(x, y)` is `f(x, y)`; sides must be positive.
    pub fn from_fn(
        width: usize,
        height: usize,
        mut f: impl FnMut(usize, usize) -> [u8; 3],
    ) -> ImageResult<Self> {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&f(x, y));
            }
        }
        Self::new(width, height, pixels)
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved RGB bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixel at column `x`, row `y` (panics when out of bounds, like slice indexing).
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// The `width`x`height` region whose top-left corner is `(left, top)`; it must lie inside the image.
    pub fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> ImageResult<Self> {
        if left + width > self.width || top + height > self.height {
            return Err(ImageError::Transform(format!(
                "crop {width}x{height} at ({left}, {top}) does not fit a {}x{} image",
                self.width, self.height
            )));
        }
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in top..top + height {
            let start = (y * self.width + left) * 3;
            pixels.extend_from_slice(&self.pixels[start..start + width * 3]);
        }
        Self::new(width, height, pixels)
    }

    /// The image mirrored left to right.
    pub fn flip_horizontal(&self) -> Self {
        let mut pixels = Vec::with_capacity(self.pixels.len());
        for row in self.pixels.chunks_exact(self.width * 3) {
            for px in row.chunks_exact(3).rev() {
                pixels.extend_from_slice(px);
            }
        }
        RgbImage {
            width: self.width,
            height: self.height,
            pixels,
        }
    }

    pub(crate) fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }
}

/// The most pixels an image may declare: PIL's `Image.MAX_IMAGE_PIXELS` (where PIL starts warning of a decompression
/// bomb). A header over it is refused before any pixel is decoded, so a tiny corrupt file declaring 12081x8488 pixels
/// costs nothing instead of seconds of decoding.
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Reads and decodes the PNG or JPEG at `path` (the format is told from the bytes, not the extension).
pub fn decode_file(path: &Path) -> ImageResult<RgbImage> {
    let bytes = std::fs::read(path).map_err(|cause| ImageError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    decode_bytes(&bytes, path)
}

/// Decodes PNG or JPEG bytes; `path` only names the image in errors.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> ImageResult<RgbImage> {
    if bytes.is_empty() {
        return Err(ImageError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let decode_err = |message: String| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(decode_err("not a PNG or JPEG file".into()));
    }
    // Only the header is read here; the bytes are decoded by a second reader below.
    let probe = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    let (width, height) = probe
        .into_dimensions()
        .map_err(|e| decode_err(e.to_string()))?;
    if width as u64 * height as u64 > MAX_IMAGE_PIXELS {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: MAX_IMAGE_PIXELS,
        });
    }
    let image = reader.decode().map_err(|e| decode_err(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ImageError::ZeroSize {
            path: path.to_path_buf(),
            width: image.width(),
            height: image.height(),
        });
    }
    Ok(to_rgb(image))
}

/// Converts any decoded image to 8-bit RGB as `transformers.image_transforms.convert_to_rgb` does with PIL:
/// gray is replicated; an alpha channel is composited onto opaque white with PIL's integer `alpha_composite`.
/// 16-bit samples keep their high byte.
fn to_rgb(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels: Vec<u8> = match image {
        DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        DynamicImage::ImageLuma8(buf) => buf.into_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageLumaA8(buf) => buf
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| composite_on_white([p[0], p[0], p[0]], p[1]))
            .collect(),
        DynamicImage::ImageRgba8(buf) => rgba_on_white(&buf.into_raw()),
        DynamicImage::ImageLuma16(buf) => buf
            .into_raw()
            .iter()
            .flat_map(|&l| {
                let l = (l >> 8) as u8;
                [l, l, l]
            })
            .collect(),
        DynamicImage::ImageRgb16(buf) => buf.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageLumaA16(buf) => buf
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| {
                let l = (p[0] >> 8) as u8;
                composite_on_white([l, l, l], (p[1] >> 8) as u8)
            })
            .collect(),
        DynamicImage::ImageRgba16(buf) => {
            let high: Vec<u8> = buf.into_raw().iter().map(|&v| (v >> 8) as u8).collect();
            rgba_on_white(&high)
        }
        other => rgba_on_white(&other.to_rgba8().into_raw()),
    };
    RgbImage {
        width,
        height,
        pixels,
    }
}

fn rgba_on_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| composite_on_white([p[0], p[1], p[2]], p[3]))
        .collect()
}

/// PIL's `Image.alpha_composite(white, src)` for one pixel (libImaging/AlphaComposite.c, 7 extra bits of
/// precision, rounded divisions by 255), so RGBA images match Hugging Face's preprocessing bit for bit.
fn composite_on_white(rgb: [u8; 3], alpha: u8) -> [u8; 3] {
    const PRECISION_BITS: u32 = 7;
    if alpha == 0 {
        return [255, 255, 255];
    }
    let (src_a, dst_a, dst_c) = (alpha as u32, 255u32, 255u32);
    let blend = dst_a * (255 - src_a);
    let outa255 = src_a * 255 + blend;
    let coef1 = src_a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let shift_div_255 = |a: u32| ((a >> 8) + a) >> 8;
    rgb.map(|c| {
        let tmp = c as u32 * coef1 + dst_c * coef2;
        (shift_div_255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
    })
}
