//! LoRA on the fixture BERT and GPT-2: gradients reach A and B and not the frozen base, merge/unmerge agree and
//! restore exactly, the adapter folder round-trips, and bad settings get errors that say what is wrong.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mosaic_models::grad_mode::set_frozen;
use mosaic_models::testing::{assert_close, assert_gradients_reach, max_abs_diff};
use mosaic_models::{Bert, BertTask, Gpt2};

use crate::{AdapterConfig, Lora, LoraConfig, PeftError, TargetModules, TaskType};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

fn bert() -> Bert {
    Bert::from_folder(
        &fixture("tiny-bert-cls"),
        Some(BertTask::SequenceClassification),
        None,
        0,
        &Device::Cpu,
    )
    .unwrap()
}

fn gpt2() -> Gpt2 {
    Gpt2::from_folder(&fixture("tiny-gpt2"), 0, &Device::Cpu).unwrap()
}

fn config(targets: &[&str], task_type: Option<TaskType>) -> AdapterConfig {
    let mut lora = LoraConfig::new(TargetModules::Names(
        targets.iter().map(|s| s.to_string()).collect(),
    ));
    lora.r = 4;
    lora.alpha = 8.0;
    if task_type == Some(TaskType::SeqCls) {
        lora.modules_to_save = vec!["classifier".into()];
    }
    AdapterConfig {
        lora,
        base_model: Some("tiny".into()),
        task_type,
    }
}

