//! `detections.png`: a grid of images with their predicted boxes drawn as rectangles, one colour per class, so a
//! run's result can be looked at. The images are scaled up by a whole factor (nearest neighbour) so that small
//! images stay readable; the class colours are listed in `report.json`.

use std::path::Path;

use mosaic_data::image::RgbImage;
use mosaic_models::detr::Detection;

use crate::error::{Result, TrainError};

/// The class colours, in label order (repeating past the eighth class).
pub const PALETTE: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
];

/// Columns of the grid.
const COLUMNS: usize = 4;
/// Pixels between tiles.
const GAP: usize = 4;
/// The smallest side a tile is scaled up to.
const MIN_TILE: usize = 192;

/// The colour of class `label`.
pub fn colour(label: usize) -> [u8; 3] {
    PALETTE[label % PALETTE.len()]
}

/// `#rrggbb` of class `label`.
pub fn colour_hex(label: usize) -> String {
    let [r, g, b] = colour(label);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Draws `images` (each with its detections, boxes `[x0, y0, x1, y1]` in its pixels) into a grid and writes it
/// to `path` as a PNG.
pub fn draw_detections(
    images: &[&RgbImage],
    detections: &[Vec<Detection>],
    path: &Path,
) -> Result<()> {
    if images.is_empty() {
        return Ok(());
    }
    let max_side = images
        .iter()
        .map(|i| i.width().max(i.height()))
        .max()
        .unwrap_or(1);
    let scale = MIN_TILE.div_ceil(max_side).max(1);
    let tile = max_side * scale;
    let columns = COLUMNS.min(images.len());
    let rows = images.len().div_ceil(columns);
    let (width, height) = (
        columns * tile + (columns + 1) * GAP,
        rows * tile + (rows + 1) * GAP,
    );
    let mut canvas = image::RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255; 3]));
    for (i, img) in images.iter().enumerate() {
        let (ox, oy) = (
            GAP + (i % columns) * (tile + GAP),
            GAP + (i / columns) * (tile + GAP),
        );
        for y in 0..img.height() * scale {
            for x in 0..img.width() * scale {
                canvas.put_pixel(
                    (ox + x) as u32,
                    (oy + y) as u32,
                    image::Rgb(img.get(x / scale, y / scale)),
                );
            }
        }
        let (w, h) = ((img.width() * scale) as f32, (img.height() * scale) as f32);
        for d in detections.get(i).map_or(&[][..], Vec::as_slice) {
            let s = scale as f32;
            // Clipped to the tile: transformers leaves predicted boxes unclipped.
            let [x0, y0, x1, y1] = [
                (d.bbox[0] * s).clamp(0.0, w - 1.0),
                (d.bbox[1] * s).clamp(0.0, h - 1.0),
                (d.bbox[2] * s).clamp(0.0, w - 1.0),
                (d.bbox[3] * s).clamp(0.0, h - 1.0),
            ]
            .map(|v| v.round() as usize);
            rectangle(
                &mut canvas,
                (ox + x0, oy + y0, ox + x1, oy + y1),
                colour(d.label),
            );
        }
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    canvas
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| TrainError::file(path, format!("cannot encode the PNG: {e}")))?;
    mosaic_models::folder::write_atomic(path, bytes.get_ref())?;
    Ok(())
}

/// A 2-pixel outline of the corner box `(x0, y0, x1, y1)` (inclusive), inside the canvas.
fn rectangle(canvas: &mut image::RgbImage, b: (usize, usize, usize, usize), rgb: [u8; 3]) {
    let (x0, y0, x1, y1) = (b.0.min(b.2), b.1.min(b.3), b.0.max(b.2), b.1.max(b.3));
    let (w, h) = (canvas.width() as usize, canvas.height() as usize);
    let mut put = |x: usize, y: usize| {
        if x < w && y < h {
            canvas.put_pixel(x as u32, y as u32, image::Rgb(rgb));
        }
    };
    for t in 0..2 {
        for x in x0..=x1 {
            put(x, y0 + t);
            put(x, y1.saturating_sub(t));
        }
        for y in y0..=y1 {
            put(x0 + t, y);
            put(x1.saturating_sub(t), y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_grid_with_boxes_in_class_colours() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::new(16, 16, vec![0; 16 * 16 * 3]).unwrap();
        let detections = vec![vec![Detection {
            score: 0.9,
            label: 1,
            bbox: [2.0, 2.0, 10.0, 10.0],
        }]];
        let path = dir.path().join("d.png");
        draw_detections(&[&img, &img], &detections, &path).unwrap();
        let png = image::open(&path).unwrap().to_rgb8();
        // Two 192-pixel tiles side by side, and the box's top-left corner at (2·12, 2·12) in the first.
        assert_eq!(
            (png.width(), png.height()),
            (2 * 192 + 3 * GAP as u32, 192 + 2 * GAP as u32)
        );
        let corner = png.get_pixel(GAP as u32 + 24, GAP as u32 + 24);
        assert_eq!(corner.0, colour(1));
    }
}
