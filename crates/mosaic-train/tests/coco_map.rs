//! COCO box mAP against pycocotools' `COCOeval`: the twelve `stats`, the recall array and the per-category AP of
//! each case written to fixtures/reference/coco_eval/ by xtask/scripts/make_coco_eval_fixtures.py; and the errors
//! of bad results and ground-truth files.

use std::path::{Path, PathBuf};

use mosaic_data::CocoDataset;
use mosaic_train::metrics::coco_map::{
    AREA_RANGES, CocoDetection, CocoStats, MAX_DETS, evaluate, iou_thresholds, load_results,
    parse_results, recall_thresholds,
};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/reference/coco_eval")
}

fn expected() -> Value {
    let path = dir().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(actual: f64, expected: f64, tol: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: {actual} vs {expected}"
    );
}

fn check_case(name: &str, case: &Value) {
    let gt = CocoDataset::load(dir().join(format!("{name}_gt.json"))).unwrap();
    let results = dir().join(format!("{name}_results.json"));
    let detections = if results.exists() {
        load_results(&results, &gt).unwrap()
    } else {
        Vec::new()
    };
    let e = evaluate(&gt, &detections).unwrap();

    let stats = e.stats().values();
    for (i, (&ours, want)) in stats.iter().zip(f64s(&case["stats"])).enumerate() {
        assert_close(
            ours,
            want,
            TOL,
            &format!("{name}: stats[{i}] ({})", CocoStats::NAMES[i]),
        );
    }
    // recall[T, K, A, M] in C order.
    let recall = f64s(&case["recall"]);
    let k_n = e.categories().len();
    assert_eq!(
        recall.len(),
        10 * k_n * AREA_RANGES.len() * MAX_DETS.len(),
        "{name}"
    );
    let mut n = 0;
    for t in 0..10 {
        for k in 0..k_n {
            for a in 0..AREA_RANGES.len() {
                for m in 0..MAX_DETS.len() {
                    let ours = e.recall(t, k, a, m).unwrap();
                    assert_close(
                        ours,
                        recall[n],
                        TOL,
                        &format!("{name}: recall[{t},{k},{a},{m}]"),
                    );
                    n += 1;
                }
            }
        }
    }
    let want: Vec<(i64, f64)> = case["category_ap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    let ours = e.category_ap();
    assert_eq!(ours.len(), want.len(), "{name}");
    for ((id, ap), (want_id, want_ap)) in ours.into_iter().zip(want) {
        assert_eq!(id, want_id, "{name}");
        assert_close(ap, want_ap, TOL, &format!("{name}: AP of category {id}"));
    }
}

#[test]
fn stats_match_pycocotools_on_every_case() {
    let expected = expected();
    let cases = expected["cases"].as_object().unwrap();
    for name in ["mixed", "random", "crowd", "id_zero", "empty"] {
        check_case(name, &cases[name]);
    }
    assert_eq!(cases.len(), 5, "a new fixture case needs adding here");
}

#[test]
fn thresholds_are_bit_equal_to_numpy() {
    let expected = expected();
    let case = &expected["cases"]["mixed"];
    assert_eq!(iou_thresholds().to_vec(), f64s(&case["iouThrs"]));
    assert_eq!(recall_thresholds().to_vec(), f64s(&case["recThrs"]));
}

#[test]
fn in_memory_detections_score_as_the_file() {
    let gt = CocoDataset::load(dir().join("mixed_gt.json")).unwrap();
    let path = dir().join("mixed_results.json");
    let from_file = load_results(&path, &gt).unwrap();
    // The same detections built in memory, as a detection task hands them over.
    let text = std::fs::read_to_string(&path).unwrap();
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    let in_memory: Vec<CocoDetection> = rows
        .iter()
        .map(|r| CocoDetection {
            image_id: r["image_id"].as_i64().unwrap(),
            category_id: r["category_id"].as_i64().unwrap(),
            bbox: f64s(&r["bbox"]).try_into().unwrap(),
            score: r["score"].as_f64().unwrap(),
        })
        .collect();
    assert_eq!(from_file, in_memory);
    let a = evaluate(&gt, &from_file).unwrap();
    let b = evaluate(&gt, &in_memory).unwrap();
    assert_eq!(a.stats(), b.stats());
}

fn gt() -> CocoDataset {
    CocoDataset::load(dir().join("crowd_gt.json")).unwrap()
}

fn results_error(text: &str) -> String {
    parse_results(text, Path::new("res.json"), &gt())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_results_files_name_the_entry() {
    assert_eq!(
        results_error(r#"{"annotations": []}"#),
        "res.json: top level: a COCO results file is a JSON list of detections, found an object"
    );
    assert_eq!(
        results_error(r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]"#),
        "res.json: results[0]: missing key `score`"
    );
    let m = results_error(
        r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1},
            {"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]"#,
    );
    assert!(
        m.starts_with("res.json: results[1]: unknown image_id 99 (not an image of"),
        "{m}"
    );
    let m =
        results_error(r#"[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}]"#);
    assert!(
        m.starts_with("res.json: results[0]: unknown category_id 3"),
        "{m}"
    );
    let m = results_error("not json");
    assert!(
        m.starts_with("res.json: line 1 column ") && m.contains("not valid JSON"),
        "{m}"
    );
    let e = load_results(Path::new("/nonexistent/res.json"), &gt())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/res.json: file: cannot read"),
        "{e}"
    );
}

#[test]
fn bad_ground_truth_files_name_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let img = r#"{"id": 1, "file_name": "a.png", "width": 50, "height": 40}"#;
    let cat = r#"{"id": 1, "name": "a"}"#;
    let bad = [
        (
            r#"{"id": 17, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]}"#,
            "annotation 17 (index 0): unknown image_id 99",
        ),
        (
            r#"{"id": 17, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2]}"#,
            "annotation 17 (index 0): unknown category_id 2",
        ),
        (
            r#"{"id": 17, "image_id": 1, "category_id": 1, "bbox": [1, 1, -2, 2]}"#,
            "annotation 17 (index 0): bbox [1.0, 1.0, -2.0, 2.0] has a width or height that is not positive",
        ),
        (
            r#"{"id": 17, "image_id": 1, "category_id": 1, "bbox": [40, 1, 20, 2]}"#,
            "annotation 17 (index 0): bbox [40.0, 1.0, 20.0, 2.0] lies outside image 1 (50x40) by more than 1 pixel",
        ),
        (
            r#"{"id": 17, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2]}"#,
            "annotations[0].bbox: expected [x, y, w, h] (4 numbers), found [1,1,2]",
        ),
    ];
    for (annotation, message) in bad {
        let p = write(
            "gt.json",
            &format!(
                r#"{{"images": [{img}], "categories": [{cat}], "annotations": [{annotation}]}}"#
            ),
        );
        let e = CocoDataset::load(&p).unwrap_err().to_string();
        assert_eq!(e, format!("{}: {message}", p.display()));
    }
}
