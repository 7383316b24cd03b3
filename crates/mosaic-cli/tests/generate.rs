//! `mosaic generate` through the real binary on the tiny GPT-2 fixture: greedy output equals transformers'
//! `generate(do_sample=False)`, seeded sampling repeats, and bad input is one clear error line.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn tiny_gpt2() -> String {
    fixtures().join("models/tiny-gpt2").display().to_string()
}

fn mosaic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .env(
            "MOSAIC_CACHE",
            std::env::temp_dir().join("mosaic-test-cache"),
        )
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {stderr}");
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn token_ids(v: &serde_json::Value) -> Vec<u64> {
    v["generated_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// A failure is one clear `error:` line, a non-zero exit, and no panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "panic reached the user: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {stderr}");
    assert!(errors[0].contains(needle), "`{needle}` not in: {stderr}");
}

#[test]
fn greedy_json_matches_transformers() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/gpt2_generate.json")).unwrap(),
    )
    .unwrap();
    let max_new = reference["max_new_tokens"].to_string();
    for case in reference["cases"].as_array().unwrap() {
        // The CLI takes the model's own EOS and no penalty: the plain single-prompt cases.
        let name = case["name"].as_str().unwrap();
        if !name.starts_with("single") {
            continue;
        }
        let prompt = case["prompts"][0].as_str().unwrap();
        let out = mosaic(&[
            "generate",
            "--model",
            &tiny_gpt2(),
            "--prompt",
            prompt,
            "--max-new-tokens",
            &max_new,
            "--greedy",
            "--json",
        ]);
        let value = stdout_json(&out);
        let object = value.as_object().unwrap();
        assert_eq!(
            object.len(),
            2,
            "exactly text and generated_token_ids: {value}"
        );
        let expected: Vec<u64> = case["expected"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(token_ids(&value), expected, "{name}");
        assert!(value["text"].is_string());
    }
}

#[test]
fn default_is_greedy_and_text_mode_prints_the_continuation() {
    let json = stdout_json(&mosaic(&[
        "generate",
        "--model",
        &tiny_gpt2(),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "6",
        "--json",
    ]));
    let greedy = stdout_json(&mosaic(&[
        "generate",
        "--model",
        &tiny_gpt2(),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "6",
        "--greedy",
        "--json",
    ]));
    assert_eq!(json, greedy);
    assert_eq!(token_ids(&json).len(), 6);
    let out = mosaic(&[
        "generate",
        "--model",
        &tiny_gpt2(),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "6",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", json["text"].as_str().unwrap())
    );
}

#[test]
fn seeded_sampling_repeats() {
    let run = |seed: &str| {
        stdout_json(&mosaic(&[
            "generate",
            "--model",
            &tiny_gpt2(),
            "--prompt",
            "The weather today",
            "--max-new-tokens",
            "12",
            "--temperature",
            "1.3",
            "--top-k",
            "40",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--json",
        ]))
    };
    let a = run("5");
    assert_eq!(a, run("5"));
    assert_ne!(token_ids(&a), token_ids(&run("6")));
    assert_eq!(token_ids(&a).len(), 12);
}

#[test]
fn a_long_prompt_is_cut_from_the_left_with_a_warning() {
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(8);
    let out = mosaic(&[
        "generate",
        "--model",
        &tiny_gpt2(),
        "--prompt",
        &prompt,
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    let value = stdout_json(&out);
    assert_eq!(token_ids(&value).len(), 8);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("dropped the first"),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_one_clear_error() {
    let m = tiny_gpt2();
    let base = ["generate", "--model", m.as_str(), "--prompt", "Hello"];
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        mosaic(&args)
    };
    assert_clean_failure(&with(&["--temperature", "0"]), "--temperature");
    assert_clean_failure(&with(&["--temperature", "-1"]), "--temperature");
    assert_clean_failure(&with(&["--top-p", "1.5"]), "--top-p");
    assert_clean_failure(&with(&["--top-p", "0"]), "--top-p");
    assert_clean_failure(&with(&["--top-k", "0"]), "--top-k");
    assert_clean_failure(&with(&["--top-k", "-3"]), "--top-k");
    assert_clean_failure(
        &with(&["--repetition-penalty", "0"]),
        "--repetition-penalty",
    );
    assert_clean_failure(&with(&["--max-new-tokens", "0"]), "--max-new-tokens");
    assert_clean_failure(&with(&["--max-new-tokens", "64"]), "context of 64");
    assert_clean_failure(&with(&["--greedy", "--temperature", "0.5"]), "--greedy");

    let bert = fixtures().join("models/tiny-bert").display().to_string();
    let out = mosaic(&["generate", "--model", &bert, "--prompt", "hi"]);
    assert_clean_failure(&out, "unknown model type `bert`");
    let out = mosaic(&["generate", "--model", "/no/such/folder", "--prompt", "hi"]);
    assert_clean_failure(&out, "/no/such/folder");

    // A model folder without a tokenizer.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            fixtures().join("models/tiny-gpt2").join(f),
            tmp.path().join(f),
        )
        .unwrap();
    }
    let out = mosaic(&[
        "generate",
        "--model",
        tmp.path().to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_clean_failure(&out, "tokenizer.json");
}
