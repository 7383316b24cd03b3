//! `mosaic generate --image`, `mosaic vqa` and `mosaic caption` through the real binary on the tiny transformers
//! LLaVA: greedy output equals transformers' `generate` on the same prompt and image, and bad input is one clear
//! error line.

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
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {stderr}");
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The new token ids transformers generated for case `case` of tiny-llava.
fn expected(case: &str) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/llava.json")).unwrap(),
    )
    .unwrap();
    json["models"]["tiny-llava"]["cases"][case]["generate"]["new_token_ids"].clone()
}

#[test]
fn vqa_and_generate_with_an_image_equal_transformers() {
    // Case b: the chat template around palette.png and "What colour is it?".
    let out = mosaic(&[
        "vqa",
        "--model",
        &path("models/tiny-llava"),
        "--image",
        &path("images/palette.png"),
        "--question",
        "What colour is it?",
        "--max-new-tokens",
        "12",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(v["generated_token_ids"], expected("b"));
    assert_eq!(v["question"], "What colour is it?");
    // The same through generate with the rendered prompt given as is.
    let out = mosaic(&[
        "generate",
        "--model",
        &path("models/tiny-llava"),
        "--image",
        &path("images/palette.png"),
        "--prompt",
        "USER: <image>\nWhat colour is it? ASSISTANT:",
        "--max-new-tokens",
        "12",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(v["generated_token_ids"], expected("b"));
    assert!(v["text"].is_string());
    // No `<image>` in the prompt: one goes at its start.
    let out = mosaic(&[
        "generate",
        "--model",
        &path("models/tiny-llava"),
        "--image",
        &path("images/palette.png"),
        "--prompt",
        "hi",
        "--json",
    ]);
    let at_start = stdout_json(&out);
    let out = mosaic(&[
        "generate",
        "--model",
        &path("models/tiny-llava"),
        "--image",
        &path("images/palette.png"),
        "--prompt",
        "<image>\nhi",
        "--json",
    ]);
    assert_eq!(stdout_json(&out), at_start);
    let out = mosaic(&[
        "caption",
        "--model",
        &path("models/tiny-llava"),
        "--image",
        &path("images/palette.png"),
        "--json",
    ]);
    assert!(stdout_json(&out)["caption"].is_string());
}

fn error_line(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_input_is_one_clear_error() {
    let llava = path("models/tiny-llava");
    let missing = mosaic(&[
        "vqa",
        "--model",
        &llava,
        "--image",
        "/nonexistent.png",
        "--question",
        "Q",
    ]);
    assert!(error_line(&missing).contains("/nonexistent.png"));
    let two = mosaic(&[
        "generate",
        "--model",
        &llava,
        "--image",
        &path("images/palette.png"),
        "--prompt",
        "<image> <image>",
    ]);
    assert!(error_line(&two).contains("2 `<image>` markers"));
    let no_image = mosaic(&["generate", "--model", &llava, "--prompt", "<image> hi"]);
    assert!(error_line(&no_image).contains("no --image"));
    let not_llava = mosaic(&[
        "generate",
        "--model",
        &path("models/tiny-gpt2"),
        "--image",
        &path("images/palette.png"),
        "--prompt",
        "hi",
    ]);
    assert!(error_line(&not_llava).contains("needs a LLaVA"));
    let too_long = mosaic(&[
        "generate",
        "--model",
        &llava,
        "--image",
        &path("images/palette.png"),
        "--prompt",
        &"word ".repeat(200),
    ]);
    let err = error_line(&too_long);
    assert!(err.contains("context of 128"), "{err}");
}

#[test]
fn eval_scores_a_llava_on_conversation_rows() {
    let dir = tempfile::tempdir().unwrap();
    let image = path("images/palette.png");
    let rows = serde_json::json!([
        {"image": image, "question_type": "color", "answer": "red",
         "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "red"}]},
        {"image": image, "references": ["a palette", "colours"],
         "conversations": [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "a palette"}]},
    ]);
    let data = dir.path().join("rows.json");
    std::fs::write(&data, rows.to_string()).unwrap();
    let out = mosaic(&[
        "eval",
        "--checkpoint",
        &path("models/tiny-llava"),
        "--data",
        &data.display().to_string(),
        "--json",
    ]);
    let v = stdout_json(&out);
    assert!(v["metrics"]["loss"].as_f64().unwrap() > 0.0);
    assert_eq!(v["vqa"]["count"], 1);
    assert!(
        v["metrics"]["bleu4"].is_number() && v["metrics"]["cider"].is_number(),
        "{v}"
    );
}
