//! PEFT through the real binary: `mosaic generate --adapter` on adapters made by Python PEFT gives PEFT's greedy
//! tokens, `mosaic merge` writes a folder that generates the same, a `[peft]` run saves the adapter (not the
//! model) and its checkpoint evaluates, and bad input is one clear error line.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn path(rel: &str) -> String {
    fixtures().join(rel).display().to_string()
}

fn mosaic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .env(
            "MOSAIC_CACHE",
            std::env::temp_dir().join("mosaic-test-cache"),
        )
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn success(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {stderr}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A failure is one clear `error:` line, a non-zero exit, and no panic.
fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "panic reached the user: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {stderr}");
    for needle in needles {
        assert!(errors[0].contains(needle), "`{needle}` not in: {stderr}");
    }
}

fn expected(name: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("peft/expected.json")).unwrap(),
    )
    .unwrap();
    all[name].clone()
}

fn generated(model: &str, adapter: Option<&str>, prompt: &str) -> Vec<u64> {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        prompt,
        "--max-new-tokens",
        "8",
        "--json",
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter", a]);
    }
    let stdout = success(&mosaic(&args));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    v["generated_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn generate_with_peft_made_adapters_gives_peft_greedy_tokens_and_merge_keeps_them() {
    let base = path("models/tiny-gpt2");
    let lora = expected("gpt2-lora");
    let prompt = lora["text_prompt"].as_str().unwrap();
    let tokens = generated(&base, Some(&path("peft/gpt2-lora")), prompt);
    assert_eq!(tokens, ids(&lora["text_generated"]));
    // Prompt and prefix tuning: PEFT's forward, greedy (see make_peft_fixtures.py on PEFT's own generate).
    for name in ["gpt2-prompt-tuning", "gpt2-prefix-tuning"] {
        let want = expected(name);
        let adapter = path(&format!("peft/{name}"));
        assert_eq!(
            generated(&base, Some(&adapter), prompt),
            ids(&want["text_greedy_forward"]),
            "{name}"
        );
    }

    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    success(&mosaic(&[
        "merge",
        "--model",
        &base,
        "--adapter",
        &path("peft/gpt2-lora"),
        "--output",
        merged.to_str().unwrap(),
    ]));
    assert!(merged.join("model.safetensors").is_file() && merged.join("config.json").is_file());
    assert!(!merged.join("adapter_config.json").exists());
    assert_eq!(generated(merged.to_str().unwrap(), None, prompt), tokens);
}

#[test]
fn a_peft_run_saves_the_adapter_and_its_checkpoint_evaluates_and_generates() {
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let stdout = success(&mosaic(&[
        "train",
        &path("recipes/instruct-tiny.toml"),
        "--set",
        "peft.method=lora",
        "--set",
        "peft.r=4",
        "--set",
        "train.epochs=1",
        "--output",
        run.to_str().unwrap(),
    ]));
    let best = run.join("best");
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "mosaic.json",
        "tokenizer.json",
    ] {
        assert!(best.join(f).is_file(), "best/ lacks {f}");
    }
    assert!(
        !best.join("model.safetensors").exists(),
        "best/ holds a copy of the base model"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let trainable = report["trainable_parameters"].as_u64().unwrap();
    assert_eq!(
        trainable,
        2 * (4 * 32 + 96 * 4),
        "LoRA A and B of both c_attn: {stdout}"
    );

    let eval = success(&mosaic(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "--data",
        &path("data/instructions/valid.jsonl"),
        "--json",
    ]));
    assert!(eval.contains("perplexity"), "{eval}");
    let tokens = generated(best.to_str().unwrap(), None, "hello");
    assert_eq!(tokens.len(), 8);
    let data = path("data/instructions/valid.jsonl");
    let out = mosaic(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "--adapter",
        &path("peft/gpt2-lora"),
        "--data",
        &data,
    ]);
    assert_clean_failure(&out, &["already holds an adapter"]);

    // A whole-model checkpoint takes `--adapter` on top: PEFT's LoRA changes its loss.
    let (_keep, full) = out_dir_run(&["--set", "train.epochs=1"]);
    let loss = |extra: &[&str]| -> f64 {
        let mut args = vec![
            "eval",
            "--checkpoint",
            full.to_str().unwrap(),
            "--data",
            &data,
            "--json",
        ];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(success(&mosaic(&args)).trim()).unwrap();
        v["metrics"]["loss"].as_f64().unwrap()
    };
    let adapter = path("peft/gpt2-lora");
    assert!((loss(&[]) - loss(&["--adapter", &adapter])).abs() > 1e-3);
}

/// Trains instruct-tiny (whole model) with `extra` settings into a fresh folder: the folder and its `best/`.
fn out_dir_run(extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let recipe = path("recipes/instruct-tiny.toml");
    let mut args = vec!["train", &recipe, "--output", run.to_str().unwrap()];
    args.extend_from_slice(extra);
    success(&mosaic(&args));
    (dir, run.join("best"))
}

#[test]
fn bad_adapters_and_settings_are_one_clear_error() {
    let base = path("models/tiny-gpt2");
    // A GPT-2 adapter on a BERT model.
    let out = mosaic(&[
        "fill-mask",
        "--model",
        &path("models/tiny-bert-mlm"),
        "--adapter",
        &path("peft/gpt2-lora"),
        "--text",
        "a [MASK] b",
    ]);
    assert_clean_failure(&out, &["--adapter", "c_attn", "matches no projection"]);

    // A method mosaic does not run.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"peft_type": "IA3", "target_modules": ["c_attn"]}"#,
    )
    .unwrap();
    let out = mosaic(&[
        "generate",
        "--model",
        &base,
        "--adapter",
        dir.path().to_str().unwrap(),
        "--prompt",
        "a",
    ]);
    assert_clean_failure(&out, &["IA3"]);

    // target_modules matching nothing names what exists; r = 0 names the key.
    let run = dir.path().join("run");
    let recipe = path("recipes/instruct-tiny.toml");
    let out = mosaic(&[
        "train",
        &recipe,
        "--set",
        "peft.method=lora",
        "--set",
        "peft.target_modules=[\"q_proj\"]",
        "--output",
        run.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &["q_proj", "transformer.h.*.attn.c_attn"]);
    let out = mosaic(&[
        "train",
        &recipe,
        "--set",
        "peft.method=lora",
        "--set",
        "peft.r=0",
    ]);
    assert_clean_failure(&out, &["peft.r"]);
}

#[test]
fn a_recipe_continues_a_peft_made_adapter() {
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    success(&mosaic(&[
        "train",
        &path("recipes/instruct-tiny.toml"),
        "--set",
        "peft.method=lora",
        "--set",
        &format!("peft.adapter={}", path("peft/gpt2-lora")),
        "--set",
        "train.epochs=1",
        "--output",
        run.to_str().unwrap(),
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    // The adapter's own settings apply: r = 4 on c_attn and both c_proj of the two layers.
    let per_layer = (4 * 32 + 96 * 4) + (4 * 32 + 32 * 4) + (4 * 128 + 32 * 4);
    assert_eq!(
        report["trainable_parameters"].as_u64().unwrap(),
        2 * per_layer as u64
    );
    let saved = std::fs::read_to_string(run.join("best/adapter_config.json")).unwrap();
    assert!(saved.contains("\"use_rslora\": true"), "{saved}");
}
