//! `mosaic train` → `mosaic eval` → `mosaic predict` for a multimodal classifier, through the real binary: a tiny
//! CLIP vision tower and a tiny BERT joined by concatenation, on a few rows of the bundled scene-statements set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first `n` rows of a scene-statements split, with absolute image paths, written to `dir/name`.
fn rows(dir: &Path, split: &str, n: usize, name: &str) -> PathBuf {
    let source = root().join("fixtures/data/scene-statements");
    let text = std::fs::read_to_string(source.join(format!("{split}.jsonl"))).unwrap();
    let lines: Vec<String> = text
        .lines()
        .take(n)
        .map(|l| {
            let mut row: serde_json::Value = serde_json::from_str(l).unwrap();
            let image = source.join(row["image"].as_str().unwrap());
            row["image"] = image.display().to_string().into();
            row.to_string()
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_multimodal_checkpoint_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let train = rows(dir.path(), "train", 16, "train.jsonl");
    let test = rows(dir.path(), "test", 8, "test.jsonl");
    let models = root().join("fixtures/models");
    let recipe = dir.path().join("mm.toml");
    std::fs::write(
        &recipe,
        format!(
            "task = \"multimodal-classification\"\nmodel = \"{}\"\nvision_model = \"{}\"\n\
             fusion = \"concat\"\n[data]\ntrain = \"{}\"\nvalid = \"{}\"\ntest = \"{}\"\n\
             [train]\nepochs = 1\nbatch_size = 8\n",
            models.join("tiny-bert").display(),
            models.join("tiny-clip").display(),
            train.display(),
            test.display(),
            test.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let printed = ok(&mosaic(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]));
    assert!(printed.contains("mosaic predict --checkpoint"), "{printed}");
    let best = out.join("best");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();

    // eval prints the same figures the run reported after training.
    let json = ok(&mosaic(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--json",
    ]));
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        value["metrics"]["accuracy"],
        report["after"]["metrics"]["accuracy"]
    );

    // predict adds a label and per-label scores to each row, rows without a label included.
    let input = dir.path().join("input.jsonl");
    let unlabelled: Vec<String> = std::fs::read_to_string(&test)
        .unwrap()
        .lines()
        .map(|l| {
            let mut row: serde_json::Value = serde_json::from_str(l).unwrap();
            row.as_object_mut().unwrap().remove("label");
            row.to_string()
        })
        .collect();
    std::fs::write(&input, unlabelled.join("\n") + "\n").unwrap();
    let predicted = dir.path().join("predicted.jsonl");
    ok(&mosaic(&[
        "predict",
        "--checkpoint",
        best.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        predicted.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&predicted).unwrap();
    assert_eq!(text.lines().count(), 8);
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let label = row["label"].as_str().unwrap();
        assert!(label == "true" || label == "false", "{row}");
        let total: f64 = ["true", "false"]
            .iter()
            .map(|l| row["scores"][l].as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-5, "{row}");
    }

    // A row without its image is one error line naming the file and line.
    std::fs::write(&input, "{\"text\": \"there is one square\"}\n").unwrap();
    let failed = mosaic(&[
        "predict",
        "--checkpoint",
        best.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        predicted.to_str().unwrap(),
    ]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("input.jsonl:1") && err.contains("image"),
        "{err}"
    );
}
