//! LLaVA: gradients reach every parameter that LLaVA's features use, the image-token count is checked per
//! sample, folders round-trip in both of transformers' weight layouts, and a CLIP + GPT-2 join from parts.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use mosaic_models::llava::{FeatureLayers, FeatureSelect, LlavaParts, ProjectorKind};
use mosaic_models::testing::{assert_close, assert_gradients_reach};
use mosaic_models::{Llava, LlavaConfig};

const IMAGE: u32 = 60;

fn config(extra: &str) -> LlavaConfig {
    let text = format!(
        r#"{{
        "model_type": "llava", "image_token_index": {IMAGE}, "projector_hidden_act": "gelu",
        "tie_word_embeddings": false {extra},
        "vision_config": {{"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 16, "patch_size": 8}},
        "text_config": {{"model_type": "gpt2", "n_embd": 24, "n_layer": 2, "n_head": 2, "n_positions": 32,
            "vocab_size": 61, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}}
    }}"#
    );
    LlavaConfig::parse(&text, Path::new("config.json")).unwrap()
}

fn pixels(n: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (n, 3, 16, 16), &Device::Cpu).unwrap()
}

/// Two rows, each one image (4 features under "default") placed at different offsets, right-padded.
fn batch(features: usize) -> (Tensor, Tensor) {
    let mut a = vec![5u32, 6];
    a.extend(std::iter::repeat_n(IMAGE, features));
    a.extend([7, 8, 9]);
    let mut b = vec![IMAGE; features];
    b.extend([10u32, 11]);
    let t = a.len();
    let mut mask = vec![1u32; t];
    mask.extend(std::iter::repeat_n(1u32, b.len()));
    mask.extend(std::iter::repeat_n(0u32, t - b.len()));
    b.resize(t, 0);
    let ids = Tensor::from_vec([a, b].concat(), (2, t), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (2, t), &Device::Cpu).unwrap();
    (ids, mask)
}

#[test]
fn config_reads_the_feature_settings_and_refuses_missing_layers() {
    let c =
        config(r#", "vision_feature_layer": [-3, -1], "vision_feature_select_strategy": "full""#);
    assert_eq!(c.feature_layers, FeatureLayers::Many(vec![-3, -1]));
    assert_eq!(c.feature_select, FeatureSelect::Full);
    assert_eq!((c.image_features(), c.projector_input()), (5, 32));
    let bad = r#"{"model_type": "llava", "vision_feature_layer": -4,
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
        "text_config": {"model_type": "gpt2", "n_embd": 24, "n_layer": 1, "n_head": 2}}"#;
    let err = LlavaConfig::parse(bad, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vision_feature_layer") && err.contains("-4"),
        "{err}"
    );
    let llama = bad.replace("\"gpt2\"", "\"llama\"").replace("-4", "-2");
    let err = LlavaConfig::parse(&llama, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("text_config.model_type") && err.contains("llama"),
        "{err}"
    );
}

