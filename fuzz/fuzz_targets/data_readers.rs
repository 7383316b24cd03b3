//! The data-set readers: `TextDataset::load`, `TokenDataset::load` (JSONL, CSV, TSV) and the image-record
//! readers (`ImageDataset::from_records`, `ImageTextDataset::from_records`), on a scratch file holding the
//! fuzzed bytes (the readers take paths; there is no in-memory entry point).
//!
//! Input: one selector byte (which reader, which format, whether labels are given), then the file's bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_data::image::{ImageDataset, ImageRecordConfig, ImageTextDataset};
use mosaic_data::{TextConfig, TextDataset, TokenConfig, TokenDataset};

const EXTENSIONS: [&str; 3] = ["jsonl", "csv", "tsv"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file_bytes)) = data.split_first() else {
        return;
    };
    let extension = EXTENSIONS[usize::from(selector) % EXTENSIONS.len()];
    let reader = (selector / 3) % 3;
    let explicit_labels = selector & 0x80 != 0;
    let path = mosaic_fuzz::scratch_file(&format!("data.{extension}"), file_bytes);

    match reader {
        0 => {
            let cfg = TextConfig {
                labels: explicit_labels.then(|| vec!["negative".into(), "positive".into()]),
                ..TextConfig::default()
            };
            if let Ok(set) = TextDataset::load(&path, &cfg) {
                let counts = set.label_counts();
                assert_eq!(counts.iter().sum::<usize>(), set.len());
                assert!(set.examples.iter().all(|e| e.label < set.labels.len()));
            }
        }
        1 => {
            let cfg = TokenConfig {
                labels: explicit_labels.then(|| vec!["O".into(), "B-PER".into(), "I-PER".into()]),
                ..TokenConfig::default()
            };
            if let Ok(set) = TokenDataset::load(&path, &cfg) {
                for example in &set.examples {
                    assert_eq!(example.tokens.len(), example.tags.len());
                    assert!(example.tags.iter().all(|&t| t < set.labels.len()));
                }
            }
        }
        _ => {
            let cfg = ImageRecordConfig {
                labels: explicit_labels.then(|| vec!["cat".into(), "dog".into()]),
                ..ImageRecordConfig::default()
            };
            let _ = ImageDataset::from_records(&path, &cfg);
            let _ = ImageTextDataset::from_records(&path, &cfg);
        }
    }
});
