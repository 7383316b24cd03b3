//! Always-on fuzz tests (the libFuzzer targets `data_readers` and `image` of `fuzz/` run the same entry points
//! for longer): random and structured files given to the JSONL/CSV/TSV readers, the image-record readers, the
//! image decoder and the preprocessing after it must give a value or an error, never a panic. Inputs the fuzzer
//! found crashing are kept below as regression tests.

use std::path::{Path, PathBuf};

use mosaic_data::image::{
    ImageAugmentation, ImageDataset, ImageProcessor, ImageProcessorConfig, ImageRecordConfig,
    ImageTextDataset, decode_bytes,
};
use mosaic_data::{TextConfig, TextDataset, TokenConfig, TokenDataset};
use proptest::prelude::*;

/// A few dozen cases: enough for CI to exercise every entry point in about a second.
const CASES: u32 = 40;

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(relative)
}

/// Writes `bytes` as `data.EXT` in a fresh folder and runs every reader on it, as the `data_readers` fuzz
/// target does.
fn exercise_readers(extension: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("data.{extension}"));
    std::fs::write(&path, bytes).expect("write data file");
    for labels in [
        None,
        Some(vec!["negative".to_owned(), "positive".to_owned()]),
    ] {
        let cfg = TextConfig {
            labels,
            ..TextConfig::default()
        };
        if let Ok(set) = TextDataset::load(&path, &cfg) {
            assert!(set.examples.iter().all(|e| e.label < set.labels.len()));
        }
    }
    if let Ok(set) = TokenDataset::load(&path, &TokenConfig::default()) {
        assert!(set.examples.iter().all(|e| e.tokens.len() == e.tags.len()));
    }
    let cfg = ImageRecordConfig::default();
    let _ = ImageDataset::from_records(&path, &cfg);
    let _ = ImageTextDataset::from_records(&path, &cfg);
}

/// Decodes and preprocesses image bytes, as the `image` fuzz target does.
fn exercise_image(bytes: &[u8]) {
    let Ok(image) = decode_bytes(bytes, Path::new("image.png")) else {
        return;
    };
    assert_eq!(image.pixels().len(), image.width() * image.height() * 3);
    for config in [ImageProcessorConfig::clip(16), ImageProcessorConfig::vit(8)] {
        let processor = ImageProcessor::new(config);
        let _ = processor.preprocess(&image);
        let _ = ImageAugmentation::default().apply(&image, &processor, 3);
    }
}

/// One JSON value as a data line might hold it.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("-0".to_owned()),
        Just("1e400".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1.5".to_owned()),
        "[0-9]{1,3}",
        "\"[a-zA-Z\\- é]{0,8}\"",
        Just("[]".to_owned()),
        Just("[\"O\", \"B-PER\"]".to_owned()),
        Just("[\"a\", 1]".to_owned()),
        Just("{}".to_owned()),
    ]
}

/// JSONL with the fields the readers look for (and some they do not), values of every JSON kind.
fn jsonl_file() -> impl Strategy<Value = String> {
    let key = prop::sample::select(&["text", "label", "tokens", "tags", "image", "other", ""][..]);
    let object = prop::collection::vec((key, json_value()), 0..5).prop_map(|fields| {
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", body.join(", "))
    });
    let line = prop_oneof![4 => object, 1 => "[\\[\\]{}\" a-z,:]{0,12}"];
    prop::collection::vec(line, 0..5).prop_map(|lines| lines.join("\n"))
}

/// CSV with a header of known and unknown columns, quoted cells, ragged rows.
fn csv_file() -> impl Strategy<Value = String> {
    let column = prop::sample::select(&["text", "label", "tokens", "tags", "image", "x"][..]);
    let cell = prop_oneof![
        "[a-z ]{0,6}",
        Just("\"a, \"\"b\"\"\"".to_owned()),
        Just("[\"O\"]".to_owned()),
        Just("[".to_owned()),
        Just("\"unclosed".to_owned()),
        Just("\u{feff}".to_owned()),
    ];
    (
        prop::collection::vec(column, 0..4),
        prop::collection::vec(prop::collection::vec(cell, 0..5), 0..4),
    )
        .prop_map(|(header, rows)| {
            let mut text = header.join(",");
            for row in rows {
                text.push('\n');
                text.push_str(&row.join(","));
            }
            text
        })
}

/// A fixture image with a few bytes overwritten: the decoders' error paths past the header.
fn corrupted_image() -> impl Strategy<Value = Vec<u8>> {
    const NAMES: &[&str] = &["palette.png", "gray.jpg", "portrait_gray.png", "photo.jpg"];
    (
        prop::sample::select(NAMES),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(name, edits, cut)| {
            let mut bytes = std::fs::read(fixture(&format!("images/{name}"))).expect("fixture");
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes.truncate(cut.index(bytes.len()) + 1);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn readers_never_panic_on_bytes(
        extension in prop::sample::select(&["jsonl", "csv", "tsv"][..]),
        bytes in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        exercise_readers(extension, &bytes);
    }

    #[test]
    fn readers_never_panic_on_jsonl(text in jsonl_file()) {
        exercise_readers("jsonl", text.as_bytes());
    }

    #[test]
    fn readers_never_panic_on_csv(text in csv_file(), tsv in any::<bool>()) {
        let (extension, text) = if tsv { ("tsv", text.replace(',', "\t")) } else { ("csv", text) };
        exercise_readers(extension, text.as_bytes());
    }

    #[test]
    fn image_decoder_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        exercise_image(&bytes);
    }

    #[test]
    fn image_decoder_never_panics_on_corrupted_files(bytes in corrupted_image()) {
        exercise_image(&bytes);
    }
}