#[test]
fn the_loss_reaches_every_parameter_the_features_use() {
    // Features of the last layer: every vision layer is used; only `post_layernorm` (CLIP's pooled output)
    // is not, in transformers as here.
    let llava = Llava::new(config(r#", "vision_feature_layer": -1"#), 3, &Device::Cpu).unwrap();
    llava.set_training(true);
    let (ids, mask) = batch(llava.config.image_features());
    let labels = ids.to_dtype(DType::I64).unwrap();
    let (loss, n) = llava
        .loss_sum(&ids, Some(&pixels(2)), &[1, 1], Some(&mask), &labels)
        .unwrap();
    assert!(n > 0);
    let grads = loss.backward().unwrap();
    let params = llava.params.all();
    let used = params
        .iter()
        .filter(|(n, _)| !n.contains("post_layernorm"))
        .map(|(n, v)| (n.as_str(), v));
    assert_gradients_reach(used, &grads);
}

#[test]
fn a_sample_whose_image_tokens_do_not_match_its_features_is_named() {
    let llava = Llava::new(config(""), 3, &Device::Cpu).unwrap();
    let (ids, mask) = batch(llava.config.image_features() - 1);
    let err = llava
        .logits(&ids, Some(&pixels(2)), &[1, 1], Some(&mask))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample 0") && err.contains("3 image tokens"),
        "{err}"
    );
}

fn logits(llava: &Llava) -> Tensor {
    let (ids, mask) = batch(llava.config.image_features());
    let px = Tensor::ones((2, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    llava.logits(&ids, Some(&px), &[1, 1], Some(&mask)).unwrap()
}

#[test]
fn folders_round_trip_in_the_file_layout_and_load_the_in_memory_layout() {
    let dir = tempfile::tempdir().unwrap();
    let llava = Llava::new(config(""), 5, &Device::Cpu).unwrap();
    llava.save(dir.path()).unwrap();
    let saved =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(saved.contains_key("language_model.model.h.0.attn.c_attn.weight"));
    assert!(saved.contains_key("language_model.lm_head.weight"));
    assert!(saved.contains_key("vision_tower.encoder.layers.0.self_attn.q_proj.weight"));
    assert!(saved.contains_key("multi_modal_projector.linear_2.bias"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "LlavaForConditionalGeneration");
    assert_eq!(config["text_config"]["model_type"], "gpt2");
    let back = Llava::from_folder(dir.path(), 0, &Device::Cpu).unwrap();
    assert_close(&logits(&back), &logits(&llava), 0.0);

    // The same weights under the in-memory names (and the older `vision_tower.vision_model.` prefix).
    let renamed: HashMap<String, Tensor> = saved
        .into_iter()
        .map(|(k, v)| {
            let k = if let Some(rest) = k.strip_prefix("language_model.model.") {
                format!("model.language_model.{rest}")
            } else if let Some(rest) = k.strip_prefix("language_model.lm_head.") {
                format!("lm_head.{rest}")
            } else if let Some(rest) = k.strip_prefix("vision_tower.") {
                format!("model.vision_tower.vision_model.{rest}")
            } else {
                format!("model.{k}")
            };
            (k, v)
        })
        .collect();
    candle_core::safetensors::save(&renamed, dir.path().join("model.safetensors")).unwrap();
    let other = Llava::from_folder(dir.path(), 0, &Device::Cpu).unwrap();
    assert_close(&logits(&other), &logits(&llava), 0.0);
}

#[test]
fn a_clip_and_a_gpt2_join_into_a_llava_with_a_grown_vocabulary() {
    let fixtures = common::fixtures();
    let clip = fixtures.join("models/clip-shapes");
    let gpt2 = fixtures.join("models/tiny-gpt2");
    let gpt2_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gpt2.join("config.json")).unwrap()).unwrap();
    let vocab = gpt2_config["vocab_size"].as_u64().unwrap() as u32;
    let parts = LlavaParts {
        vision: &clip,
        language: &gpt2,
        projector: ProjectorKind::Mlp,
        image_token_index: vocab,
        feature_layers: FeatureLayers::One(-2),
        feature_select: FeatureSelect::Default,
    };
    let llava = Llava::from_parts(&parts, 1, &Device::Cpu).unwrap();
    assert_eq!(llava.config.text.vocab_size, vocab as usize + 1);
    assert!(!llava.config.tie_word_embeddings);
    // The GPT-2's weights came along: its token embeddings, the new row their mean.
    let reference = mosaic_models::Gpt2::from_folder(&gpt2, 0, &Device::Cpu).unwrap();
    let ours = llava.language_model.transformer.wte.weight();
    let theirs = reference.transformer.wte.weight();
    assert_close(&ours.narrow(0, 0, vocab as usize).unwrap(), theirs, 0.0);
    assert_close(
        &ours.narrow(0, vocab as usize, 1).unwrap(),
        &theirs.mean_keepdim(0).unwrap(),
        1e-6,
    );
    // A linear projector has one layer.
    let linear = LlavaParts {
        projector: ProjectorKind::Linear,
        ..parts
    };
    let llava = Llava::from_parts(&linear, 1, &Device::Cpu).unwrap();
    assert!(
        llava
            .params
            .get("model.multi_modal_projector.linear_2.weight")
            .is_none()
    );
    assert_eq!(llava.config.to_json()["mosaic_projector_type"], "linear");
}

/// The transformers fixtures: `fixtures/reference/llava.{json,safetensors}` (xtask/scripts/make_llava_fixtures.py).
struct Reference {
    json: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn reference() -> Reference {
    let dir = common::fixtures().join("reference");
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llava.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("llava.safetensors"), &Device::Cpu).unwrap();
    Reference { json, tensors }
}

impl Reference {
    fn tensor(&self, model: &str, case: &str, name: &str) -> Tensor {
        self.tensors[&format!("{model}.{case}.{name}")].clone()
    }
}

#[test]
fn logits_and_image_features_match_transformers_in_both_layouts() {
    let r = reference();
    for model in ["tiny-llava", "tiny-llava-layers"] {
        let llava = Llava::from_folder(
            &common::fixtures().join("models").join(model),
            0,
            &Device::Cpu,
        )
        .unwrap();
        let features = llava
            .image_features(&r.tensor(model, "a", "pixel_values"))
            .unwrap();
        assert_close(&features, &r.tensor(model, "a", "image_features"), 1e-4);
        for case in ["a", "b", "c"] {
            let ids = r
                .tensor(model, case, "input_ids")
                .to_dtype(DType::U32)
                .unwrap();
            let mask = r
                .tensor(model, case, "attention_mask")
                .to_dtype(DType::U32)
                .unwrap();
            let pixels = r.tensor(model, case, "pixel_values");
            let rows = ids.dim(0).unwrap();
            let logits = mosaic_models::no_grad(|| {
                llava
                    .logits(&ids, Some(&pixels), &vec![1; rows], Some(&mask))
                    .unwrap()
            });
            // Padded positions (mask 0) are whatever each side computes there.
            let keep = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
            let ours = logits.broadcast_mul(&keep).unwrap();
            let theirs = r
                .tensor(model, case, "logits")
                .broadcast_mul(&keep)
                .unwrap();
            assert_close(&ours, &theirs, 1e-4);
        }
    }
}

#[test]
fn greedy_generations_match_transformers_token_for_token() {
    let r = reference();
    for model in ["tiny-llava", "tiny-llava-layers"] {
        let llava = Llava::from_folder(
            &common::fixtures().join("models").join(model),
            0,
            &Device::Cpu,
        )
        .unwrap();
        let meta = &r.json["models"][model];
        for case in ["a", "b"] {
            let expected = &meta["cases"][case]["generate"];
            let ids: Vec<u32> = r
                .tensor(model, case, "input_ids")
                .to_dtype(DType::U32)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut config = mosaic_models::GenerationConfig::greedy(
                expected["max_new_tokens"].as_u64().unwrap() as usize,
            );
            config.eos_token_ids = vec![meta["eos_token_id"].as_u64().unwrap() as u32];
            config.pad_token_id = Some(meta["pad_token_id"].as_u64().unwrap() as u32);
            let pixels = r.tensor(model, case, "pixel_values");
            let out = llava
                .generate(&[ids], Some(&pixels), &[1], &config, None)
                .unwrap();
            let want: Vec<u32> = serde_json::from_value(expected["new_token_ids"].clone()).unwrap();
            assert_eq!(out[0].token_ids, want, "{model} case {case}");
        }
    }
}

#[test]
fn a_prompt_that_overflows_the_context_with_its_image_is_refused_naming_both_lengths() {
    let llava = Llava::new(config(""), 3, &Device::Cpu).unwrap();
    let prompt = vec![IMAGE; 30];
    let config = mosaic_models::GenerationConfig::greedy(5);
    let err = llava
        .generate(&[prompt], Some(&pixels(1)), &[1], &config, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("30 tokens") && err.contains("context of 32"),
        "{err}"
    );
}

#[test]
fn a_tied_head_is_the_token_embeddings_and_is_not_saved() {
    let llava = Llava::new(config("").with_tied(), 2, &Device::Cpu).unwrap();
    assert!(llava.params.get("lm_head.weight").is_none());
    let dir = tempfile::tempdir().unwrap();
    llava.save(dir.path()).unwrap();
    let saved =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(!saved.contains_key("language_model.lm_head.weight"));
    let back = Llava::from_folder(dir.path(), 0, &Device::Cpu).unwrap();
    assert!(back.config.tie_word_embeddings);
    assert_close(&logits(&back), &logits(&llava), 0.0);
}

#[test]
fn a_vision_tower_that_does_not_fit_the_projector_is_an_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    Llava::new(config(""), 2, &Device::Cpu)
        .unwrap()
        .save(dir.path())
        .unwrap();
    let path = dir.path().join("model.safetensors");
    let mut weights = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let wrong = Tensor::zeros((24, 20), DType::F32, &Device::Cpu).unwrap();
    weights.insert("multi_modal_projector.linear_1.weight".into(), wrong);
    candle_core::safetensors::save(&weights, &path).unwrap();
    let err = match Llava::from_folder(dir.path(), 0, &Device::Cpu) {
        Ok(_) => panic!("loaded a projector of the wrong width"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("multi_modal_projector.linear_1.weight")
            && err.contains("[24, 20]")
            && err.contains("[24, 16]"),
        "{err}"
    );
}

trait Tied {
    fn with_tied(self) -> Self;
}

impl Tied for LlavaConfig {
    fn with_tied(mut self) -> Self {
        self.tie_word_embeddings = true;
        self
    }
}
