//! Pixel parity with transformers' `CLIPImageProcessor` and `ViTImageProcessor` (PIL backend) on the fixture
//! images (`xtask/scripts/make_vision_fixtures.py`): RGB, grayscale, RGBA, palette with transparency, JPEG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mosaic_data::image::{
    ImageProcessor, ImageProcessorConfig, PixelValues, Resample, ResizeTarget, RgbImage,
    decode_file, resize,
};

const TOLERANCE: f32 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A tensor of a safetensors file: dtype, shape and raw little-endian bytes.
struct Stored {
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// A minimal safetensors reader (this crate does not depend on a tensor library).
fn read_safetensors(path: &Path) -> HashMap<String, Stored> {
    let data = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&data[8..8 + n]).unwrap();
    let body = &data[8 + n..];
    let mut out = HashMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let offsets: Vec<usize> = info["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        out.insert(
            name.clone(),
            Stored {
                dtype: info["dtype"].as_str().unwrap().to_string(),
                shape: info["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect(),
                bytes: body[offsets[0]..offsets[1]].to_vec(),
            },
        );
    }
    out
}

fn f32s(s: &Stored) -> Vec<f32> {
    assert_eq!(s.dtype, "F32");
    s.bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

const IMAGES: &[&str] = &[
    "landscape.png",
    "portrait_gray.png",
    "rgba.png",
    "palette.png",
    "photo.jpg",
    "gray.jpg",
];

/// The largest absolute difference between our pixel values and the reference's.
fn max_error(pixels: &PixelValues, expected: &Stored, name: &str) -> f32 {
    assert_eq!(pixels.shape().to_vec(), expected.shape, "{name}");
    pixels
        .data
        .iter()
        .zip(f32s(expected))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// Checks every fixture image against `reference`.
///
/// PNG decoding is lossless, so the whole pipeline (our decoder + transforms) must match. JPEG decoders differ
/// in IDCT and chroma-upsampling rounding (ours is zune-jpeg, PIL's libjpeg-turbo), so for JPEGs the transforms
/// are checked on PIL's decoded pixels (stored in the reference), and our decoded bytes must be within a few
/// levels of PIL's.
fn check(model: &str, reference: &str) {
    let processor = ImageProcessor::from_folder(&fixtures().join("models").join(model)).unwrap();
    let stored = read_safetensors(&fixtures().join("reference").join(reference));
    let mut failures = Vec::new();
    for name in IMAGES {
        let image = decode_file(&fixtures().join("images").join(name)).unwrap();
        let expected = &stored[*name];
        let decoded = &stored[&format!("decoded/{name}")];
        assert_eq!(decoded.shape, [image.height(), image.width(), 4], "{name}");
        let end_to_end = max_error(&processor.preprocess(&image).unwrap(), expected, name);
        if name.ends_with(".png") {
            println!("{model} {name}: max abs error {end_to_end:.3e}");
            if end_to_end > TOLERANCE {
                failures.push(format!("{name}: {end_to_end}"));
            }
            continue;
        }
        assert!(decoded.bytes.chunks_exact(4).all(|p| p[3] == 255));
        let pil_rgb: Vec<u8> = decoded
            .bytes
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let decoder_diff = pil_rgb
            .iter()
            .zip(image.pixels())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap_or(0);
        let pil_image = RgbImage::new(image.width(), image.height(), pil_rgb).unwrap();
        let transforms = max_error(&processor.preprocess(&pil_image).unwrap(), expected, name);
        println!(
            "{model} {name}: max abs error {transforms:.3e} from PIL's decoded pixels; \
             decoders differ by <= {decoder_diff} levels (end to end {end_to_end:.3e})"
        );
        if transforms > TOLERANCE {
            failures.push(format!("{name} (from PIL's pixels): {transforms}"));
        }
        if decoder_diff > 4 {
            failures.push(format!(
                "{name}: decoded bytes differ by {decoder_diff} levels"
            ));
        }
    }
    assert!(failures.is_empty(), "{model}: {failures:?}");
}

#[test]
fn clip_preprocessing_matches_transformers() {
    check("tiny-clip", "clip_preprocess.safetensors");
}

#[test]
fn vit_preprocessing_matches_transformers() {
    check("tiny-vit", "vit_preprocess.safetensors");
}

#[test]
fn config_reads_hf_keys_and_old_integer_sizes() {
    let c =
        ImageProcessorConfig::read(&fixtures().join("models/tiny-clip/preprocessor_config.json"))
            .unwrap();
    assert_eq!(c.size, ResizeTarget::ShortestEdge(32));
    assert_eq!(c.crop_size, (32, 32));
    assert_eq!(c.output_size(), Some((32, 32)));
    // Old CLIP configs give integers: the size is the shortest edge, the crop a square.
    let old = r#"{"image_processor_type": "CLIPImageProcessor", "size": 224, "crop_size": 224, "resample": 3}"#;
    let c = ImageProcessorConfig::parse(old, "old.json".as_ref()).unwrap();
    assert_eq!(c.size, ResizeTarget::ShortestEdge(224));
    assert_eq!(c.crop_size, (224, 224));
    // ViT: an integer size is a square.
    let vit = r#"{"image_processor_type": "ViTImageProcessor", "size": 16}"#;
    let c = ImageProcessorConfig::parse(vit, "vit.json".as_ref()).unwrap();
    assert_eq!(
        c.size,
        ResizeTarget::Exact {
            height: 16,
            width: 16
        }
    );
}

#[test]
fn config_errors_name_the_file_and_key() {
    for (text, key) in [
        (r#"{"resample": 0}"#, "resample"),
        (r#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
        (r#"{"image_std": [0.5, 0.0, 0.5]}"#, "image_std"),
        (r#"{"size": {"longest_edge": 3}}"#, "size"),
        (r#"{"crop_size": -1}"#, "crop_size"),
        (r#"{"do_resize": "yes"}"#, "do_resize"),
    ] {
        let e = ImageProcessorConfig::parse(text, "dir/preprocessor_config.json".as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("dir/preprocessor_config.json"), "{e}");
        assert!(e.contains(key), "`{key}` not in {e}");
    }
    let e = ImageProcessorConfig::parse("[1]", "p.json".as_ref()).unwrap_err();
    assert!(e.to_string().contains("p.json"));
}

#[test]
fn resize_matches_pil_for_every_filter_and_pass_order() {
    let stored = read_safetensors(&fixtures().join("reference/clip_preprocess_resize.safetensors"));
    let source = &stored["source"];
    let [h, w, _] = source.shape[..] else {
        panic!("source shape {:?}", source.shape)
    };
    let image = RgbImage::new(w, h, source.bytes.clone()).unwrap();
    let mut checked = 0;
    for (key, expected) in &stored {
        let Some((filter, size)) = key.split_once('/') else {
            continue;
        };
        let resample = match filter {
            "lanczos" => Resample::Lanczos,
            "bilinear" => Resample::Bilinear,
            "bicubic" => Resample::Bicubic,
            "box" => Resample::Box,
            "hamming" => Resample::Hamming,
            other => panic!("unknown filter {other}"),
        };
        let (tw, th) = size.split_once('x').unwrap();
        let (tw, th): (usize, usize) = (tw.parse().unwrap(), th.parse().unwrap());
        let ours = resize(&image, tw, th, resample).unwrap();
        assert_eq!(expected.shape, [th, tw, 3], "{key}");
        let differing = ours
            .pixels()
            .iter()
            .zip(&expected.bytes)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "{key}: {differing} bytes differ from PIL");
        checked += 1;
    }
    assert_eq!(checked, 50);
}
