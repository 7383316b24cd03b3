//! Our CLIP against Hugging Face transformers on the same tiny random weights (fixtures from
//! `xtask/scripts/make_vision_fixtures.py`): both towers, image and text embeddings and `logits_per_image` within
//! 1e-4 in f32; zero-shot prompt ensembles; saving and reloading; every parameter gets a gradient.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use mosaic_models::clip::zero_shot::{class_prompts, ensemble_class_embeddings, zero_shot_probs};
use mosaic_models::clip::{CoopPrompt, clip_loss, probabilities};
use mosaic_models::{Clip, ClipConfig};

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

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("reference/clip.safetensors"), &Device::Cpu)
        .unwrap()
}

fn tiny_clip() -> Clip {
    Clip::from_folder(&fixtures().join("models/tiny-clip"), 0, &Device::Cpu).unwrap()
}

fn check(clip: &Clip) {
    let r = reference();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["attention_mask"].to_dtype(DType::U32).unwrap();
    let text = clip.text_outputs(&ids, Some(&mask)).unwrap();
    let vision = clip.vision_outputs(&r["pixel_values"]).unwrap();
    let out = clip.forward(&ids, Some(&mask), &r["pixel_values"]).unwrap();
    let errors = [
        (
            "text_last_hidden_state",
            max_abs_diff(&text.last_hidden_state, &r["text_last_hidden_state"]),
        ),
        (
            "text_pooler_output",
            max_abs_diff(&text.pooled, &r["text_pooler_output"]),
        ),
        (
            "vision_last_hidden_state",
            max_abs_diff(&vision.last_hidden_state, &r["vision_last_hidden_state"]),
        ),
        (
            "vision_pooler_output",
            max_abs_diff(&vision.pooled, &r["vision_pooler_output"]),
        ),
        (
            "text_features",
            max_abs_diff(
                &clip.text_features(&ids, Some(&mask)).unwrap(),
                &r["text_features"],
            ),
        ),
        (
            "image_features",
            max_abs_diff(
                &clip.image_features(&r["pixel_values"]).unwrap(),
                &r["image_features"],
            ),
        ),
        (
            "text_embeds",
            max_abs_diff(&out.text_embeds, &r["text_embeds"]),
        ),
        (
            "image_embeds",
            max_abs_diff(&out.image_embeds, &r["image_embeds"]),
        ),
        (
            "logits_per_image",
            max_abs_diff(&out.logits_per_image, &r["logits_per_image"]),
        ),
        (
            "logits_per_text",
            max_abs_diff(&out.logits_per_text, &r["logits_per_text"]),
        ),
    ];
    for (name, err) in errors {
        println!("tiny-clip {name}: max abs error {err:.3e}");
        assert!(
            err <= TOLERANCE,
            "{name}: max abs error {err} > {TOLERANCE}"
        );
    }
}

#[test]
fn clip_matches_transformers() {
    let clip = tiny_clip();
    assert_eq!(clip.config.text.eos_token_id, 541);
    assert_eq!(clip.vision_model.num_layers(), 2);
    check(&clip);
}

#[test]
fn saved_model_reloads_identically_under_hf_names() {
    let clip = tiny_clip();
    let dir = tempfile::tempdir().unwrap();
    clip.save(dir.path()).unwrap();
    let names =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    for name in [
        "logit_scale",
        "text_projection.weight",
        "visual_projection.weight",
        "vision_model.pre_layrnorm.weight",
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.patch_embedding.weight",
        "text_model.encoder.layers.1.self_attn.q_proj.bias",
        "text_model.final_layer_norm.bias",
    ] {
        assert!(names.contains_key(name), "{name} not saved");
    }
    let original = candle_core::safetensors::load(
        fixtures().join("models/tiny-clip/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        names.len(),
        original.len(),
        "same tensors as transformers saves"
    );
    check(&Clip::from_folder(dir.path(), 0, &Device::Cpu).unwrap());
}

#[test]
fn zero_shot_prompt_ensemble_matches_transformers() {
    let clip = tiny_clip();
    let zs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/clip_zero_shot.json")).unwrap(),
    )
    .unwrap();
    let labels: Vec<String> = serde_json::from_value(zs["labels"].clone()).unwrap();
    let templates: Vec<String> =
        serde_json::from_value(zs["ensemble"]["templates"].clone()).unwrap();
    let prompts = class_prompts(&labels, &templates).unwrap();
    assert_eq!(prompts[1], ["a photo of a dog.", "a drawing of a dog."]);
    // The prompts' token ids (from the fixture's tokenizer), label-major, right-padded with end-of-text.
    let ids: Vec<Vec<Vec<u32>>> =
        serde_json::from_value(zs["ensemble"]["prompt_ids"].clone()).unwrap();
    let rows: Vec<&Vec<u32>> = ids.iter().flatten().collect();
    let t = rows.iter().map(|r| r.len()).max().unwrap();
    let eos = clip.config.text.eos_token_id;
    let mut flat = Vec::new();
    let mut mask = Vec::new();
    for r in &rows {
        flat.extend(r.iter().copied().chain(std::iter::repeat(eos)).take(t));
        mask.extend((0..t).map(|i| u32::from(i < r.len())));
    }
    let ids = Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (rows.len(), t), &Device::Cpu).unwrap();
    let text = clip.text_features(&ids, Some(&mask)).unwrap();
    let classes = ensemble_class_embeddings(&text, templates.len()).unwrap();
    let pixels = reference()["pixel_values"].narrow(0, 0, 1).unwrap();
    let image = clip.image_features(&pixels).unwrap();
    let probs: Vec<f32> = zero_shot_probs(&clip, &image, &classes)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let expected: Vec<f32> = serde_json::from_value(zs["ensemble"]["probs"].clone()).unwrap();
    let err = probs
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("tiny-clip zero-shot ensemble probs: max abs error {err:.3e}");
    assert!(err <= TOLERANCE, "{probs:?} vs {expected:?}");
}

