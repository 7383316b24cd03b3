//! The other direction: adapters mosaic saves load in Python PEFT with mosaic's outputs (logits within 1e-4).
//! Needs the reference venv (`../shared/tools/setup-reference-env.sh`), so it is ignored by default; `.ci/run`
//! runs it when the venv exists. `MOSAIC_REFERENCE_PYTHON` names its python (default
//! `~/.cache/mosaic-refenv/bin/python`).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use mosaic_models::{Bert, BertTask, Gpt2};
use mosaic_peft::{
    AdapterConfig, AdapterTarget, Lora, LoraConfig, PromptConfig, PromptInit, PromptLearning,
    PromptMethod, TargetModules, TaskType,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    std::env::var_os("MOSAIC_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs_home().join(".cache/mosaic-refenv/bin/python"))
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn config(
    targets: &[&str],
    task_type: TaskType,
    base: &Path,
    rslora: bool,
    dora: bool,
) -> AdapterConfig {
    let mut lora = LoraConfig::new(TargetModules::Names(
        targets.iter().map(|s| s.to_string()).collect(),
    ));
    lora.r = 4;
    lora.alpha = 16.0;
    lora.use_rslora = rslora;
    lora.use_dora = dora;
    lora.modules_to_save = task_type
        .default_modules_to_save()
        .iter()
        .map(|s| s.to_string())
        .collect();
    AdapterConfig {
        lora,
        base_model: Some(base.display().to_string()),
        task_type: Some(task_type),
    }
}

fn randomise(lora: &Lora) {
    for (name, var) in lora.trainable() {
        if name.contains("lora_magnitude_vector") {
            var.set(&(var.as_tensor() * 1.2).unwrap()).unwrap();
        } else if name.contains("lora_B") || name.starts_with("classifier") {
            var.set(&Tensor::randn(0f32, 0.5, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
}

fn check(base: &Path, adapter: &Path, kind: &str, ids: &[Vec<u32>], logits: &Tensor) {
    check_with(base, adapter, kind, ids, logits, false)
}

fn check_with(
    base: &Path,
    adapter: &Path,
    kind: &str,
    ids: &[Vec<u32>],
    logits: &Tensor,
    merged: bool,
) {
    let logits = match logits.rank() {
        2 => serde_json::json!(logits.to_vec2::<f32>().unwrap()),
        _ => serde_json::json!(logits.to_vec3::<f32>().unwrap()),
    };
    let expected = serde_json::json!({ "input_ids": ids, "logits": logits });
    let json = adapter.join("expected.json");
    std::fs::write(&json, expected.to_string()).unwrap();
    let out = Command::new(python())
        .arg(root().join("xtask/scripts/check_peft_adapter.py"))
        .args(["--base".as_ref(), base.as_os_str()])
        .args(["--adapter".as_ref(), adapter.as_os_str()])
        .args(["--kind", kind])
        .args(["--expected".as_ref(), json.as_os_str()])
        .args(merged.then_some("--merged"))
        .output()
        .expect("cannot run the reference python (set MOSAIC_REFERENCE_PYTHON)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "PEFT disagrees or refuses:\n{text}");
}

#[test]
#[ignore = "needs the reference venv with peft (run by .ci/run when it exists)"]
fn python_peft_loads_mosaic_adapters_with_equal_outputs() {
    let dir = tempfile::tempdir().unwrap();

    let base = root().join("fixtures/models/tiny-bert-cls");
    let bert = Bert::from_folder(
        &base,
        Some(BertTask::SequenceClassification),
        None,
        0,
        &Device::Cpu,
    )
    .unwrap();
    let lora = Lora::apply(
        &bert.params,
        bert.mode.clone(),
        config(
            &["query", "value", "intermediate.dense"],
            TaskType::SeqCls,
            &base,
            false,
            true,
        ),
        1,
    )
    .unwrap();
    randomise(&lora);
    let ids = vec![vec![2u32, 10, 4, 7, 3], vec![2, 5, 9, 11, 3]];
    let x = Tensor::new(ids.clone(), &Device::Cpu).unwrap();
    let logits = bert
        .classifier_logits(&bert.hidden_states(&x, None, None).unwrap())
        .unwrap();
    let out = dir.path().join("bert");
    bert.save(&out).unwrap();
    check(&base, &out, "seq-cls", &ids, &logits);

    let base = root().join("fixtures/models/tiny-gpt2");
    let gpt2 = Gpt2::from_folder(&base, 0, &Device::Cpu).unwrap();
    let lora = Lora::apply(
        &gpt2.params,
        gpt2.mode.clone(),
        config(&["c_attn", "c_fc"], TaskType::CausalLm, &base, true, false),
        2,
    )
    .unwrap();
    randomise(&lora);
    let ids = vec![vec![5u32, 17, 42, 99, 7, 120]];
    let logits = gpt2
        .logits(&Tensor::new(ids.clone(), &Device::Cpu).unwrap(), None)
        .unwrap();
    let out = dir.path().join("gpt2");
    gpt2.save(&out).unwrap();
    check(&base, &out, "causal-lm", &ids, &logits);
    // Merged into the weights and saved whole, it is a plain HF folder transformers loads.
    lora.merge_and_unload().unwrap();
    let merged = dir.path().join("gpt2-merged");
    gpt2.save(&merged).unwrap();
    check_with(&base, &merged, "causal-lm", &ids, &logits, true);

    // Prompt tuning and prefix tuning (trained through the projection MLP, saved projected).
    let x = Tensor::new(ids.clone(), &Device::Cpu).unwrap();
    for (name, method) in [
        (
            "prompt",
            PromptMethod::PromptTuning {
                init: PromptInit::Random,
            },
        ),
        (
            "prefix",
            PromptMethod::PrefixTuning {
                prefix_projection: true,
                encoder_hidden_size: 16,
            },
        ),
    ] {
        let gpt2 = Gpt2::from_folder(&base, 0, &Device::Cpu).unwrap();
        let config = PromptConfig {
            method,
            num_virtual_tokens: 3,
            num_layers: 0,
            num_attention_heads: 0,
            token_dim: 0,
            base_model: Some(base.display().to_string()),
            task_type: Some(TaskType::CausalLm),
            modules_to_save: Vec::new(),
        };
        let target = AdapterTarget::gpt2(&gpt2);
        let _adapter = PromptLearning::apply(
            &gpt2.params,
            gpt2.mode.clone(),
            config,
            target.virtual_tokens,
            None,
            7,
        )
        .unwrap();
        let logits = gpt2.logits(&x, None).unwrap();
        let out = dir.path().join(name);
        gpt2.save(&out).unwrap();
        check(&base, &out, "causal-lm", &ids, &logits);
    }
}