/// Gives every B random values, so the update is not zero.
fn randomise_b(lora: &Lora) {
    for (name, var) in lora.trainable() {
        if name.ends_with("lora_B.weight") {
            let t = Tensor::randn(0f32, 0.5, var.dims(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
        }
    }
}

fn ids() -> Tensor {
    Tensor::new(&[[2u32, 10, 4, 7, 3], [2, 5, 9, 11, 3]], &Device::Cpu).unwrap()
}

fn bert_logits(bert: &Bert) -> Tensor {
    let hidden = bert.hidden_states(&ids(), None, None).unwrap();
    bert.classifier_logits(&hidden).unwrap()
}

#[test]
fn gradients_reach_a_and_b_and_skip_the_frozen_base() {
    let bert = bert();
    let lora = Lora::apply(
        &bert.params,
        bert.mode.clone(),
        config(&["query", "value"], None),
        1,
    )
    .unwrap();
    randomise_b(&lora);
    let trainable = lora.trainable();
    let train_ids: std::collections::HashSet<_> = trainable.iter().map(|(_, v)| v.id()).collect();
    let frozen: Vec<Var> = bert
        .params
        .all()
        .into_iter()
        .filter(|(_, v)| !train_ids.contains(&v.id()))
        .map(|(_, v)| v)
        .collect();
    for v in &frozen {
        set_frozen(v, true);
    }
    let loss = bert_logits(&bert).sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let lora_only: Vec<(String, Var)> = trainable
        .into_iter()
        .filter(|(n, _)| n.contains("lora_"))
        .collect();
    assert_eq!(lora_only.len(), 8);
    assert_gradients_reach(lora_only.iter().map(|(n, v)| (n.as_str(), v)), &grads);
    for v in &frozen {
        assert!(
            grads.get(v.as_tensor()).is_none(),
            "a frozen weight got a gradient"
        );
        set_frozen(v, false);
    }
}

#[test]
fn merged_and_unmerged_agree_and_unmerge_restores_the_weights_exactly() {
    // BERT's (out, in) weights and GPT-2's Conv1D (in, out) weights.
    let bert = bert();
    let lora = Lora::apply(
        &bert.params,
        bert.mode.clone(),
        config(&["query", "value", "dense"], None),
        2,
    )
    .unwrap();
    randomise_b(&lora);
    let weight = bert
        .params
        .get("bert.encoder.layer.0.attention.self.query.weight")
        .unwrap();
    let original = weight.as_tensor().copy().unwrap();
    let unmerged = bert_logits(&bert);
    lora.merge().unwrap();
    assert!(
        max_abs_diff(weight.as_tensor(), &original) > 0.0,
        "merge changed nothing"
    );
    assert_close(&bert_logits(&bert), &unmerged, 1e-5);
    lora.unmerge().unwrap();
    assert_eq!(max_abs_diff(weight.as_tensor(), &original), 0.0);
    assert_close(&bert_logits(&bert), &unmerged, 1e-6);

    let gpt2 = gpt2();
    let lora = Lora::apply(
        &gpt2.params,
        gpt2.mode.clone(),
        config(&["c_attn", "c_fc"], None),
        3,
    )
    .unwrap();
    randomise_b(&lora);
    let ids = ids();
    let unmerged = gpt2.logits(&ids, None).unwrap();
    let base = {
        lora.merge().unwrap();
        gpt2.logits(&ids, None).unwrap()
    };
    assert_close(&base, &unmerged, 1e-5);
    lora.merge_and_unload().unwrap();
    assert!(gpt2.params.adapter_files().is_none());
    assert!(gpt2.params.all().iter().all(|(n, _)| !n.contains("lora_")));
    assert_close(&gpt2.logits(&ids, None).unwrap(), &unmerged, 1e-5);
}

#[test]
fn an_adapted_model_saves_the_adapter_alone_and_it_loads_back() {
    let bert = bert();
    let lora = Lora::apply(
        &bert.params,
        bert.mode.clone(),
        config(&["query", "value"], Some(TaskType::SeqCls)),
        4,
    )
    .unwrap();
    randomise_b(&lora);
    let classifier = bert.params.get("classifier.weight").unwrap();
    classifier
        .set(&Tensor::randn(0f32, 1.0, classifier.dims(), &Device::Cpu).unwrap())
        .unwrap();
    let expected = bert_logits(&bert);
    let dir = tempfile::tempdir().unwrap();
    bert.save(dir.path()).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["adapter_config.json", "adapter_model.safetensors"]);
    let saved =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(
        saved.contains_key(
            "base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"
        )
    );
    assert!(saved.contains_key("base_model.model.classifier.weight"));
    assert_eq!(saved.len(), 8 + 2);

    // A fresh base model (its own classifier) gives the saved outputs once the adapter is loaded.
    let fresh = self::bert();
    assert!(max_abs_diff(&bert_logits(&fresh), &expected) > 1e-3);
    let loaded = Lora::load(&fresh.params, fresh.mode.clone(), dir.path()).unwrap();
    assert_eq!(loaded.targets(), lora.targets());
    assert_close(&bert_logits(&fresh), &expected, 1e-6);
}

#[test]
fn bad_settings_say_what_is_wrong() {
    let bert = bert();
    let err = Lora::apply(
        &bert.params,
        bert.mode.clone(),
        config(&["q_proj"], None),
        0,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("q_proj") && msg.contains("bert.encoder.layer.*.attention.self.query"),
        "{msg}"
    );
    let mut zero = config(&["query"], None);
    zero.lora.r = 0;
    let err = Lora::apply(&bert.params, bert.mode.clone(), zero, 0).unwrap_err();
    assert!(err.to_string().contains("r must be at least 1"), "{err}");

    // An adapter saved for GPT-2 does not load into BERT; one of another rank shape names the tensor.
    let gpt2 = gpt2();
    let lora = Lora::apply(
        &gpt2.params,
        gpt2.mode.clone(),
        config(&["c_attn"], None),
        0,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    gpt2.save(dir.path()).unwrap();
    drop(lora);
    let err = Lora::load(&bert.params, bert.mode.clone(), dir.path()).unwrap_err();
    assert!(
        matches!(err, PeftError::Invalid(_)) && err.to_string().contains("c_attn"),
        "{err}"
    );

    let other = gpt2_with_rank_file(dir.path());
    let fresh = self::gpt2();
    let err = Lora::load(&fresh.params, fresh.mode.clone(), &other).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("lora_A.weight") && msg.contains("[4, 32]") && msg.contains("[2, 32]"),
        "{msg}"
    );
}

/// A copy of the adapter in `dir` whose config says r = 4 while its tensors have rank 2.
fn gpt2_with_rank_file(dir: &Path) -> std::path::PathBuf {
    let gpt2 = gpt2();
    let mut c = config(&["c_attn"], None);
    c.lora.r = 2;
    let _lora = Lora::apply(&gpt2.params, gpt2.mode.clone(), c, 0).unwrap();
    let out = dir.join("rank2");
    gpt2.save(&out).unwrap();
    std::fs::copy(
        dir.join("adapter_config.json"),
        out.join("adapter_config.json"),
    )
    .unwrap();
    out
}

fn prompt_config(method: crate::PromptMethod) -> crate::PromptConfig {
    crate::PromptConfig {
        method,
        num_virtual_tokens: 3,
        num_layers: 0,
        num_attention_heads: 0,
        token_dim: 0,
        base_model: Some("tiny".into()),
        task_type: Some(TaskType::CausalLm),
        modules_to_save: Vec::new(),
    }
}

#[test]
fn prompt_and_prefix_tuning_train_their_virtual_tokens_and_round_trip() {
    use crate::{Adapter, AdapterTarget, PromptInit, PromptLearning, PromptMethod};
    let methods = [
        PromptMethod::PromptTuning {
            init: PromptInit::Random,
        },
        PromptMethod::PrefixTuning {
            prefix_projection: false,
            encoder_hidden_size: 0,
        },
        PromptMethod::PrefixTuning {
            prefix_projection: true,
            encoder_hidden_size: 16,
        },
    ];
    for method in methods {
        let gpt2 = gpt2();
        let ids = ids();
        let base = gpt2.logits(&ids, None).unwrap();
        let target = AdapterTarget::gpt2(&gpt2);
        let learning = PromptLearning::apply(
            &gpt2.params,
            gpt2.mode.clone(),
            prompt_config(method.clone()),
            target.virtual_tokens.clone(),
            None,
            5,
        )
        .unwrap();
        assert_eq!(gpt2.transformer.wpe.position_offset(), 3);
        let adapted = gpt2.logits(&ids, None).unwrap();
        assert!(
            max_abs_diff(&adapted, &base) > 1e-3,
            "{method:?} changes nothing"
        );

        let trainable = learning.trainable();
        let loss = adapted.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        assert_gradients_reach(trainable.iter().map(|(n, v)| (n.as_str(), v)), &grads);

        // Saved (projected, for the MLP) and loaded into a fresh model: the same outputs.
        let dir = tempfile::tempdir().unwrap();
        gpt2.save(dir.path()).unwrap();
        let fresh = self::gpt2();
        let loaded = Adapter::load(&AdapterTarget::gpt2(&fresh), dir.path()).unwrap();
        assert_eq!(loaded.trainable().len(), 1);
        assert_close(&fresh.logits(&ids, None).unwrap(), &adapted, 1e-5);

        learning.unload();
        assert_eq!(gpt2.transformer.wpe.position_offset(), 0);
        assert_close(&gpt2.logits(&ids, None).unwrap(), &base, 0.0);
    }
}

#[test]
fn a_prompt_adapter_for_another_model_shape_is_refused() {
    use crate::{Adapter, AdapterTarget, PromptLearning, PromptMethod};
    let gpt2 = gpt2();
    let _ = PromptLearning::apply(
        &gpt2.params,
        gpt2.mode.clone(),
        prompt_config(PromptMethod::PrefixTuning {
            prefix_projection: false,
            encoder_hidden_size: 0,
        }),
        None,
        None,
        0,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    gpt2.save(dir.path()).unwrap();
    // The same adapter claiming a three-layer model.
    let config = dir.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"num_layers\": 2", "\"num_layers\": 3"),
    )
    .unwrap();
    let fresh = self::gpt2();
    let err = Adapter::load(&AdapterTarget::gpt2(&fresh), dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("made for a model with 3 layers"),
        "{err}"
    );
    // Prompt tuning on an encoder: the virtual tokens go into its input, and its output covers them first.
    let bert = bert();
    let _prompt = PromptLearning::apply(
        &bert.params,
        bert.mode.clone(),
        prompt_config(crate::PromptMethod::PromptTuning {
            init: crate::PromptInit::Random,
        }),
        None,
        None,
        0,
    )
    .unwrap();
    let hidden = bert.hidden_states(&ids(), None, None).unwrap();
    assert_eq!(hidden.dims(), [2, 3 + 5, 32]);
}

