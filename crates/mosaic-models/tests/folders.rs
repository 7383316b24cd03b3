//! Loading and saving HF folders, and every bad-input case of the loader.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_models::{Bert, BertTask, ModelError};

fn save_tiny(dir: &Path, task: BertTask, labels: &[&str]) -> Bert {
    let bert = Bert::new(common::tiny_config(labels), task, 5, &Device::Cpu).unwrap();
    bert.save(dir).unwrap();
    bert
}

fn hidden(bert: &Bert) -> Vec<f32> {
    let ids = Tensor::new(&[[2u32, 7, 9, 3]], &Device::Cpu).unwrap();
    bert.hidden_states(&ids, None, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn save_then_load_round_trips_every_head() {
    for (task, labels) in [
        (BertTask::Base, vec![]),
        (BertTask::MaskedLm, vec![]),
        (BertTask::SequenceClassification, vec!["a", "b"]),
        (BertTask::TokenClassification, vec!["O", "B-X"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let saved = save_tiny(dir.path(), task, &labels);
        let loaded = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu).unwrap();
        assert_eq!(loaded.task, task);
        assert_eq!(hidden(&saved), hidden(&loaded));
        assert_eq!(saved.params.num_elements(), loaded.params.num_elements());
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], task.architecture());
    }
}

#[test]
fn prefixed_checkpoint_loads_as_bare_encoder_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let mlm = save_tiny(dir.path(), BertTask::MaskedLm, &[]);
    let base = Bert::from_folder(dir.path(), Some(BertTask::Base), None, 0, &Device::Cpu).unwrap();
    assert_eq!(hidden(&mlm), hidden(&base));
    assert!(
        base.params
            .all()
            .iter()
            .all(|(n, _)| !n.starts_with("bert."))
    );
    let bare = tempfile::tempdir().unwrap();
    base.save(bare.path()).unwrap();
    let cls = Bert::from_folder(
        bare.path(),
        Some(BertTask::SequenceClassification),
        Some(vec!["x".into(), "y".into()]),
        0,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(hidden(&base), hidden(&cls));
}

#[test]
fn missing_tensor_is_named_with_its_expected_shape() {
    let dir = tempfile::tempdir().unwrap();
    let bert = save_tiny(dir.path(), BertTask::Base, &[]);
    let mut tensors: std::collections::HashMap<String, Tensor> = bert
        .params
        .all()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    tensors.remove("encoder.layer.1.attention.self.key.weight");
    mosaic_models::folder::save_safetensors(&tensors, &dir.path().join("model.safetensors"))
        .unwrap();
    let err = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("encoder.layer.1.attention.self.key.weight"),
        "{msg}"
    );
    assert!(msg.contains("[16, 16]"), "{msg}");
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let bert = save_tiny(dir.path(), BertTask::Base, &[]);
    let mut tensors: std::collections::HashMap<String, Tensor> = bert
        .params
        .all()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    tensors.insert(
        "embeddings.LayerNorm.weight".into(),
        Tensor::zeros(15, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    mosaic_models::folder::save_safetensors(&tensors, &dir.path().join("model.safetensors"))
        .unwrap();
    let msg = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("embeddings.LayerNorm.weight") && msg.contains("[15]") && msg.contains("[16]"),
        "{msg}"
    );
}

#[test]
fn bad_configs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    save_tiny(dir.path(), BertTask::Base, &[]);
    let config = dir.path().join("config.json");
    let original = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, "{ not json").unwrap();
    let msg = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("not valid JSON"),
        "{msg}"
    );

    std::fs::write(&config, original.replace("\"bert\"", "\"llama\"")).unwrap();
    let msg = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("unknown model type `llama`"), "{msg}");

    std::fs::write(
        &config,
        original.replace("\"hidden_size\"", "\"hidden_sise\""),
    )
    .unwrap();
    let msg = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("hidden_size"), "{msg}");

    std::fs::remove_file(&config).unwrap();
    let msg = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn corrupt_safetensors_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    save_tiny(dir.path(), BertTask::Base, &[]);
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let msg = Bert::from_folder(dir.path(), None, None, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn fill_mask_needs_an_mlm_head() {
    let dir = tempfile::tempdir().unwrap();
    save_tiny(dir.path(), BertTask::Base, &[]);
    let msg = Bert::from_folder(dir.path(), Some(BertTask::MaskedLm), None, 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("no masked-LM head"), "{msg}");
}

#[test]
fn sources_parse_and_fail_clearly() {
    use mosaic_models::ModelSource;
    assert_eq!(
        ModelSource::parse("hf:org/name"),
        ModelSource::Hub("org/name".into())
    );
    assert_eq!(
        ModelSource::parse("pip:pkg"),
        ModelSource::Pip("pkg".into())
    );
    let msg = ModelSource::parse("/no/such/folder")
        .resolve()
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("/no/such/folder") && msg.contains("no such folder"),
        "{msg}"
    );
    let msg = ModelSource::parse("pip:bad name!")
        .resolve()
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("not a valid Python package name"), "{msg}");
}
