//! `task = "detection"` end to end (issue 16): a few images of the bundled shapes-detection set, one epoch on the
//! tiny DETR fixture; the run folder's report, metrics, checkpoint and drawing; and bad COCO input naming the
//! entry.

use std::path::{Path, PathBuf};

use mosaic_train::detection::DetectionCheckpoint;
use mosaic_train::observer::Silent;
use mosaic_train::pipeline::{self, RunOptions};
use mosaic_train::recipe::Recipe;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The first `n` images of a shapes-detection split, with their annotations, as a COCO file in `dir` (images
/// copied beside it), plus the data set's processor settings.
fn write_split(dir: &Path, split: &str, n: usize) -> PathBuf {
    let src = fixtures().join("data/shapes-detection");
    let text = std::fs::read_to_string(src.join(format!("{split}.json"))).unwrap();
    let mut coco: serde_json::Value = serde_json::from_str(&text).unwrap();
    let images: Vec<serde_json::Value> = coco["images"].as_array().unwrap()[..n].to_vec();
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
    let path = dir.join(format!("{split}.json"));
    std::fs::write(&path, serde_json::to_string(&coco).unwrap()).unwrap();
    std::fs::copy(
        src.join("preprocessor_config.json"),
        dir.join("preprocessor_config.json"),
    )
    .unwrap();
    path
}

fn recipe(data: &Path, out: &Path) -> Recipe {
    recipe_with(data, out, &[])
}

/// The toy recipe with `key=value` overrides.
fn recipe_with(data: &Path, out: &Path, extra: &[String]) -> Recipe {
    let text = format!(
        r#"
name = "detr-toy"
model = "{model}"
task = "detection"
output = "{out}"

[data]
train = "{data}/train.json"
valid = "{data}/valid.json"
test = "{data}/test.json"

[train]
epochs = 1
batch_size = 4
lr = 1e-3
warmup = 0
schedule = "constant"
seed = 3
"#,
        model = fixtures().join("models/tiny-detr").display(),
        out = out.display(),
        data = data.display(),
    );
    Recipe::from_toml_str_with_overrides(&text, "detr-toy.toml", extra).unwrap()
}

fn toy_data() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_split(&data, "train", 8);
    write_split(&data, "valid", 4);
    write_split(&data, "test", 4);
    (tmp, data)
}

#[test]
fn one_epoch_writes_the_run_folder_and_a_loadable_checkpoint() {
    let (tmp, data) = toy_data();
    let out = tmp.path().join("run");
    let summary = pipeline::run(&recipe(&data, &out), &mut Silent).unwrap();
    assert!(summary.before.is_some() && summary.after.is_some());

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["task"], "detection");
    assert_eq!(report["evaluated_on"], "test");
    assert_eq!(
        report["labels"],
        serde_json::json!(["square", "circle", "triangle"])
    );
    for side in ["before", "after"] {
        for key in ["map", "map50"] {
            let v = report[side]["metrics"][key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{side} {key} = {v}");
        }
        assert!(report[side]["coco"]["AP"].is_number());
    }

    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["type"] == "train")
        .collect();
    assert!(!steps.is_empty());
    for key in ["loss", "loss_ce", "loss_bbox", "loss_giou"] {
        assert!(
            steps
                .iter()
                .all(|r| r[key].as_f64().is_some_and(f64::is_finite)),
            "{key} missing from a step record"
        );
    }
    assert!(metrics.contains("\"map50\""));

    assert!(out.join("detections.png").is_file());
    assert!(out.join("training.svg").is_file());
    let best = out.join("best");
    for file in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "mosaic.json",
    ] {
        assert!(best.join(file).is_file(), "best/{file}");
    }
    let checkpoint = DetectionCheckpoint::open(&best, &candle_core::Device::Cpu).unwrap();
    assert_eq!(checkpoint.meta.category_ids, vec![1, 2, 3]);
    assert_eq!(checkpoint.model.config.labels, checkpoint.meta.labels);
    // The reloaded checkpoint scores the test split as the run did.
    let e = checkpoint
        .evaluate(&data.join("test.json"), 4, &candle_core::Device::Cpu)
        .unwrap();
    let after = report["after"]["metrics"]["map"].as_f64().unwrap();
    assert!((e.metrics["map"] - after).abs() < 1e-9);
}

