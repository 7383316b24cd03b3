//! Always-on fuzz tests (the libFuzzer targets `model_config` and `safetensors` of `fuzz/` run the same entry
//! points for longer): random and corrupted `config.json` texts and safetensors files must load or give an
//! error, never a panic. Inputs the fuzzer found crashing are kept below as regression tests.

use std::path::Path;

use candle_core::Device;
use mosaic_models::params::Checkpoint;
use mosaic_models::{BertConfig, Gpt2Config};
use proptest::prelude::*;

/// A few dozen cases: enough for CI to exercise every entry point in well under a second.
const CASES: u32 = 48;

fn fixture_text(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a config text with every config parser, as the `model_config` fuzz target does: a config that loads
/// must load again from what saving it writes.
fn exercise_configs(text: &str) {
    let path = Path::new("config.json");
    if let Ok(config) = BertConfig::parse(text, path) {
        let saved = config.to_json().to_string();
        BertConfig::parse(&saved, path).expect("a saved BERT config loads again");
    }
    if let Ok(config) = Gpt2Config::parse(text, path) {
        let saved = config.to_json().to_string();
        Gpt2Config::parse(&saved, path).expect("a saved GPT-2 config loads again");
    }
}

/// Reads safetensors bytes in memory and from a file, as the `safetensors` fuzz target does.
fn exercise_safetensors(bytes: &[u8]) {
    let _ = candle_core::safetensors::load_buffer(bytes, &Device::Cpu);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).expect("write weights");
    let _ = Checkpoint::read(&path, &Device::Cpu);
}

/// A safetensors file: an 8-byte little-endian header length, the JSON header, the data.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// A header describing one tensor with fuzzed dtype, shape and offsets over a fuzzed amount of data.
fn safetensors_file() -> impl Strategy<Value = Vec<u8>> {
    let dtype = prop::sample::select(
        &[
            "F32", "F16", "BF16", "F64", "I64", "U8", "U32", "F8_E4M3", "BOOL", "I8", "X",
        ][..],
    );
    let dim = prop_oneof![0usize..4, Just(usize::MAX / 2), Just(1usize << 40)];
    (
        dtype,
        prop::collection::vec(dim, 0..4),
        0usize..40,
        0usize..40,
        0usize..40,
    )
        .prop_map(|(dtype, shape, start, end, data_len)| {
            let header = format!(
                r#"{{"t":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{end}]}}}}"#
            );
            safetensors_bytes(&header, &vec![0x3c; data_len])
        })
}

/// A fixture config with one JSON value replaced by another kind of value.
fn mutated_config() -> impl Strategy<Value = String> {
    let replacement = prop::sample::select(
        &[
            "0",
            "-1",
            "1e999",
            "18446744073709551616",
            "null",
            "\"x\"",
            "[]",
            "{}",
            "true",
        ][..],
    );
    (
        prop::sample::select(&["tiny-bert", "tiny-bert-cls", "tiny-gpt2"][..]),
        any::<prop::sample::Index>(),
        replacement,
    )
        .prop_map(|(model, at, replacement)| {
            let text = fixture_text(&format!("models/{model}/config.json"));
            // Replace the value after the chosen `:` up to the next `,` or newline.
            let colons: Vec<usize> = text.match_indices(':').map(|(i, _)| i).collect();
            let Some(&colon) = colons.get(at.index(colons.len().max(1))) else {
                return text;
            };
            let rest = &text[colon + 1..];
            let end = rest.find([',', '\n']).unwrap_or(rest.len());
            format!("{}: {replacement}{}", &text[..colon], &rest[end..])
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn config_parsers_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        exercise_configs(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn config_parsers_never_panic_on_mutated_configs(text in mutated_config()) {
        exercise_configs(&text);
    }

    #[test]
    fn safetensors_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        exercise_safetensors(&bytes);
    }

    #[test]
    fn safetensors_never_panics_on_fuzzed_headers(bytes in safetensors_file()) {
        exercise_safetensors(&bytes);
    }
}
