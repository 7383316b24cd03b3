//! `mosaic train`, `mosaic eval` and `mosaic predict` through the real binary on the tiny fixture recipes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn mosaic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

fn recipe(name: &str) -> String {
    fixtures().join("recipes").join(name).display().to_string()
}

fn train(dir: &Path, recipe_name: &str) -> PathBuf {
    let out = dir.join("run");
    let stdout = ok(&mosaic(&[
        "train",
        &recipe(recipe_name),
        "--output",
        out.to_str().unwrap(),
        "--set",
        "train.epochs=1",
    ]));
    assert!(
        stdout.contains("before") && stdout.contains("after"),
        "{stdout}"
    );
    for f in [
        "recipe.toml",
        "metrics.jsonl",
        "report.json",
        "training.svg",
        "best/mosaic.json",
        "last/model.safetensors",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    out
}

#[test]
fn cloze_recipe_trains_then_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "cloze-tiny.toml");
    let resolved = std::fs::read_to_string(run.join("recipe.toml")).unwrap();
    assert!(
        resolved.contains("epochs = 1"),
        "--set is applied and saved: {resolved}"
    );

    let best = run.join("best");
    let valid = fixtures().join("data/sentiment/valid.jsonl");
    let out = ok(&mosaic(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "--data",
        valid.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["metrics"]["accuracy"].as_f64().is_some(), "{v}");
    assert!(v["report"]["macro avg"]["f1-score"].is_number(), "{v}");

    let input = dir.path().join("new.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"the food was great\", \"id\": 7}\n{\"text\": \"terrible service\"}\n",
    )
    .unwrap();
    let output = dir.path().join("labelled.jsonl");
    ok(&mosaic(&[
        "predict",
        "--checkpoint",
        best.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], 7, "other fields are kept");
    for row in &rows {
        let label = row["label"].as_str().unwrap();
        assert!(label == "positive" || label == "negative");
        let total: f64 = row["scores"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}

#[test]
fn ner_recipe_trains_and_tags_words() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "ner-tiny.toml");
    let input = dir.path().join("words.jsonl");
    std::fs::write(
        &input,
        "{\"tokens\": [\"Anna\", \"flew\", \"to\", \"Paris\", \".\"]}\n",
    )
    .unwrap();
    let output = dir.path().join("tagged.jsonl");
    ok(&mosaic(&[
        "predict",
        "--checkpoint",
        run.join("best").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]));
    let row: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&output).unwrap().trim()).unwrap();
    assert_eq!(row["tags"].as_array().unwrap().len(), 5);
}

#[test]
fn recipe_and_data_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nmodel = \"m\"\n[train]\nlrr = 0.1\n").unwrap();
    assert_clean_failure(
        &mosaic(&["train", bad.to_str().unwrap()]),
        "did you mean `train.lr`",
    );
    assert_clean_failure(
        &mosaic(&[
            "train",
            &recipe("cloze-tiny.toml"),
            "--output",
            dir.path().join("r").to_str().unwrap(),
            "--set",
            "train.epochz=2",
        ]),
        "train.epochz",
    );
    let run = train(dir.path(), "cloze-tiny.toml");
    let data = dir.path().join("unknown.jsonl");
    std::fs::write(&data, "{\"text\": \"ok\", \"label\": \"positive\"}\n{\"text\": \"meh\", \"label\": \"neutral\"}\n").unwrap();
    assert_clean_failure(
        &mosaic(&[
            "eval",
            "--checkpoint",
            run.join("best").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]),
        "unknown.jsonl:2",
    );
    let input = dir.path().join("nofield.jsonl");
    std::fs::write(&input, "{\"txt\": \"x\"}\n").unwrap();
    let output = dir.path().join("never.jsonl");
    assert_clean_failure(
        &mosaic(&[
            "predict",
            "--checkpoint",
            run.join("best").to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]),
        "nofield.jsonl:1",
    );
    assert!(!output.exists(), "no output file on error");
    assert_clean_failure(
        &mosaic(&[
            "eval",
            "--checkpoint",
            dir.path().to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]),
        "mosaic.json",
    );
}