#[test]
fn ensemble_of_one_template_is_the_normalised_embedding() {
    let feats = Tensor::new(
        &[[3f32, 4.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]],
        &Device::Cpu,
    )
    .unwrap();
    let one = ensemble_class_embeddings(&feats, 1).unwrap();
    assert_eq!(one.to_vec2::<f32>().unwrap()[0], [0.6, 0.8]);
    let two = ensemble_class_embeddings(&feats, 2)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    // mean of (0.6, 0.8) and (0, 1) = (0.3, 0.9), renormalised.
    let n = (0.3f32 * 0.3 + 0.9 * 0.9).sqrt();
    assert!((two[0][0] - 0.3 / n).abs() < 1e-6 && (two[0][1] - 0.9 / n).abs() < 1e-6);
    let s = 0.5f32.sqrt();
    assert!((two[1][0] - s).abs() < 1e-6 && (two[1][1] - s).abs() < 1e-6);
    assert!(ensemble_class_embeddings(&feats, 3).is_err());
    assert!(class_prompts(&["cat".into()], &["no slot".into()]).is_err());
    let clip = tiny_clip();
    let img = Tensor::new(&[[1f32; 16]], &Device::Cpu).unwrap();
    let classes = Tensor::randn(0f32, 1.0, (3, 16), &Device::Cpu).unwrap();
    let probs =
        zero_shot_probs(&clip, &img, &mosaic_models::l2_normalize(&classes).unwrap()).unwrap();
    let sum: f32 = probs.sum_all().unwrap().to_scalar().unwrap();
    assert!((sum - 1.0).abs() < 1e-5);
}

#[test]
fn legacy_eos_token_id_two_pools_at_the_largest_id() {
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("models/tiny-clip/config.json")).unwrap(),
    )
    .unwrap();
    json["text_config"]["eos_token_id"] = 2.into();
    let config = ClipConfig::parse(&json.to_string(), "c.json".as_ref()).unwrap();
    let clip = Clip::new(config, 0, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[540u32, 7, 541, 541], [540, 541, 3, 3]], &Device::Cpu).unwrap();
    assert_eq!(clip.text_model.eos_positions(&ids).unwrap(), [2, 1]);
    // The current rule: the first end-of-text token.
    let clip = tiny_clip();
    let ids = Tensor::new(&[[540u32, 7, 541, 541], [540, 3, 3, 541]], &Device::Cpu).unwrap();
    assert_eq!(clip.text_model.eos_positions(&ids).unwrap(), [2, 3]);
}

#[test]
fn configs_and_inputs_are_checked() {
    let e = ClipConfig::parse(r#"{"model_type": "bert"}"#, "m/config.json".as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("m/config.json") && e.contains("bert"), "{e}");
    let e = ClipConfig::parse(
        r#"{"model_type": "clip", "text_config": {"hidden_act": "swish2"}}"#,
        "m/config.json".as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("text_config.hidden_act"), "{e}");
    let clip = tiny_clip();
    let wrong = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let e = clip.vision_outputs(&wrong).err().unwrap().to_string();
    assert!(e.contains("16x16"), "{e}");
    let long = Tensor::zeros((1, 40), DType::U32, &Device::Cpu).unwrap();
    let e = clip.text_outputs(&long, None).err().unwrap().to_string();
    assert!(e.contains("40 tokens"), "{e}");
}

fn tiny_config() -> ClipConfig {
    let json = serde_json::json!({
        "model_type": "clip", "projection_dim": 8, "logit_scale_init_value": 2.6592,
        "text_config": {"vocab_size": 40, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 8, "attention_dropout": 0.1,
            "eos_token_id": 39, "initializer_range": 0.2},
        "vision_config": {"hidden_size": 12, "intermediate_size": 20, "num_hidden_layers": 2,
            "num_attention_heads": 3, "image_size": 8, "patch_size": 4, "attention_dropout": 0.1,
            "initializer_range": 0.2},
    });
    ClipConfig::parse(&json.to_string(), "test-config.json".as_ref()).unwrap()
}

#[test]
fn contrastive_loss_reaches_every_parameter() {
    let d = Device::Cpu;
    let clip = Clip::new(tiny_config(), 1, &d).unwrap();
    let scale: f32 = clip.logit_scale.to_scalar().unwrap();
    assert!((scale - 2.6592).abs() < 1e-6, "fresh logit_scale {scale}");
    clip.set_training(true);
    let ids = Tensor::new(
        &[[0u32, 5, 9, 39, 39], [0, 7, 39, 39, 39], [0, 3, 4, 6, 39]],
        &d,
    )
    .unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], &d).unwrap();
    let pixels = Tensor::randn(0f32, 1.0, (3, 3, 8, 8), &d).unwrap();
    let out = clip.forward(&ids, Some(&mask), &pixels).unwrap();
    let loss = clip_loss(&out.logits_per_text).unwrap();
    let grads = loss.backward().unwrap();
    let params = clip.params.all();
    // 2 towers x (2 layers x 16) + text 2 embeddings + final LN 2; vision 3 embeddings + 2 x 2 LNs; 2 projections; scale.
    assert_eq!(params.len(), 64 + 4 + 7 + 3);
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
    let p = probabilities(&out.logits_per_image).unwrap();
    assert_eq!(p.dims(), [3, 3]);
}

