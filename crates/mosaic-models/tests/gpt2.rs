//! GPT-2 against Hugging Face transformers on the same tiny random weights (fixtures from `cargo xtask fixtures`):
//! logits within 1e-4, greedy generation token for token, the logits processors; plus loading with and without the
//! `transformer.` prefix, saving, gradients, the KV cache and the bad-input errors.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use mosaic_models::generation::{
    Decoding, FinishReason, GenerationConfig, KvCache, TokenPicker, generate,
};
use mosaic_models::gpt2::causal_lm_loss_sum;
use mosaic_models::{CausalLm, Gpt2, Gpt2Config, ModelError};

const TOLERANCE: f32 = 1e-4;

fn model_dir() -> PathBuf {
    common::fixtures().join("models").join("tiny-gpt2")
}

fn load() -> Gpt2 {
    Gpt2::from_folder(&model_dir(), 0, &Device::Cpu).unwrap()
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        common::fixtures()
            .join("reference")
            .join("tiny-gpt2.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn json(name: &str) -> serde_json::Value {
    let path = common::fixtures().join("reference").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u32s(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn id_rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(ids).collect()
}

/// Max |a - b| over the positions where `mask` (B, T) is 1 (all positions when `None`).
fn max_abs_diff(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let diff = a.sub(b).unwrap().abs().unwrap();
    let diff = match mask {
        Some(m) => diff
            .broadcast_mul(&m.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap())
            .unwrap(),
        None => diff,
    };
    diff.flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn tiny_config(extra: serde_json::Value) -> Gpt2Config {
    let mut json = serde_json::json!({
        "model_type": "gpt2", "vocab_size": 40, "n_embd": 16, "n_layer": 2, "n_head": 4, "n_positions": 16,
        "initializer_range": 0.2, "eos_token_id": 1, "bos_token_id": 1,
    });
    if let (Some(obj), Some(more)) = (json.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    Gpt2Config::parse(&json.to_string(), "test-config.json".as_ref()).unwrap()
}

// ----------------------------------------------------------------------------------------------------------------
// Parity with transformers
// ----------------------------------------------------------------------------------------------------------------

#[test]
fn right_padded_logits_match_transformers() {
    let gpt2 = load();
    let r = reference();
    let mask = u32s(&r["attention_mask"]);
    let hidden = gpt2
        .hidden_states(&u32s(&r["input_ids"]), None, Some(&mask))
        .unwrap();
    let last = format!("hidden_states_{}", gpt2.config.n_layer);
    let hidden_err = max_abs_diff(&hidden, &r[&last], None);
    let logits_err = max_abs_diff(&gpt2.lm_logits(&hidden).unwrap(), &r["logits"], None);
    println!(
        "tiny-gpt2 right padded: hidden max abs error {hidden_err:.3e}, logits {logits_err:.3e}"
    );
    assert!(hidden_err <= TOLERANCE, "hidden states: {hidden_err}");
    assert!(logits_err <= TOLERANCE, "logits: {logits_err}");
}

#[test]
fn left_padded_logits_with_generation_positions_match_transformers() {
    let gpt2 = load();
    let r = reference();
    let mask = u32s(&r["left_attention_mask"]);
    let positions = mosaic_models::generation::positions_from_mask(&mask).unwrap();
    assert_eq!(
        positions.to_vec2::<u32>().unwrap(),
        u32s(&r["left_position_ids"]).to_vec2::<u32>().unwrap()
    );
    let hidden = gpt2
        .hidden_states(&u32s(&r["left_input_ids"]), Some(&positions), Some(&mask))
        .unwrap();
    let logits = gpt2.lm_logits(&hidden).unwrap();
    // Padding rows are never read; compare the real tokens.
    let err = max_abs_diff(&logits, &r["left_logits"], Some(&mask));
    println!("tiny-gpt2 left padded: logits max abs error {err:.3e}");
    assert!(err <= TOLERANCE, "left-padded logits: {err}");
}

#[test]
fn greedy_generation_matches_transformers_token_for_token() {
    let gpt2 = load();
    let reference = json("gpt2_generate.json");
    let max_new = reference["max_new_tokens"].as_u64().unwrap() as usize;
    let default_eos = reference["eos_token_id"].as_u64().unwrap() as u32;
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let eos = case["eos_token_id"]
            .as_u64()
            .map_or(default_eos, |e| e as u32);
        let mut config = GenerationConfig::greedy(max_new).with_eos(vec![eos]);
        config.pad_token_id = Some(default_eos);
        if let Some(p) = case["repetition_penalty"].as_f64() {
            config.repetition_penalty = p as f32;
        }
        let prompts = id_rows(&case["prompt_ids"]);
        let out = generate(&gpt2, &prompts, &config, None).unwrap();
        let got: Vec<Vec<u32>> = out.iter().map(|g| g.token_ids.clone()).collect();
        assert_eq!(got, id_rows(&case["expected"]), "case `{name}`");
        for g in &out {
            let ended_on_eos = g.token_ids.last() == Some(&eos);
            assert_eq!(g.finish_reason == FinishReason::Eos, ended_on_eos, "{name}");
        }
        println!("{name}: {} rows identical to transformers", got.len());
    }
}

#[test]
fn a_row_that_ends_early_does_not_disturb_the_others_in_a_batch() {
    let gpt2 = load();
    let reference = json("gpt2_generate.json");
    let cases = reference["cases"].as_array().unwrap();
    let batched = cases
        .iter()
        .find(|c| c["name"] == "batched, left padded")
        .unwrap();
    let early = cases.iter().find(|c| c["name"] == "early eos").unwrap();
    let stop = early["eos_token_id"].as_u64().unwrap() as u32;
    let full = id_rows(&batched["expected"]);
    assert!(full[0].iter().chain(&full[2]).all(|&t| t != stop));
    let config = GenerationConfig::greedy(16).with_eos(vec![stop]);
    let out = generate(&gpt2, &id_rows(&batched["prompt_ids"]), &config, None).unwrap();
    assert_eq!(out[0].token_ids, full[0]);
    assert_eq!(out[1].token_ids, id_rows(&early["expected"])[0]);
    assert_eq!(out[1].finish_reason, FinishReason::Eos);
    assert_eq!(out[2].token_ids, full[2]);
    assert_eq!(out[2].finish_reason, FinishReason::Length);
}

#[test]
fn logits_processors_match_transformers() {
    let reference = json("gpt2_logits_processors.json");
    let scores: Vec<f32> = reference["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let history = ids(&reference["history"]);
    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut config =
            GenerationConfig::sample(1, case["temperature"].as_f64().unwrap_or(1.0) as f32, 0);
        if let Decoding::Sample { top_k, top_p, .. } = &mut config.decoding {
            *top_k = case["top_k"].as_u64().map(|k| k as usize);
            *top_p = case["top_p"].as_f64().map(|p| p as f32);
        }
        config.repetition_penalty = case["repetition_penalty"].as_f64().unwrap_or(1.0) as f32;
        let mut got = scores.clone();
        TokenPicker::new(&config, 0).process(&mut got, &history);
        let expected = case["expected"].as_array().unwrap();
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            match e.as_f64() {
                None => assert_eq!(*g, f32::NEG_INFINITY, "{name}: token {i} must be removed"),
                Some(e) => assert!(
                    (*g as f64 - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "{name}: token {i}: {g} vs {e}"
                ),
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Folders: names with and without `transformer.`, saving, errors
// ----------------------------------------------------------------------------------------------------------------

/// Copies the fixture folder with its tensors renamed (and extras added).
fn rewritten_copy(
    dir: &Path,
    rename: impl Fn(&str) -> Option<String>,
    extra: &[(&str, Tensor)],
) -> HashMap<String, Tensor> {
    std::fs::create_dir_all(dir).unwrap();
    let src = model_dir();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut out: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| rename(&k).map(|k| (k, v)))
        .collect();
    for (k, v) in extra {
        out.insert(k.to_string(), v.clone());
    }
    candle_core::safetensors::save(&out, dir.join("model.safetensors")).unwrap();
    out
}

#[test]
fn checkpoints_without_the_transformer_prefix_load_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    // As the original OpenAI checkpoints: bare names, plus the causal-mask buffers they carry.
    let mask_buffer = Tensor::ones((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap();
    rewritten_copy(
        tmp.path(),
        |k| Some(k.strip_prefix("transformer.").unwrap_or(k).to_string()),
        &[("h.0.attn.bias", mask_buffer)],
    );
    let bare = Gpt2::from_folder(tmp.path(), 0, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[300u32, 221, 81, 85, 334]], &Device::Cpu).unwrap();
    let a = bare.logits(&ids, None).unwrap();
    let b = load().logits(&ids, None).unwrap();
    assert_eq!(max_abs_diff(&a, &b, None), 0.0);
    assert!(
        bare.params
            .get("transformer.h.0.attn.c_attn.weight")
            .is_some()
    );
}

#[test]
fn saving_writes_hf_names_and_round_trips() {
    let gpt2 = load();
    let tmp = tempfile::tempdir().unwrap();
    gpt2.save(tmp.path()).unwrap();
    let saved =
        candle_core::safetensors::load(tmp.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let original =
        candle_core::safetensors::load(model_dir().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut saved_names: Vec<_> = saved.keys().cloned().collect();
    let mut original_names: Vec<_> = original.keys().cloned().collect();
    saved_names.sort();
    original_names.sort();
    assert_eq!(
        saved_names, original_names,
        "same HF names as transformers saves"
    );
    assert!(
        !saved.contains_key("lm_head.weight"),
        "the tied head is not saved"
    );
    assert_eq!(
        saved["transformer.h.0.attn.c_attn.weight"].dims(),
        &[32, 96],
        "Conv1D weights stay (in, out)"
    );
    for (name, t) in &original {
        assert_eq!(
            max_abs_diff(
                &saved[name].unsqueeze(0).unwrap(),
                &t.unsqueeze(0).unwrap(),
                None
            ),
            0.0,
            "{name}"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(config["n_embd"], 32);
    assert_eq!(config["eos_token_id"], 0);
    let reloaded = Gpt2::from_folder(tmp.path(), 0, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[381u32, 272, 272]], &Device::Cpu).unwrap();
    assert_eq!(
        max_abs_diff(
            &reloaded.logits(&ids, None).unwrap(),
            &gpt2.logits(&ids, None).unwrap(),
            None
        ),
        0.0
    );
}

#[test]
fn an_untied_head_is_loaded_and_saved_as_lm_head() {
    let config = tiny_config(serde_json::json!({"tie_word_embeddings": false}));
    let gpt2 = Gpt2::new(config, 3, &Device::Cpu).unwrap();
    assert!(gpt2.params.get("lm_head.weight").is_some());
    let tmp = tempfile::tempdir().unwrap();
    gpt2.save(tmp.path()).unwrap();
    let back = Gpt2::from_folder(tmp.path(), 0, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9]], &Device::Cpu).unwrap();
    assert_eq!(
        max_abs_diff(
            &back.logits(&ids, None).unwrap(),
            &gpt2.logits(&ids, None).unwrap(),
            None
        ),
        0.0
    );
}

#[test]
fn bad_folders_are_clear_errors() {
    // A BERT folder.
    let bert = common::fixtures().join("models").join("tiny-bert");
    let err = Gpt2::from_folder(&bert, 0, &Device::Cpu).err().unwrap();
    assert!(matches!(err, ModelError::UnknownModelType { .. }), "{err}");
    assert!(
        err.to_string().contains("`bert`") && err.to_string().contains("gpt2"),
        "{err}"
    );

    // A Conv1D weight stored the Linear way round: the error names the tensor and both shapes.
    let tmp = tempfile::tempdir().unwrap();
    rewritten_copy(tmp.path(), |k| Some(k.to_string()), &[]);
    let mut tensors =
        candle_core::safetensors::load(tmp.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let name = "transformer.h.1.mlp.c_fc.weight";
    let transposed = tensors[name].t().unwrap().contiguous().unwrap();
    tensors.insert(name.into(), transposed);
    candle_core::safetensors::save(&tensors, tmp.path().join("model.safetensors")).unwrap();
    let err = Gpt2::from_folder(tmp.path(), 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(name) && err.contains("[128, 32]") && err.contains("[32, 128]"),
        "{err}"
    );

    // A missing tensor.
    let tmp = tempfile::tempdir().unwrap();
    rewritten_copy(
        tmp.path(),
        |k| (k != "transformer.ln_f.bias").then(|| k.to_string()),
        &[],
    );
    let err = Gpt2::from_folder(tmp.path(), 0, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("transformer.ln_f.bias") && err.contains("model.safetensors"),
        "{err}"
    );

    // Config values out of range name the key.
    for (json, key) in [
        (
            r#"{"model_type": "gpt2", "n_embd": 30, "n_head": 4}"#,
            "n_embd",
        ),
        (
            r#"{"model_type": "gpt2", "activation_function": "swish2"}"#,
            "activation_function",
        ),
        (
            r#"{"model_type": "gpt2", "eos_token_id": "x"}"#,
            "eos_token_id",
        ),
        (r#"{"model_type": "gpt2", "attn_pdrop": 1.5}"#, "attn_pdrop"),
    ] {
        let err = Gpt2Config::parse(json, "c.json".as_ref())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(key) && err.contains("c.json"), "{err}");
    }
}

#[test]
fn config_reads_hf_variants() {
    let c = Gpt2Config::parse(
        r#"{"model_type": "gpt2", "n_ctx": 128, "eos_token_id": [5, 7], "n_embd": 64, "n_head": 8}"#,
        "c.json".as_ref(),
    )
    .unwrap();
    assert_eq!(c.n_positions, 128);
    assert_eq!(c.eos_token_ids, vec![5, 7]);
    assert_eq!(c.n_inner, 256);
    assert_eq!(c.activation_function, "gelu_new");
    let json = c.to_json();
    assert_eq!(json["eos_token_id"], serde_json::json!([5, 7]));
    assert_eq!(json["n_ctx"], 128);
    assert_eq!(json["resid_pdrop"], 0.1);
}

// ----------------------------------------------------------------------------------------------------------------
// Training grade
// ----------------------------------------------------------------------------------------------------------------

#[test]
fn lm_loss_reaches_every_parameter() {
    for tied in [true, false] {
        let config = tiny_config(serde_json::json!({"tie_word_embeddings": tied}));
        let gpt2 = Gpt2::new(config, 5, &Device::Cpu).unwrap();
        gpt2.set_training(true);
        let d = Device::Cpu;
        let ids = Tensor::new(&[[1u32, 7, 9, 11, 4, 3], [1, 13, 4, 3, 0, 0]], &d).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &d).unwrap();
        let labels = Tensor::new(
            &[[-100i64, 7, 9, 11, 4, 3], [-100, 13, 4, 3, -100, -100]],
            &d,
        )
        .unwrap();
        let logits = gpt2.logits(&ids, Some(&mask)).unwrap();
        let (sum, count) = causal_lm_loss_sum(&logits, &labels).unwrap();
        assert_eq!(count, 8);
        let loss = sum.affine(1.0 / count as f64, 0.0).unwrap();
        let grads = loss.backward().unwrap();
        let params = gpt2.params.all();
        let expected = 2 + 2 * 12 + 2 + usize::from(!tied);
        assert_eq!(params.len(), expected);
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
}

#[test]
fn lm_loss_matches_a_hand_computed_shift() {
    let gpt2 = load();
    let ids = Tensor::new(&[[300u32, 221, 81, 85]], &Device::Cpu).unwrap();
    let labels = ids.to_dtype(DType::I64).unwrap();
    let logits = gpt2.logits(&ids, None).unwrap();
    let (sum, count) = causal_lm_loss_sum(&logits, &labels).unwrap();
    assert_eq!(count, 3);
    let mut expected = 0.0f32;
    for (t, next) in [(0usize, 221usize), (1, 81), (2, 85)] {
        let row: Vec<f32> = logits.i((0, t)).unwrap().to_vec1().unwrap();
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let lse = row.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
        expected += lse - row[next];
    }
    let got: f32 = sum.to_scalar().unwrap();
    assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
}

#[test]
fn dropout_is_active_only_in_training_and_seeded() {
    let ids = Tensor::new(&[[1u32, 7, 9, 11]], &Device::Cpu).unwrap();
    let run = |training: bool, seed: u64| {
        let gpt2 = Gpt2::new(tiny_config(serde_json::json!({})), 4, &Device::Cpu).unwrap();
        gpt2.mode.set_seed(seed);
        gpt2.set_training(training);
        let l = gpt2.logits(&ids, None).unwrap();
        l.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(run(false, 1), run(false, 2), "eval mode is dropout-free");
    assert_eq!(run(true, 7), run(true, 7), "same seed, same dropout");
    assert_ne!(
        run(true, 7),
        run(true, 8),
        "different seeds, different dropout"
    );
    assert_ne!(run(true, 7), run(false, 7), "dropout active in training");
}

// ----------------------------------------------------------------------------------------------------------------
// Generation
// ----------------------------------------------------------------------------------------------------------------

#[test]
fn cached_steps_give_the_full_forward_logits() {
    let gpt2 = load();
    let tokens = [325u32, 26, 262, 397, 358, 79, 285];
    let full = gpt2
        .logits(
            &Tensor::new(&tokens[..], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            None,
        )
        .unwrap();
    let mut cache: KvCache = gpt2.new_cache();
    // Prefill 3 tokens, then one at a time.
    let mut seen = 0;
    for chunk in [&tokens[..3], &tokens[3..4], &tokens[4..5], &tokens[5..]] {
        let n = chunk.len();
        let ids = Tensor::new(chunk, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let pos = Tensor::arange(seen as u32, (seen + n) as u32, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = Tensor::ones((1, seen + n), DType::U32, &Device::Cpu).unwrap();
        let step = gpt2
            .next_token_logits(&ids, &pos, &mask, &mut cache)
            .unwrap();
        seen += n;
        let expected = full.i((.., seen - 1)).unwrap();
        let err = max_abs_diff(
            &step.unsqueeze(1).unwrap(),
            &expected.unsqueeze(1).unwrap(),
            None,
        );
        assert!(err < 1e-5, "after {seen} tokens: {err}");
        assert_eq!(cache.seq_len(), seen);
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_batch_independent() {
    let gpt2 = load();
    let prompt = vec![300u32, 221, 81, 85];
    let other = vec![381u32];
    let run = |seed: u64, prompts: &[Vec<u32>]| {
        let mut config = GenerationConfig::sample(12, 1.5, seed);
        if let Decoding::Sample { top_k, top_p, .. } = &mut config.decoding {
            *top_k = Some(50);
            *top_p = Some(0.95);
        }
        generate(&gpt2, prompts, &config, None).unwrap()
    };
    let a = run(7, std::slice::from_ref(&prompt));
    assert_eq!(
        a,
        run(7, std::slice::from_ref(&prompt)),
        "same seed, same text"
    );
    assert_ne!(
        a,
        run(8, std::slice::from_ref(&prompt)),
        "another seed, another text"
    );
    let batched = run(7, &[prompt.clone(), other]);
    assert_eq!(
        batched[0], a[0],
        "row 0 of a batch samples as the prompt alone"
    );
    assert_eq!(a[0].token_ids.len(), 12);
    assert_eq!(a[0].finish_reason, FinishReason::Length);

    // top_k = 1 leaves only the greedy choice.
    let mut config = GenerationConfig::sample(12, 0.8, 3);
    if let Decoding::Sample { top_k, .. } = &mut config.decoding {
        *top_k = Some(1);
    }
    let top1 = generate(&gpt2, std::slice::from_ref(&prompt), &config, None).unwrap();
    let greedy = generate(&gpt2, &[prompt], &GenerationConfig::greedy(12), None).unwrap();
    assert_eq!(top1[0].token_ids, greedy[0].token_ids);
}

#[test]
fn stop_strings_end_a_row() {
    let gpt2 = load();
    let prompt = vec![325u32, 26, 262, 397];
    let free = generate(
        &gpt2,
        std::slice::from_ref(&prompt),
        &GenerationConfig::greedy(10),
        None,
    )
    .unwrap();
    let third = free[0].token_ids[2];
    // A toy decoder: each id as `<id>`.
    let decode = |ids: &[u32]| ids.iter().map(|i| format!("<{i}>")).collect::<String>();
    let mut config = GenerationConfig::greedy(10);
    config.stop_strings = vec![format!("<{third}>")];
    let out = generate(&gpt2, &[prompt], &config, Some(&decode)).unwrap();
    let first_hit = free[0].token_ids.iter().position(|&t| t == third).unwrap();
    assert_eq!(out[0].token_ids, free[0].token_ids[..=first_hit]);
    assert_eq!(out[0].finish_reason, FinishReason::StopString);
}

#[test]
fn a_prompt_longer_than_the_context_is_cut_from_the_left() {
    let gpt2 = load();
    let long: Vec<u32> = (0..60).map(|i| 20 + (i * 7) % 300).collect();
    let out = generate(
        &gpt2,
        std::slice::from_ref(&long),
        &GenerationConfig::greedy(16),
        None,
    )
    .unwrap();
    assert_eq!(
        out[0].prompt_tokens_dropped, 12,
        "64 positions - 16 new = 48 kept"
    );
    let tail = long[12..].to_vec();
    let expected = generate(&gpt2, &[tail], &GenerationConfig::greedy(16), None).unwrap();
    assert_eq!(out[0].token_ids, expected[0].token_ids);
    assert_eq!(expected[0].prompt_tokens_dropped, 0);
}

#[test]
fn bad_generation_settings_are_clear_errors() {
    let gpt2 = load();
    let prompt = vec![vec![300u32, 221]];
    let check = |config: GenerationConfig, prompts: &[Vec<u32>], needle: &str| {
        let err = generate(&gpt2, prompts, &config, None).err().unwrap();
        assert!(matches!(err, ModelError::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains(needle), "`{needle}` not in: {err}");
    };
    check(GenerationConfig::sample(4, 0.0, 1), &prompt, "temperature");
    check(
        GenerationConfig::sample(4, f32::NAN, 1),
        &prompt,
        "temperature",
    );
    let mut c = GenerationConfig::sample(4, 1.0, 1);
    if let Decoding::Sample { top_p, .. } = &mut c.decoding {
        *top_p = Some(1.5);
    }
    check(c, &prompt, "top_p");
    let mut c = GenerationConfig::sample(4, 1.0, 1);
    if let Decoding::Sample { top_k, .. } = &mut c.decoding {
        *top_k = Some(0);
    }
    check(c, &prompt, "top_k");
    let mut c = GenerationConfig::greedy(4);
    c.repetition_penalty = 0.0;
    check(c, &prompt, "repetition_penalty");
    check(GenerationConfig::greedy(0), &prompt, "max_new_tokens");
    check(GenerationConfig::greedy(64), &prompt, "context of 64");
    check(GenerationConfig::greedy(4), &[vec![5, 400]], "token id 400");
    check(GenerationConfig::greedy(4), &[vec![]], "empty");
    let mut c = GenerationConfig::greedy(4);
    c.stop_strings = vec!["x".into()];
    check(c, &prompt, "decoder");
    // An empty prompt starts from BOS when one is configured.
    let mut c = GenerationConfig::greedy(3);
    c.bos_token_id = Some(0);
    assert_eq!(
        generate(&gpt2, &[vec![]], &c, None).unwrap()[0]
            .token_ids
            .len(),
        3
    );
}

#[test]
fn padded_lm_loss_counts_real_tokens_only() {
    let gpt2 = load();
    let d = Device::Cpu;
    let rows = [vec![300u32, 221, 81, 85, 334], vec![381u32, 272, 272]];
    let mut total = 0.0f32;
    let mut count = 0;
    for row in &rows {
        let ids = Tensor::new(row.as_slice(), &d)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let (sum, n) = gpt2.lm_loss_sum(&ids, None, None).unwrap();
        total += sum.to_scalar::<f32>().unwrap();
        count += n;
    }
    let ids = Tensor::new(&[[300u32, 221, 81, 85, 334], [381, 272, 272, 0, 0]], &d).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &d).unwrap();
    let (sum, n) = gpt2.lm_loss_sum(&ids, Some(&mask), None).unwrap();
    assert_eq!(n, count);
    assert_eq!(n, 6);
    let batched: f32 = sum.to_scalar().unwrap();
    assert!((batched - total).abs() < 1e-4, "{batched} vs {total}");
    let perplexity = (batched / n as f32).exp();
    assert!(perplexity.is_finite() && perplexity > 1.0);
}

// ----------------------------------------------------------------------------------------------------------------
// Packed sequences
// ----------------------------------------------------------------------------------------------------------------

/// Three samples of different lengths packed into one row (positions restarting at 0, one segment each, right
/// padding after them) give every sample exactly the logits it gets when run alone.
#[test]
fn a_packed_row_gives_each_sample_its_own_logits() {
    let gpt2 = load();
    let d = Device::Cpu;
    let samples: [&[u32]; 3] = [
        &[300, 221, 81, 85, 334],
        &[381, 272],
        &[5, 17, 99, 250, 3, 77, 12, 8],
    ];
    let (mut ids, mut positions, mut segments) = (Vec::new(), Vec::new(), Vec::new());
    for (s, sample) in samples.iter().enumerate() {
        ids.extend_from_slice(sample);
        positions.extend(0..sample.len() as u32);
        segments.extend(std::iter::repeat_n(s as u32, sample.len()));
    }
    let real = ids.len();
    // Two padding tokens in a segment of their own, masked out.
    ids.extend([0, 0]);
    positions.extend([0, 0]);
    segments.extend([3, 3]);
    let mut mask = vec![1u32; real];
    mask.extend([0, 0]);
    let row = |v: Vec<u32>| Tensor::from_vec(v.clone(), (1, v.len()), &d).unwrap();
    let (ids, positions, segments, mask) = (row(ids), row(positions), row(segments), row(mask));
    let layout = mosaic_models::gpt2::TokenLayout {
        position_ids: Some(&positions),
        attention_mask: Some(&mask),
        segment_ids: Some(&segments),
    };
    let packed = gpt2.logits_with_layout(&ids, &layout).unwrap();
    let mut start = 0;
    let mut worst = 0f32;
    for sample in samples {
        let alone = gpt2
            .logits(
                &Tensor::new(sample, &d).unwrap().unsqueeze(0).unwrap(),
                None,
            )
            .unwrap();
        let part = packed.narrow(1, start, sample.len()).unwrap();
        worst = worst.max(max_abs_diff(&part, &alone, None));
        start += sample.len();
    }
    println!("tiny-gpt2 packed row vs samples alone: logits max abs error {worst:.3e}");
    assert!(worst <= 1e-5, "packed logits differ by {worst}");
    // Without the segments (positions alone), the later samples see the earlier ones.
    let leaky = mosaic_models::gpt2::TokenLayout {
        segment_ids: None,
        ..layout
    };
    let mixed = gpt2.logits_with_layout(&ids, &leaky).unwrap();
    assert!(max_abs_diff(&mixed, &packed, Some(&mask)) > 1e-3);
}

#[test]
fn segment_ids_with_a_cache_are_a_clear_error() {
    let gpt2 = load();
    let d = Device::Cpu;
    let mut cache = gpt2.new_cache();
    let ids = Tensor::new(&[[300u32, 221]], &d).unwrap();
    gpt2.transformer
        .forward(&ids, None, None, Some(&mut cache))
        .unwrap();
    let next = Tensor::new(&[[81u32]], &d).unwrap();
    let segments = Tensor::new(&[[0u32]], &d).unwrap();
    let layout = mosaic_models::gpt2::TokenLayout {
        segment_ids: Some(&segments),
        ..Default::default()
    };
    let err = gpt2
        .transformer
        .forward_with_layout(&next, &layout, Some(&mut cache))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("segment_ids") && err.contains("cached"),
        "{err}"
    );
}

/// The LM loss is the fused softmax cross-entropy of the kernels crate (bit for bit), which agrees with a composed
/// log-softmax to float precision.
#[test]
fn the_lm_loss_is_the_fused_cross_entropy() {
    let model = load();
    let ids = Tensor::new(&[[5u32, 9, 2, 7, 1, 3], [4, 4, 8, 0, 6, 2]], &Device::Cpu).unwrap();
    let (loss, counted) = model.lm_loss_sum(&ids, None, None).unwrap();
    let logits = model.logits(&ids, None).unwrap();
    let (b, t, v) = logits.dims3().unwrap();
    let shifted = logits
        .narrow(1, 0, t - 1)
        .unwrap()
        .reshape((b * (t - 1), v))
        .unwrap();
    let labels = ids.narrow(1, 1, t - 1).unwrap().flatten_all().unwrap();
    let (fused, n) = mosaic_kernels::cross_entropy_sum(&shifted, &labels, 0.0).unwrap();
    assert_eq!(counted, n);
    let value = |t: &Tensor| t.to_scalar::<f32>().unwrap();
    assert_eq!(value(&loss).to_bits(), value(&fused).to_bits());
    let log_probs = candle_nn::ops::log_softmax(&shifted, candle_core::D::Minus1).unwrap();
    let picked = log_probs
        .gather(
            &labels.to_dtype(DType::U32).unwrap().unsqueeze(1).unwrap(),
            1,
        )
        .unwrap();
    let composed = value(&picked.sum_all().unwrap().neg().unwrap());
    assert!(
        (value(&loss) - composed).abs() <= 1e-5 * composed.abs(),
        "{} vs {composed}",
        value(&loss)
    );
}