#[test]
fn lora_wraps_vit_and_clip_projections_and_merges_exactly() {
    use mosaic_models::{Clip, Vit};
    let d = Device::Cpu;
    let pixels = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &d).unwrap();

    let vit = Vit::from_folder(&fixture("tiny-vit"), None, None, 0, &d).unwrap();
    let lora = Lora::apply(
        &vit.params,
        vit.mode.clone(),
        config(&["query", "value"], None),
        6,
    )
    .unwrap();
    assert_eq!(lora.targets().len(), 2 * vit.config.num_hidden_layers);
    randomise_b(&lora);
    let out = |v: &Vit| v.forward(&pixels).unwrap().last_hidden_state;
    let unmerged = out(&vit);
    let grads = unmerged
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_gradients_reach(
        lora.trainable().iter().map(|(n, v)| (n.as_str(), v)),
        &grads,
    );
    lora.merge().unwrap();
    assert_close(&out(&vit), &unmerged, 1e-5);

    let clip = Clip::from_folder(&fixture("tiny-clip"), 0, &d).unwrap();
    let lora = Lora::apply(
        &clip.params,
        clip.mode.clone(),
        config(
            &["q_proj", "v_proj", "visual_projection", "text_projection"],
            None,
        ),
        7,
    )
    .unwrap();
    randomise_b(&lora);
    let ids = Tensor::new(&[[1u32, 5, 9, 2]], &d).unwrap();
    let features = |c: &Clip| {
        let i = c.image_features(&pixels).unwrap();
        let t = c.text_features(&ids, None).unwrap();
        Tensor::cat(&[&i, &t], 0).unwrap()
    };
    let unmerged = features(&clip);
    lora.merge().unwrap();
    assert_close(&features(&clip), &unmerged, 1e-5);
    lora.unmerge().unwrap();
    assert_close(&features(&clip), &unmerged, 1e-6);
}