fn corrupt(data: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = data.join("train.json");
    let mut coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut coco);
    std::fs::write(&path, serde_json::to_string(&coco).unwrap()).unwrap();
}

fn run_err(data: &Path, out: &Path) -> String {
    run_err_with(data, out, &[])
}

fn run_err_with(data: &Path, out: &Path, extra: &[String]) -> String {
    match pipeline::run(&recipe_with(data, out, extra), &mut Silent) {
        Ok(_) => panic!("the run should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_annotation_for_an_unknown_image_or_category_names_the_entry() {
    let (tmp, data) = toy_data();
    corrupt(&data, |c| c["annotations"][0]["image_id"] = 99999.into());
    let err = run_err(&data, &tmp.path().join("run"));
    assert!(err.contains("train.json") && err.contains("99999"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let (tmp, data) = toy_data();
    corrupt(&data, |c| c["annotations"][1]["category_id"] = 42.into());
    let err = run_err(&data, &tmp.path().join("run"));
    assert!(err.contains("train.json") && err.contains("42"), "{err}");
}

#[test]
fn a_validation_split_with_other_categories_is_refused() {
    let (tmp, data) = toy_data();
    let path = data.join("valid.json");
    let mut coco: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    coco["categories"][0]["name"] = "box".into();
    std::fs::write(&path, serde_json::to_string(&coco).unwrap()).unwrap();
    let err = run_err(&data, &tmp.path().join("run"));
    assert!(
        err.contains("valid.json") && err.contains("categories"),
        "{err}"
    );
}

/// From scratch (`init = "random"`: the backbone's batch norms train, with running statistics) and with the
/// detection augmentation on, an interrupted run resumes to the same weights, statistics and metrics as a run
/// never interrupted.
#[test]
fn a_from_scratch_augmented_run_resumes_exactly() {
    let (tmp, data) = toy_data();
    let extra = [
        "init=random".to_string(),
        "train.epochs=2".into(),
        "data.augment.hflip_prob=0.5".into(),
        "data.augment.crop_prob=0.7".into(),
        "data.augment.crop_scale=[0.5, 0.9]".into(),
    ];
    let reference = tmp.path().join("reference");
    pipeline::run(&recipe_with(&data, &reference, &extra), &mut Silent).unwrap();
    let saved = candle_core::safetensors::load(
        reference.join("last/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    // The running statistics moved away from a fresh norm's (mean 0), so they are trained and saved.
    let mean =
        &saved["model.backbone.conv_encoder.model.embedder.embedder.normalization.running_mean"];
    let moved = mean
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-4, "running mean {moved}");

    let out = tmp.path().join("run");
    let stop = std::sync::atomic::AtomicBool::new(true);
    let options = RunOptions {
        resume: false,
        stop: Some(&stop),
        ..Default::default()
    };
    let err = match pipeline::run_with(&recipe_with(&data, &out, &extra), &mut Silent, options) {
        Ok(_) => panic!("expected the interrupt"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("interrupted at step 1"), "{err}");
    let options = RunOptions {
        resume: true,
        stop: None,
        ..Default::default()
    };
    pipeline::run_with(&recipe_with(&data, &out, &extra), &mut Silent, options).unwrap();
    for file in [
        "last/model.safetensors",
        "best/model.safetensors",
        "metrics.jsonl",
    ] {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(reference.join(file)).unwrap(),
            "{file}"
        );
    }
}

/// `[data.augment]` keys detection does not read are refused by name, and bad values too.
#[test]
fn an_image_classification_augment_key_is_refused_for_detection() {
    let (tmp, data) = toy_data();
    let bad = ["data.augment.brightness=0.3".to_string()];
    let err = run_err_with(&data, &tmp.path().join("a"), &bad);
    assert!(err.contains("data.augment.brightness"), "{err}");
    let bad = ["data.augment.crop_scale=[0.9, 0.2]".to_string()];
    let err = run_err_with(&data, &tmp.path().join("b"), &bad);
    assert!(
        err.contains("data.augment") && err.contains("crop_scale"),
        "{err}"
    );
}
