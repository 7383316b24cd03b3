//! `mosaic zero-shot` through the real binary on the tiny CLIP fixture: probabilities equal transformers' (prompt
//! ensemble and single template), and bad input fails with one clear line.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn fixture(path: &str) -> String {
    fixtures().join(path).display().to_string()
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

fn reference() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reference/clip_zero_shot.json")).unwrap(),
    )
    .unwrap()
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

fn zero_shot_json(extra: &[&str]) -> (Vec<String>, Vec<f64>) {
    let model = fixture("models/tiny-clip");
    let image = fixture("images/landscape.png");
    let mut args = vec![
        "zero-shot",
        "--model",
        &model,
        "--image",
        &image,
        "--labels",
        "cat, dog,car",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = mosaic(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        serde_json::from_value(v["labels"].clone()).unwrap(),
        serde_json::from_value(v["probs"].clone()).unwrap(),
    )
}

fn max_error(a: &[f64], b: &serde_json::Value) -> f64 {
    let b: Vec<f64> = serde_json::from_value(b.clone()).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn prompt_ensemble_probabilities_match_transformers() {
    let (labels, probs) = zero_shot_json(&[
        "--template",
        "a photo of a {}.",
        "--template",
        "a drawing of a {}.",
    ]);
    assert_eq!(labels, ["cat", "dog", "car"]);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    let err = max_error(&probs, &reference()["ensemble"]["probs"]);
    println!("zero-shot ensemble: max abs error {err:.3e}");
    assert!(err < 1e-4, "{probs:?}");
}

#[test]
fn single_template_probabilities_match_transformers() {
    let (_, probs) = zero_shot_json(&["--template", "a photo of a {}"]);
    let err = max_error(&probs, &reference()["single"]["probs"]);
    println!("zero-shot single template: max abs error {err:.3e}");
    assert!(err < 1e-4, "{probs:?}");
}

#[test]
fn the_tokenizer_gives_transformers_ids() {
    let tok = tokenizers::Tokenizer::from_file(fixtures().join("models/tiny-clip/tokenizer.json"))
        .unwrap();
    let r = reference();
    let texts: Vec<String> = serde_json::from_value(r["texts"].clone()).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["input_ids"].clone()).unwrap();
    for (text, want) in texts.iter().zip(ids) {
        let got = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn table_output_ranks_labels_and_other_images_convert() {
    for image in [
        "images/portrait_gray.png",
        "images/rgba.png",
        "images/photo.jpg",
    ] {
        let out = mosaic(&[
            "zero-shot",
            "--model",
            &fixture("models/tiny-clip"),
            "--image",
            &fixture(image),
            "--labels",
            "cat,dog,car",
        ]);
        assert!(
            out.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let percents: Vec<f64> = stdout
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .last()
                    .unwrap()
                    .trim_end_matches('%')
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(percents.len(), 3, "{stdout}");
        assert!(percents.windows(2).all(|w| w[0] >= w[1]), "{stdout}");
    }
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let clip = fixture("models/tiny-clip");
    let image = fixture("images/landscape.png");
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.png");
    let bytes = std::fs::read(fixtures().join("images/landscape.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![clip.clone(), image.clone(), "cat".into()],
            "at least two labels",
        ),
        (
            vec![clip.clone(), image.clone(), "cat,,dog".into()],
            "empty label",
        ),
        (
            vec![clip.clone(), image.clone(), "cat,cat".into()],
            "given twice",
        ),
        (
            vec![fixture("models/tiny-bert"), image.clone(), "cat,dog".into()],
            "unknown model type `bert`",
        ),
        (
            vec![
                clip.clone(),
                fixture("images/missing.png"),
                "cat,dog".into(),
            ],
            "missing.png",
        ),
        (
            vec![
                clip.clone(),
                truncated.display().to_string(),
                "cat,dog".into(),
            ],
            "truncated.png",
        ),
        (
            vec![clip.clone(), empty.display().to_string(), "cat,dog".into()],
            "empty.jpg",
        ),
    ];
    for (args, needle) in cases {
        let out = mosaic(&[
            "zero-shot",
            "--model",
            &args[0],
            "--image",
            &args[1],
            "--labels",
            &args[2],
        ]);
        assert_clean_failure(&out, needle);
    }
    let out = mosaic(&[
        "zero-shot",
        "--model",
        &clip,
        "--image",
        &image,
        "--labels",
        "cat,dog",
        "--template",
        "no slot here",
    ]);
    assert_clean_failure(&out, "no slot here");
}
