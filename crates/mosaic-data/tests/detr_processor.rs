//! Parity with transformers' `DetrImageProcessorPil` (what `DetrImageProcessor` resolves to without torchvision) on
//! the fixture images and COCO annotations of `xtask/scripts/make_detr_processor_fixtures.py`: sizes and pixel
//! masks exactly, boxes and areas within 1e-5, pixel values within [`PIXEL_TOLERANCE`] (the resize is PIL-exact,
//! so what is left is float rounding of the rescale and normalisation).
//!
//! JPEG decoders differ by a level or two (ours is zune-jpeg, PIL's libjpeg-turbo), so, as in
//! `image_preprocess.rs`, the transforms are checked on PIL's decoded pixels (stored in the reference) and the
//! end-to-end result from our own decoder within [`DECODER_LEVELS`] 8-bit levels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mosaic_data::image::{DetrImageProcessor, ObjectAnnotation, RgbImage, decode_file};
use serde_json::Value;

const PIXEL_TOLERANCE: f32 = 1e-5;
const BOX_TOLERANCE: f32 = 1e-5;
/// How many 8-bit levels our JPEG decoder may differ from PIL's.
const DECODER_LEVELS: f32 = 4.0;

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
    let header: Value = serde_json::from_slice(&data[8..8 + n]).unwrap();
    let body = &data[8 + n..];
    let mut out = HashMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let at = |i: usize| info["data_offsets"][i].as_u64().unwrap() as usize;
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
                bytes: body[at(0)..at(1)].to_vec(),
            },
        );
    }
    out
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn pair(v: &Value) -> (usize, usize) {
    let a = v.as_array().unwrap();
    (
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    )
}

