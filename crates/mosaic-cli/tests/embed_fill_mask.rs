//! `mosaic embed` and `mosaic fill-mask` through the real binary, on the tiny fixtures, and their bad-input errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
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

fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

/// A failure is one clear `error:` line, a non-zero exit, and no panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "panic reached the user: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {stderr}");
    assert!(errors[0].contains(needle), "`{needle}` not in: {stderr}");
}

#[test]
fn embed_writes_jsonl_rows_of_unit_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "this movie was great !\n\n{\"text\": \"the food was bad .\"}\nit was good\n",
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let out = mosaic(&[
        "embed",
        "--model",
        &model("tiny-bert"),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--normalize",
        "--batch-size",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["text"], "the food was bad .");
    for row in &rows {
        let v: Vec<f64> = row["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 32);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn embed_batches_do_not_change_results() {
    let run = |batch: &str| {
        let out = mosaic(&[
            "embed",
            "--model",
            &model("tiny-bert"),
            "--text",
            "this movie was great !",
            "--pooling",
            "cls",
            "--batch-size",
            batch,
        ]);
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run("1"), run("8"));
}

#[test]
fn fill_mask_reports_top_k_as_json() {
    let out = mosaic(&[
        "fill-mask",
        "--model",
        &model("tiny-bert-mlm"),
        "--text",
        "this movie was [MASK] !",
        "--top-k",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 3);
    let scores: Vec<f64> = preds.iter().map(|p| p["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert!(
        preds
            .iter()
            .all(|p| p["token"].is_string() && p["token_id"].is_u64())
    );
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_clean_failure(
        &mosaic(&[
            "fill-mask",
            "--model",
            &model("tiny-bert-mlm"),
            "--text",
            "no mask here",
        ]),
        "[MASK]",
    );
    assert_clean_failure(
        &mosaic(&[
            "fill-mask",
            "--model",
            &model("tiny-bert"),
            "--text",
            "a [MASK] b",
        ]),
        "no masked-LM head",
    );
    assert_clean_failure(
        &mosaic(&["embed", "--model", "/no/such/model", "--text", "x"]),
        "/no/such/model",
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"text\": oops}\n").unwrap();
    assert_clean_failure(
        &mosaic(&[
            "embed",
            "--model",
            &model("tiny-bert"),
            "--input",
            bad.to_str().unwrap(),
        ]),
        "bad.jsonl:2",
    );
    // A text longer than max_position_embeddings (64): an error when truncation is refused, a warning otherwise.
    let long = "movie ".repeat(100);
    assert_clean_failure(
        &mosaic(&[
            "embed",
            "--model",
            &model("tiny-bert"),
            "--text",
            &long,
            "--no-truncate",
        ]),
        "longer than",
    );
    let out = mosaic(&["embed", "--model", &model("tiny-bert"), "--text", &long]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    // A broken config names the file.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("models/tiny-bert").join(f), broken.join(f)).unwrap();
    }
    std::fs::write(broken.join("config.json"), "{\"model_type\": \"bert\"").unwrap();
    assert_clean_failure(
        &mosaic(&["embed", "--model", broken.to_str().unwrap(), "--text", "x"]),
        "config.json",
    );
    assert_clean_failure(
        &mosaic(&[
            "embed",
            "--model",
            "pip:surely-no-such-package-mosaic-xyz",
            "--text",
            "x",
        ]),
        "pip:surely-no-such-package-mosaic-xyz",
    );
}

#[test]
fn output_file_is_not_left_half_written_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    std::fs::write(&output, "previous\n").unwrap();
    let out = mosaic(&[
        "embed",
        "--model",
        &model("tiny-bert"),
        "--text",
        &"movie ".repeat(100),
        "--no-truncate",
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "previous\n");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp files left"
    );
}
