//! The model-folder config loaders: `BertConfig::parse`, `Gpt2Config::parse` (`config.json`) and
//! `ImageProcessorConfig::parse` (`preprocessor_config.json`).
//!
//! Input: the file's text.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mosaic_data::image::ImageProcessorConfig;
use mosaic_models::{BertConfig, Gpt2Config};

fuzz_target!(|data: &[u8]| {
    let text = mosaic_fuzz::text(data);
    let path = Path::new("config.json");

    // A config that loads is saved with the model (`to_json`) and must load again from what was saved.
    if let Ok(config) = BertConfig::parse(&text, path) {
        let saved = config.to_json().to_string();
        if let Err(err) = BertConfig::parse(&saved, path) {
            panic!("a saved BERT config does not load again: {err}\n{saved}");
        }
    }
    if let Ok(config) = Gpt2Config::parse(&text, path) {
        let saved = config.to_json().to_string();
        if let Err(err) = Gpt2Config::parse(&saved, path) {
            panic!("a saved GPT-2 config does not load again: {err}\n{saved}");
        }
    }
    if let Ok(config) = ImageProcessorConfig::parse(&text, Path::new("preprocessor_config.json")) {
        // The output size is derived from the parsed sizes; it must not overflow or divide by zero.
        let _ = config.output_size();
    }
});