fn annotations(reference: &Value) -> Vec<Vec<ObjectAnnotation>> {
    reference["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| {
            image["annotations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    let b = f32s(&a["bbox"]);
                    ObjectAnnotation {
                        bbox: [b[0], b[1], b[2], b[3]].map(f64::from),
                        class_label: a["category_id"].as_i64().unwrap(),
                        area: a["area"].as_f64().unwrap(),
                        iscrowd: a["iscrowd"].as_i64().unwrap() != 0,
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn detr_processor_matches_transformers() {
    let root = fixtures();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("reference/detr_processor.json")).unwrap(),
    )
    .unwrap();
    let tensors = read_safetensors(&root.join("reference/detr_processor.safetensors"));
    let names: Vec<&str> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let ours: Vec<_> = names
        .iter()
        .map(|p| decode_file(&root.join(p)).unwrap())
        .collect();
    let pils: Vec<_> = names
        .iter()
        .zip(&ours)
        .map(|(p, image)| {
            let name = p.trim_start_matches("images/");
            let decoded = &tensors[&format!("decoded/{name}")];
            assert_eq!(decoded.shape, [image.height(), image.width(), 3], "{name}");
            RgbImage::new(image.width(), image.height(), decoded.bytes.clone()).unwrap()
        })
        .collect();
    let image_refs: Vec<_> = pils.iter().collect();
    let our_refs: Vec<_> = ours.iter().collect();
    let annotations = annotations(&reference);
    let annotation_refs: Vec<&[ObjectAnnotation]> = annotations.iter().map(Vec::as_slice).collect();
    let cases = reference["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 4);
    let (mut worst_pixel, mut worst_decoded) = (0f32, 0f32);
    for (case, expected) in cases {
        let config = root.join(expected["config"].as_str().unwrap());
        let processor = DetrImageProcessor::from_folder(config.parent().unwrap()).unwrap();
        let batch = processor.preprocess(&image_refs, &annotation_refs).unwrap();
        let end_to_end = processor.preprocess(&our_refs, &annotation_refs).unwrap();
        let c = &processor.config;
        let level = if c.do_rescale {
            c.rescale_factor as f32
        } else {
            1.0
        } / if c.do_normalize {
            c.image_std.iter().copied().fold(f32::MAX, f32::min)
        } else {
            1.0
        };
        assert_eq!(end_to_end.pixel_mask, batch.pixel_mask, "{case}");
        assert_eq!(end_to_end.targets, batch.targets, "{case}");

        let values = &tensors[&format!("{case}.pixel_values")];
        assert_eq!(values.dtype, "F32");
        assert_eq!(
            values.shape,
            [batch.batch, 3, batch.height, batch.width],
            "{case}"
        );
        for (i, (a, b)) in batch
            .pixel_values
            .iter()
            .zip(values.bytes.chunks_exact(4))
            .enumerate()
        {
            let e = f32::from_le_bytes(b.try_into().unwrap());
            let d = (a - e).abs();
            assert!(
                d <= PIXEL_TOLERANCE * e.abs().max(1.0),
                "{case}: pixel {i}: {a} vs {e}"
            );
            worst_pixel = worst_pixel.max(d);
            let d = (end_to_end.pixel_values[i] - e).abs();
            assert!(
                d <= DECODER_LEVELS * level * 1.0001,
                "{case}: pixel {i} from our decoder: {d}"
            );
            worst_decoded = worst_decoded.max(d / level);
        }
        let mask = &tensors[&format!("{case}.pixel_mask")];
        assert_eq!(
            mask.shape,
            [batch.batch, batch.height, batch.width],
            "{case}"
        );
        let expected_mask: Vec<u32> = mask.bytes.iter().map(|&b| b as u32).collect();
        assert_eq!(batch.pixel_mask, expected_mask, "{case}: pixel mask");

        let labels = expected["labels"].as_array().unwrap();
        assert_eq!(labels.len(), batch.targets.len());
        for (i, (target, label)) in batch.targets.iter().zip(labels).enumerate() {
            let at = format!("{case}, image {i}");
            let classes: Vec<i64> = label["class_labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(target.class_labels, classes, "{at}");
            assert_eq!(target.orig_size, pair(&label["orig_size"]), "{at}");
            // transformers sets `size` only when it resized or padded; otherwise it is the image's own size.
            let size = if label["size"].is_null() {
                target.orig_size
            } else {
                pair(&label["size"])
            };
            assert_eq!(target.size, size, "{at}");
            let boxes = label["boxes"].as_array().unwrap();
            assert_eq!(target.boxes.len(), boxes.len(), "{at}");
            for (a, e) in target.boxes.iter().zip(boxes) {
                for (x, y) in a.iter().zip(f32s(e)) {
                    assert!(
                        (x - y).abs() <= BOX_TOLERANCE * y.abs().max(1.0),
                        "{at}: box {a:?} vs {e}"
                    );
                }
            }
            for (x, y) in target.area.iter().zip(f32s(&label["area"])) {
                assert!(
                    (x - y).abs() <= BOX_TOLERANCE * y.abs().max(1.0),
                    "{at}: area {x} vs {y}"
                );
            }
        }
    }
    eprintln!(
        "largest pixel difference from transformers: {worst_pixel:e} (from PIL's decoded pixels), \
         {worst_decoded} levels (end to end, our JPEG decoder)"
    );
}

#[test]
fn detr_processor_reads_the_fixture_configs() {
    let processor =
        DetrImageProcessor::from_folder(&fixtures().join("reference/detr_processor/capped"))
            .unwrap();
    assert_eq!(processor.output_size(64, 48), (30, 40));
    let missing = DetrImageProcessor::from_folder(Path::new("no/such/folder")).unwrap_err();
    assert!(
        missing.to_string().contains("preprocessor_config.json"),
        "{missing}"
    );
}

#[test]
fn mismatched_annotations_and_sizes_are_errors() {
    let root = fixtures();
    let image = decode_file(&root.join("images/photo.jpg")).unwrap();
    let other = decode_file(&root.join("images/landscape.png")).unwrap();
    let processor =
        DetrImageProcessor::from_folder(&root.join("reference/detr_processor/plain")).unwrap();
    let e = processor.preprocess(&[&image, &other], &[&[]]).unwrap_err();
    assert!(
        e.to_string().contains("2 images but 1 annotation lists"),
        "{e}"
    );
    let mut unpadded = processor.clone();
    unpadded.config.do_pad = false;
    let unpadded = DetrImageProcessor::new(unpadded.config);
    let e = unpadded.preprocess(&[&image, &other], &[]).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert!(processor.collate(Vec::new()).is_err());
}

/// The bundled detection set's own config keeps its 64x64 images as they are; boxes come out normalised.
#[test]
fn shapes_detection_config_keeps_64_pixel_images() {
    let root = fixtures().join("data/shapes-detection");
    let processor = DetrImageProcessor::from_folder(&root).unwrap();
    let coco: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("test.json")).unwrap()).unwrap();
    let image = decode_file(&root.join(coco["images"][0]["file_name"].as_str().unwrap())).unwrap();
    let objects: Vec<ObjectAnnotation> = coco["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["image_id"] == coco["images"][0]["id"])
        .map(|a| {
            let b = f32s(&a["bbox"]);
            ObjectAnnotation::new(
                [b[0], b[1], b[2], b[3]].map(f64::from),
                a["category_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!((2..=6).contains(&objects.len()));
    let example = processor.process(&image, &objects).unwrap();
    assert_eq!(example.pixels.shape(), [3, 64, 64]);
    for (b, o) in example.target.boxes.iter().zip(&objects) {
        let [x, y, w, h] = o.bbox.map(|v| v as f32 / 64.0);
        let expected = [x + w / 2.0, y + h / 2.0, w, h];
        for (a, e) in b.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{b:?} vs {expected:?}");
        }
    }
}
