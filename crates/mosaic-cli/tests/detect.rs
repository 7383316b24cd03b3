//! `mosaic detect` and `mosaic eval --checkpoint DETR --data GT.json` through the real binary (issue 16), on a
//! detection checkpoint made from the tiny DETR fixture (its labels mapped to the shapes set's category ids).

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

/// The tiny DETR with the data set's processor and a `mosaic.json`: circle, square, triangle → 2, 1, 3.
fn checkpoint(dir: &Path) -> PathBuf {
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("models/tiny-detr").join(f), ckpt.join(f)).unwrap();
    }
    std::fs::copy(
        fixtures().join("data/shapes-detection/preprocessor_config.json"),
        ckpt.join("preprocessor_config.json"),
    )
    .unwrap();
    let meta = serde_json::json!({
        "task": "detection", "model_type": "detr", "labels": ["circle", "square", "triangle"],
        "category_ids": [2, 1, 3], "base_model": "tiny-detr", "init": "pretrained", "epoch": 0, "step": 0,
    });
    std::fs::write(ckpt.join("mosaic.json"), meta.to_string()).unwrap();
    ckpt
}

/// A ground truth of the first 3 test images (their files stay where they are: the GT file sits beside them).
fn ground_truth(dir: &Path) -> PathBuf {
    let src = fixtures().join("data/shapes-detection");
    let mut coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("test.json")).unwrap()).unwrap();
    let images: Vec<serde_json::Value> = coco["images"].as_array().unwrap()[..3].to_vec();
    let ids: Vec<i64> = images.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for image in &images {
        let name = image["file_name"].as_str().unwrap();
        std::fs::copy(src.join(name), dir.join(name)).unwrap();
    }
    let annotations: Vec<serde_json::Value> = coco["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| ids.contains(&a["image_id"].as_i64().unwrap()))
        .cloned()
        .collect();
    coco["images"] = images.into();
    coco["annotations"] = annotations.into();
    let path = dir.join("gt.json");
    std::fs::write(&path, coco.to_string()).unwrap();
    path
}

fn image() -> PathBuf {
    fixtures().join("data/shapes-detection/images/test-0000.png")
}

fn detections(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["detections"].as_array().unwrap().clone()
}

#[test]
fn detect_json_gives_labelled_boxes_and_threshold_zero_keeps_every_query() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(tmp.path());
    let all = detections(&mosaic(&[
        "detect",
        "--model",
        s(&ckpt),
        "--image",
        s(&image()),
        "--threshold",
        "0",
        "--json",
    ]));
    // The fixture has 6 object queries.
    assert_eq!(all.len(), 6);
    for d in &all {
        let label = d["label"].as_str().unwrap();
        let id = d["label_id"].as_u64().unwrap() as usize;
        assert_eq!(label, ["circle", "square", "triangle"][id]);
        let score = d["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        let b: Vec<f64> = d["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(b.len(), 4);
        // Boxes in pixels of the 64x64 image: the centre and size come from a sigmoid, so the centre lies inside
        // it and each side is at most the image's (the corners are left unclipped, as transformers leaves them).
        assert!(b[0] <= b[2] && b[1] <= b[3], "{b:?}");
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        assert!(
            (0.0..=64.0).contains(&cx) && (0.0..=64.0).contains(&cy),
            "{b:?}"
        );
        assert!(b[2] - b[0] <= 64.01 && b[3] - b[1] <= 64.01, "{b:?}");
    }
    let kept = detections(&mosaic(&[
        "detect",
        "--model",
        s(&ckpt),
        "--image",
        s(&image()),
        "--json",
    ]));
    assert!(kept.iter().all(|d| d["score"].as_f64().unwrap() > 0.5));
}

#[test]
fn detect_writes_a_coco_results_file_that_eval_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(tmp.path());
    let gt = ground_truth(tmp.path());
    let results = tmp.path().join("results.json");
    let out = mosaic(&[
        "detect",
        "--model",
        s(&ckpt),
        "--image",
        s(&tmp.path().join("images")),
        "--data",
        s(&gt),
        "--output",
        s(&results),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    // Threshold 0 by default with --output: every query of the 3 images.
    assert_eq!(list.len(), 18);
    assert!(
        list.iter()
            .all(|r| [1, 2, 3].contains(&r["category_id"].as_i64().unwrap()))
    );
    let scored = mosaic(&[
        "eval",
        "--data",
        s(&gt),
        "--predictions",
        s(&results),
        "--json",
    ]);
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );

    // Running the checkpoint through `mosaic eval` gives the same twelve figures.
    let direct = mosaic(&["eval", "--checkpoint", s(&ckpt), "--data", s(&gt), "--json"]);
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let a: serde_json::Value = serde_json::from_slice(&direct.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 12, "{a}");
    for k in keys {
        let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
        assert!((x - y).abs() < 1e-6, "{k}: {x} vs {y}");
    }
}

#[test]
fn bad_detect_input_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(tmp.path());
    for args in [
        vec!["detect", "--model", s(&ckpt), "--image", "/no/such.png"],
        vec![
            "detect",
            "--model",
            s(&ckpt),
            "--image",
            s(&image()),
            "--threshold",
            "2",
        ],
        vec![
            "detect",
            "--model",
            "/no/such/model",
            "--image",
            s(&image()),
        ],
    ] {
        let out = mosaic(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
