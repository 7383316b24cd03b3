//! Shared test setup: tiny configs and fixture paths.
#![allow(dead_code)]

use std::path::PathBuf;

use mosaic_models::BertConfig;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn tiny_config(labels: &[&str]) -> BertConfig {
    let mut json = serde_json::json!({
        "model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 24, "max_position_embeddings": 32,
        "type_vocab_size": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12, "initializer_range": 0.2,
    });
    if !labels.is_empty() {
        let id2label: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
            .collect();
        json["id2label"] = serde_json::Value::Object(id2label);
    }
    BertConfig::parse(&json.to_string(), "test-config.json".as_ref()).unwrap()
}
