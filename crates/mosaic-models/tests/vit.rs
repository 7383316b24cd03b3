//! Our ViT against Hugging Face transformers on the same tiny random weights (fixtures from
//! `xtask/scripts/make_vision_fixtures.py`): hidden states and classification logits within 1e-4 in f32; saving
//! and reloading; every parameter gets a gradient.

use candle_core::{Device, Tensor};
use mosaic_models::loss::cross_entropy;
use mosaic_models::{Vit, VitConfig, VitTask};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

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

fn reference() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference/vit.safetensors"), &Device::Cpu)
        .unwrap()
}

fn check(vit: &Vit, reference: &std::collections::HashMap<String, Tensor>) -> Vec<(String, f32)> {
    let out = vit.forward(&reference["pixel_values"]).unwrap();
    let mut errors = vec![(
        "last_hidden_state".to_string(),
        max_abs_diff(&out.last_hidden_state, &reference["last_hidden_state"]),
    )];
    for (i, h) in out.hidden_states.iter().enumerate() {
        errors.push((
            format!("hidden_states_{i}"),
            max_abs_diff(h, &reference[&format!("hidden_states_{i}")]),
        ));
    }
    let logits = vit.logits(&out.last_hidden_state).unwrap();
    errors.push(("logits".into(), max_abs_diff(&logits, &reference["logits"])));
    for (name, err) in &errors {
        println!("tiny-vit {name}: max abs error {err:.3e}");
        assert!(
            *err <= TOLERANCE,
            "{name}: max abs error {err} > {TOLERANCE}"
        );
    }
    errors
}

#[test]
fn image_classification_matches_transformers() {
    let vit = Vit::from_folder(
        &fixtures().join("models/tiny-vit"),
        None,
        None,
        0,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(vit.task, VitTask::ImageClassification);
    assert_eq!(vit.config.labels, ["cat", "dog", "car"]);
    let errors = check(&vit, &reference());
    assert_eq!(errors.len(), 5);
}

#[test]
fn saved_model_reloads_identically_under_hf_names() {
    let vit = Vit::from_folder(
        &fixtures().join("models/tiny-vit"),
        None,
        None,
        0,
        &Device::Cpu,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    vit.save(dir.path()).unwrap();
    let names =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(names.contains_key("vit.embeddings.patch_embeddings.projection.weight"));
    assert!(names.contains_key("vit.encoder.layer.1.attention.attention.query.weight"));
    assert!(names.contains_key("classifier.weight"));
    let again = Vit::from_folder(dir.path(), None, None, 0, &Device::Cpu).unwrap();
    check(&again, &reference());
    // The bare encoder loads from the classification checkpoint (the `vit.` prefix is optional).
    let base = Vit::from_folder(dir.path(), Some(VitTask::Base), None, 0, &Device::Cpu).unwrap();
    let out = base.forward(&reference()["pixel_values"]).unwrap();
    assert!(max_abs_diff(&out.last_hidden_state, &reference()["last_hidden_state"]) <= TOLERANCE);
}

#[test]
fn new_labels_replace_the_classifier() {
    let labels = vec!["a".to_string(), "b".to_string()];
    let vit = Vit::from_folder(
        &fixtures().join("models/tiny-vit"),
        None,
        Some(labels),
        3,
        &Device::Cpu,
    )
    .unwrap();
    let out = vit.forward(&reference()["pixel_values"]).unwrap();
    assert_eq!(vit.logits(&out.last_hidden_state).unwrap().dims(), [3, 2]);
}

#[test]
fn wrong_inputs_and_configs_are_clear_errors() {
    let vit = Vit::from_folder(
        &fixtures().join("models/tiny-vit"),
        None,
        None,
        0,
        &Device::Cpu,
    )
    .unwrap();
    let wrong = Tensor::zeros((1, 3, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = vit.forward(&wrong).err().unwrap().to_string();
    assert!(e.contains("16x16") && e.contains("32x32"), "{e}");
    let e = VitConfig::parse(r#"{"model_type": "bert"}"#, "c.json".as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.json") && e.contains("bert"), "{e}");
    let e = VitConfig::parse(
        r#"{"model_type": "vit", "image_size": 30, "patch_size": 8}"#,
        "c.json".as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("image_size"), "{e}");
}

fn tiny_config() -> VitConfig {
    let json = serde_json::json!({
        "model_type": "vit", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 24, "image_size": 8, "patch_size": 4, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "initializer_range": 0.2,
        "id2label": {"0": "x", "1": "y", "2": "z"},
    });
    VitConfig::parse(&json.to_string(), "test-config.json".as_ref()).unwrap()
}

#[test]
fn classification_loss_reaches_every_parameter() {
    let vit = Vit::new(tiny_config(), VitTask::ImageClassification, 1, &Device::Cpu).unwrap();
    vit.set_training(true);
    let pixels = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &Device::Cpu).unwrap();
    let out = vit.forward(&pixels).unwrap();
    let logits = vit.logits(&out.last_hidden_state).unwrap();
    let loss = cross_entropy(&logits, &Tensor::new(&[2i64, 0], &Device::Cpu).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let params = vit.params.all();
    assert_eq!(params.len(), 4 + 2 * 16 + 2 + 2);
    for (name, var) in params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached `{name}`"));
        let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "non-finite gradient in `{name}`"
        );
        assert!(v.iter().any(|x| *x != 0.0), "all-zero gradient in `{name}`");
    }
}

#[test]
fn dropout_is_active_only_in_training_and_seeded() {
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, 8, 8), &Device::Cpu).unwrap();
    let run = |training: bool, seed: u64| {
        let vit = Vit::new(tiny_config(), VitTask::Base, 4, &Device::Cpu).unwrap();
        vit.mode.set_seed(seed);
        vit.set_training(training);
        let h = vit.forward(&pixels).unwrap().last_hidden_state;
        h.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(run(false, 1), run(false, 2));
    assert_eq!(run(true, 7), run(true, 7));
    assert_ne!(run(true, 7), run(true, 8));
}