#[test]
fn dora_starts_at_the_base_model_trains_its_magnitude_and_merges_exactly() {
    for model in ["bert", "gpt2"] {
        let (params, mode, logits): (_, _, Box<dyn Fn() -> Tensor>) = if model == "bert" {
            let b = bert();
            let (p, m) = (b.params.clone(), b.mode.clone());
            (p, m, Box::new(move || bert_logits(&b)))
        } else {
            let g = gpt2();
            let (p, m) = (g.params.clone(), g.mode.clone());
            (p, m, Box::new(move || g.logits(&ids(), None).unwrap()))
        };
        let base = logits();
        let mut c = config(&["query", "value", "c_attn", "c_fc"], None);
        c.lora.use_dora = true;
        c.lora.target_modules = TargetModules::Regex(".*(query|value|c_attn|c_fc)".into());
        let lora = Lora::apply(&params, mode, c, 8).unwrap();
        assert_close(&logits(), &base, 1e-5);
        randomise_b(&lora);
        for (name, var) in lora.trainable() {
            if name.ends_with("lora_magnitude_vector") {
                var.set(&(var.as_tensor() * 1.3).unwrap()).unwrap();
            }
        }
        let adapted = logits();
        let grads = adapted
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let trainable = lora.trainable();
        assert!(
            trainable
                .iter()
                .any(|(n, _)| n.ends_with("lora_magnitude_vector"))
        );
        assert_gradients_reach(trainable.iter().map(|(n, v)| (n.as_str(), v)), &grads);
        lora.merge().unwrap();
        assert_close(&logits(), &adapted, 1e-4);
        lora.unmerge().unwrap();
        assert_close(&logits(), &adapted, 1e-6);
    }
}

#[test]
fn prompt_tuning_from_text_starts_at_the_texts_token_embeddings_repeated() {
    use crate::{AdapterTarget, PromptInit, PromptLearning, PromptMethod};
    let gpt2 = gpt2();
    let target = AdapterTarget::gpt2(&gpt2);
    let learning = PromptLearning::apply(
        &gpt2.params,
        gpt2.mode.clone(),
        prompt_config(PromptMethod::PromptTuning {
            init: PromptInit::Text("ab".into()),
        }),
        target.virtual_tokens,
        Some(&[7, 9]),
        0,
    )
    .unwrap();
    let (_, embedding) = &learning.trainable()[0];
    let ids = Tensor::new(&[7u32, 9, 7], &Device::Cpu).unwrap();
    let expected = gpt2.transformer.wte.weight().index_select(&ids, 0).unwrap();
    assert_close(embedding.as_tensor(), &expected, 0.0);
}
