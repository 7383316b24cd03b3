//! `mosaic eval --data GT.json --predictions RESULTS.json [--json]` through the real binary: pycocotools' twelve
//! figures (fixtures/reference/coco_eval/, written by xtask/scripts/make_coco_eval_fixtures.py), and one clear
//! error line for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/reference/coco_eval")
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

fn expected_stats(case: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"][case]["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one `error:` line of a failed run.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

#[test]
fn prints_pycocotools_figures_as_text_and_json() {
    let gt = dir().join("mixed_gt.json");
    let results = dir().join("mixed_results.json");
    let want = expected_stats("mixed");

    let text = stdout(&mosaic(&[
        "eval",
        "--data",
        s(&gt),
        "--predictions",
        s(&results),
    ]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert_eq!(
        lines[0],
        format!(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {:.3}",
            want[0]
        )
    );
    assert_eq!(
        lines[11],
        format!(
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = {:.3}",
            want[11]
        )
    );

    let json = stdout(&mosaic(&[
        "eval",
        "--data",
        s(&gt),
        "--predictions",
        s(&results),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 12);
    for (name, want) in NAMES.iter().zip(&want) {
        let got = obj[*name].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-6, "{name}: {got} vs {want}");
    }
}

#[test]
fn bad_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let gt = dir().join("crowd_gt.json");
    let results = dir().join("crowd_results.json");
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };

    let e = error_line(&mosaic(&["eval", "--data", s(&gt)]));
    assert!(
        e.contains("--checkpoint") && e.contains("--predictions"),
        "{e}"
    );
    let e = error_line(&mosaic(&[
        "eval",
        "--data",
        s(&gt),
        "--predictions",
        s(&results),
        "--checkpoint",
        s(tmp.path()),
    ]));
    assert!(e.contains("not both"), "{e}");

    let bad = write(
        "res.json",
        r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
            {"image_id": 77, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]"#,
    );
    let e = error_line(&mosaic(&[
        "eval",
        "--data",
        s(&gt),
        "--predictions",
        s(&bad),
    ]));
    assert!(
        e.contains(&format!(
            "{}: results[1]: unknown image_id 77",
            bad.display()
        )),
        "{e}"
    );
    let bad = write("obj.json", r#"{"annotations": []}"#);
    let e = error_line(&mosaic(&[
        "eval",
        "--data",
        s(&gt),
        "--predictions",
        s(&bad),
    ]));
    assert!(e.contains("a COCO results file is a JSON list"), "{e}");

    let bad_gt = write(
        "gt.json",
        r#"{"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 17, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]}]}"#,
    );
    let e = error_line(&mosaic(&[
        "eval",
        "--data",
        s(&bad_gt),
        "--predictions",
        s(&results),
    ]));
    assert!(
        e.contains(&format!(
            "{}: annotation 17 (index 0): unknown image_id 99",
            bad_gt.display()
        )),
        "{e}"
    );
}
