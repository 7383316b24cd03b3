//! Every malformed input the issues list, through the real CLI: one clear `error:` line on stderr naming the
//! file, line or key at fault, a non-zero exit, and no panic text.

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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of the tiny BERT fixture whose weights are replaced by `edit` of the original tensors.
fn broken_model(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>),
) -> PathBuf {
    let src = fixtures().join("models/tiny-bert");
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, dst.join("model.safetensors")).unwrap();
    dst
}

#[test]
fn every_bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, content: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let cloze = fixtures().join("recipes/cloze-tiny.toml");
    let run = d.join("run");
    let trained = mosaic(&[
        "train",
        s(&cloze),
        "--output",
        s(&run),
        "--set",
        "train.epochs=1",
    ]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let best = run.join("best");

    let bad_json = write(
        "bad_json.jsonl",
        b"{\"text\": \"ok\", \"label\": \"positive\"}\n{\"text\": \"no\n",
    );
    let missing_field = write("missing.jsonl", b"{\"label\": \"positive\"}\n");
    let unknown_label = write("unknown.jsonl", b"{\"text\": \"fine\", \"label\": \"positive\"}\n{\"text\": \"hm\", \"label\": \"mixed\"}\n");
    let empty = write("empty.jsonl", b"\n\n");
    let mut huge = b"{\"text\": \"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 8 << 20));
    huge.extend(b"\", \"label\": oops}\n");
    let huge = write("huge.jsonl", &huge);
    let unknown_key = write(
        "unknown_key.toml",
        b"name = \"x\"\nmodel = \"m\"\n[train]\nepohcs = 3\n",
    );
    let corrupt_image = write("corrupt.png", b"\x89PNG\r\n\x1a\nthis is not really a png");
    let wrong_shape = broken_model(d, "wrong_shape", |t| {
        t.insert(
            "pooler.dense.bias".into(),
            candle_core::Tensor::zeros(7, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap(),
        );
    });
    let missing_tensor = broken_model(d, "missing_tensor", |t| {
        t.remove("encoder.layer.0.output.dense.weight");
    });
    let clip = fixtures().join("models/tiny-clip");
    let cloze_with = |data: &Path| -> Vec<String> {
        ["train", s(&cloze), "--output", s(&d.join("r2")), "--set"]
            .iter()
            .map(|x| x.to_string())
            .chain([format!("data.train=\"{}\"", s(data))])
            .collect()
    };

    let cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "bad JSON line",
            cloze_with(&bad_json),
            "bad_json.jsonl:2".into(),
        ),
        (
            "missing field",
            cloze_with(&missing_field),
            "missing.jsonl:1".into(),
        ),
        (
            "unknown label",
            [
                "eval",
                "--checkpoint",
                s(&best),
                "--data",
                s(&unknown_label),
            ]
            .map(String::from)
            .to_vec(),
            "unknown.jsonl:2".into(),
        ),
        ("empty data set", cloze_with(&empty), "empty.jsonl".into()),
        ("huge line", cloze_with(&huge), "huge.jsonl:1".into()),
        (
            "unknown recipe key",
            ["train", s(&unknown_key)].map(String::from).to_vec(),
            "train.epochs".into(),
        ),
        (
            "wrong tensor shape",
            ["embed", "--model", s(&wrong_shape), "--text", "x"]
                .map(String::from)
                .to_vec(),
            "pooler.dense.bias".into(),
        ),
        (
            "missing tensor",
            ["embed", "--model", s(&missing_tensor), "--text", "x"]
                .map(String::from)
                .to_vec(),
            "encoder.layer.0.output.dense.weight".into(),
        ),
        (
            "corrupt image",
            [
                "zero-shot",
                "--model",
                s(&clip),
                "--image",
                s(&corrupt_image),
                "--labels",
                "cat,dog",
            ]
            .map(String::from)
            .to_vec(),
            "corrupt.png".into(),
        ),
    ];
    for (what, args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = mosaic(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: expected failure");
        assert!(
            !stderr.contains("panicked"),
            "{what}: panic reached the user: {stderr}"
        );
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(
            errors.len(),
            1,
            "{what}: want one error line, got: {stderr}"
        );
        assert!(
            errors[0].contains(&needle),
            "{what}: `{needle}` not in `{}`",
            errors[0]
        );
        assert!(
            errors[0].len() < 600,
            "{what}: the error line should be short: {}",
            errors[0]
        );
    }
}
