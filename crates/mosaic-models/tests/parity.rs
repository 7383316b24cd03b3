//! Our BERT against Hugging Face transformers on the same tiny random weights (fixtures from `cargo xtask fixtures`):
//! hidden states, pooler, masked-LM and classification logits within 1e-4 in f32.

mod common;

use candle_core::{DType, Device, Tensor};
use mosaic_models::{Bert, BertTask};

const TOLERANCE: f32 = 1e-4;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Runs the model on the reference inputs and checks every output the reference file has.
fn check(name: &str, task: BertTask) -> Vec<(String, f32)> {
    let dir = common::fixtures().join("models").join(name);
    let reference = candle_core::safetensors::load(
        common::fixtures()
            .join("reference")
            .join(format!("{name}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let bert = Bert::from_folder(&dir, None, None, 0, &Device::Cpu).unwrap();
    assert_eq!(bert.task, task);
    let ids = reference["input_ids"].to_dtype(DType::U32).unwrap();
    let types = reference["token_type_ids"].to_dtype(DType::U32).unwrap();
    let mask = reference["attention_mask"].to_dtype(DType::U32).unwrap();
    let hidden = bert.hidden_states(&ids, Some(&types), Some(&mask)).unwrap();
    let mut errors = vec![(
        "last_hidden_state".to_string(),
        max_abs_diff(&hidden, &reference["last_hidden_state"]),
    )];
    if let Some(expected) = reference.get("pooler_output") {
        let pooled = bert
            .encoder
            .pool(&hidden)
            .unwrap()
            .expect("model has a pooler");
        errors.push(("pooler_output".into(), max_abs_diff(&pooled, expected)));
    }
    if let Some(expected) = reference.get("logits") {
        let logits = match task {
            BertTask::MaskedLm => bert.mlm_logits(&hidden).unwrap(),
            _ => bert.classifier_logits(&hidden).unwrap(),
        };
        errors.push(("logits".into(), max_abs_diff(&logits, expected)));
    }
    for (output, err) in &errors {
        println!("{name} {output}: max abs error {err:.3e}");
        assert!(
            *err <= TOLERANCE,
            "{name} {output}: max abs error {err} > {TOLERANCE}"
        );
    }
    errors
}

#[test]
fn bare_encoder_without_prefix_matches_transformers() {
    check("tiny-bert", BertTask::Base);
}

#[test]
fn masked_lm_matches_transformers() {
    let errors = check("tiny-bert-mlm", BertTask::MaskedLm);
    assert!(errors.iter().any(|(o, _)| o == "logits"));
}

#[test]
fn sequence_classifier_matches_transformers() {
    let errors = check("tiny-bert-cls", BertTask::SequenceClassification);
    assert!(errors.iter().any(|(o, _)| o == "logits"));
}

#[test]
fn token_classifier_matches_transformers() {
    let errors = check("tiny-bert-tok", BertTask::TokenClassification);
    assert!(errors.iter().any(|(o, _)| o == "logits"));
}

#[test]
fn labels_come_from_id2label() {
    let dir = common::fixtures().join("models/tiny-bert-cls");
    let bert = Bert::from_folder(&dir, None, None, 0, &Device::Cpu).unwrap();
    assert_eq!(bert.config.labels, ["negative", "neutral", "positive"]);
}

#[test]
fn a_saved_model_reloads_to_the_same_outputs() {
    let dir = common::fixtures().join("models/tiny-bert-mlm");
    let bert = Bert::from_folder(&dir, None, None, 0, &Device::Cpu).unwrap();
    let out = tempfile::tempdir().unwrap();
    bert.save(out.path()).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(
        &std::fs::read(out.path().join("model.safetensors")).unwrap(),
    )
    .unwrap()
    .names()
    .into_iter()
    .map(String::from)
    .collect();
    let original =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut expected: Vec<&String> = original.keys().collect();
    expected.sort();
    let mut got: Vec<&String> = names.iter().collect();
    got.sort();
    assert_eq!(got, expected, "saved names must be HF's");
}