#[test]
fn attention_dropout_is_active_only_in_training_and_seeded() {
    let d = Device::Cpu;
    let ids = Tensor::new(&[[0u32, 5, 9, 39]], &d).unwrap();
    let run = |training: bool, seed: u64| {
        let clip = Clip::new(tiny_config(), 4, &d).unwrap();
        clip.mode.set_seed(seed);
        clip.set_training(training);
        clip.text_features(&ids, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(run(false, 1), run(false, 2));
    assert_eq!(run(true, 7), run(true, 7));
    assert_ne!(run(true, 7), run(true, 8));
}

#[test]
fn coop_context_reproduces_the_hand_written_prompt_and_learns() {
    let clip = tiny_clip();
    let zs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/clip_zero_shot.json")).unwrap(),
    )
    .unwrap();
    // "a photo of a cat." = [SOS] a photo of a | cat . [EOS]: the context initialised from "a photo of a" and
    // the class part "[SOS] cat . [EOS]" give the same features as the whole prompt.
    let ids: Vec<Vec<Vec<u32>>> =
        serde_json::from_value(zs["ensemble"]["prompt_ids"].clone()).unwrap();
    let full: Vec<Vec<u32>> = ids.iter().map(|per_label| per_label[0].clone()).collect();
    let phrase = &full[0][1..5]; // "a photo of a"
    let classes: Vec<Vec<u32>> = full
        .iter()
        .map(|row| [&row[..1], &row[5..]].concat())
        .collect();
    let prompt = CoopPrompt::from_token_ids(&clip, phrase).unwrap();
    assert_eq!(prompt.len(), 4);
    let ours = prompt.text_features(&clip, &classes).unwrap();
    let t = full.iter().map(Vec::len).max().unwrap();
    let eos = clip.config.text.eos_token_id;
    let flat: Vec<u32> = full
        .iter()
        .flat_map(|r| r.iter().copied().chain(std::iter::repeat(eos)).take(t))
        .collect();
    let mask: Vec<u32> = full
        .iter()
        .flat_map(|r| (0..t).map(move |i| u32::from(i < r.len())))
        .collect();
    let d = Device::Cpu;
    let direct = clip
        .text_features(
            &Tensor::from_vec(flat, (3, t), &d).unwrap(),
            Some(&Tensor::from_vec(mask, (3, t), &d).unwrap()),
        )
        .unwrap();
    assert!(max_abs_diff(&ours, &direct) < 1e-5);

    // Only the context is trained: it gets a gradient from a zero-shot classification loss.
    let random = CoopPrompt::random(3, &clip, 5, &d).unwrap();
    let classes_feats = random.text_features(&clip, &classes).unwrap();
    let image = clip.image_features(&reference()["pixel_values"]).unwrap();
    let logits = mosaic_models::clip::zero_shot::zero_shot_logits(
        &clip,
        &image,
        &mosaic_models::l2_normalize(&classes_feats).unwrap(),
    )
    .unwrap();
    let loss =
        mosaic_models::loss::cross_entropy(&logits, &Tensor::new(&[0i64, 1, 2], &d).unwrap())
            .unwrap();
    let grads = loss.backward().unwrap();
    let g: Vec<f32> = grads
        .get(random.context.as_tensor())
        .expect("the context gets a gradient")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| *x != 0.0));

    // Saved and loaded back exactly.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coop.safetensors");
    random.save(&path).unwrap();
    let back = CoopPrompt::load(&path, &d).unwrap();
    assert_eq!(
        max_abs_diff(back.context.as_tensor(), random.context.as_tensor()),
        0.0
    );
}

#[test]
fn logit_scale_is_clamped_at_ln_100() {
    let clip = Clip::new(tiny_config(), 1, &Device::Cpu).unwrap();
    let var = clip.params.get("logit_scale").unwrap();
    var.set(&Tensor::new(7f32, &Device::Cpu).unwrap()).unwrap();
    clip.clamp_logit_scale().unwrap();
    let v: f32 = clip.logit_scale.to_scalar().unwrap();
    assert!((v - 100f32.ln()).abs() < 1e-6, "{v}");
}
