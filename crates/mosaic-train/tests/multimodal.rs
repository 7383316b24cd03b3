//! Multimodal classification end to end: CLIP's vision tower (`fixtures/models/tiny-clip`) and a tiny BERT
//! (`fixtures/models/tiny-bert`) joined by each fusion train on a small JSONL set written here, write a report
//! with accuracy and checkpoints of the new parameters only; bad rows are errors naming `file:line`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mosaic_train::multimodal::{FusionKind, MultimodalClassifier};
use mosaic_train::observer::Silent;
use mosaic_train::recipe::Recipe;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const IMAGES: &[&str] = &[
    "photo.jpg",
    "landscape.png",
    "palette.png",
    "gray.jpg",
    "portrait_gray.png",
    "rgba.png",
];

/// `dir/images/*` copied from the fixtures, and `dir/{name}.jsonl` with `n` rows (label `true` for the colour
/// images, whose texts also say so).
fn write_rows(dir: &Path, name: &str, n: usize) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for image in IMAGES {
        std::fs::copy(
            root().join("fixtures/images").join(image),
            images.join(image),
        )
        .unwrap();
    }
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let image = IMAGES[i % IMAGES.len()];
            let colour = !image.contains("gray");
            let text = if colour {
                "a bright colourful picture"
            } else {
                "a dull grey picture"
            };
            serde_json::json!({ "image": format!("images/{image}"), "text": text, "label": colour.to_string() })
                .to_string()
        })
        .collect();
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path
}

fn recipe(dir: &Path, fusion: &str, out: &Path) -> Recipe {
    let models = root().join("fixtures/models");
    let train = write_rows(dir, "train", 12);
    let test = write_rows(dir, "test", 6);
    let text = format!(
        "model = \"{}\"\nvision_model = \"{}\"\ntask = \"multimodal-classification\"\nfusion = \"{fusion}\"\n\
         output = \"{}\"\n[data]\ntrain = \"{}\"\nvalid = \"{}\"\ntest = \"{}\"\n\
         [train]\nepochs = 2\nbatch_size = 4\nlr = 1e-2\nseed = 5\n",
        models.join("tiny-bert").display(),
        models.join("tiny-clip").display(),
        out.display(),
        train.display(),
        test.display(),
        test.display(),
    );
    Recipe::from_toml_str(&text, "multimodal-test.toml").unwrap()
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn every_fusion_trains_end_to_end_and_only_the_new_parameters_train() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("fixtures/models");
    for fusion in [
        "concat",
        "cross-attention",
        "weighted-sum",
        "image-only",
        "text-only",
    ] {
        let out = dir.path().join(fusion);
        let r = recipe(dir.path(), fusion, &out);
        mosaic_train::pipeline::run(&r, &mut Silent).unwrap();
        let rep = report(&out);
        assert_eq!(rep["fusion"], fusion);
        for when in ["before", "after"] {
            let acc = rep[when]["metrics"]["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{fusion} {when}: {rep}");
        }
        // Only the fusion and the head train: the trainable count is the new parameters', and the checkpoint
        // holds those alone, moved from their seeded initialisation.
        let kind = FusionKind::parse(Some(fusion)).unwrap();
        let fresh = MultimodalClassifier::load(
            &models.join("tiny-clip"),
            &models.join("tiny-bert"),
            kind,
            2,
            true,
            5,
            &Device::Cpu,
        )
        .unwrap();
        let head: usize = fresh
            .head_params()
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum();
        assert_eq!(
            rep["trainable_parameters"].as_u64().unwrap() as usize,
            head,
            "{fusion}"
        );
        let best = weights(&out.join("best/head.safetensors"));
        let mut moved = false;
        for (name, var) in fresh.head_params() {
            assert!(
                name.starts_with("fusion.") || name.starts_with("classifier."),
                "{name}"
            );
            moved |= mosaic_models::testing::max_abs_diff(&best[&name], var.as_tensor()) > 0.0;
        }
        assert!(moved, "{fusion}: no head parameter moved");
        assert_eq!(best.len(), fresh.head_params().len());
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("best/mosaic.json")).unwrap())
                .unwrap();
        assert_eq!(meta["task"], "multimodal-classification");
        assert_eq!(meta["labels"], serde_json::json!(["false", "true"]));
        assert!(Path::new(meta["vision_model"].as_str().unwrap()).is_absolute());
        let weights_reported = rep["after"]["fusion_weights"]["image"].as_f64();
        if fusion == "weighted-sum" {
            let (image, text) = (
                weights_reported.unwrap(),
                rep["after"]["fusion_weights"]["text"].as_f64().unwrap(),
            );
            assert!((image + text - 1.0).abs() < 1e-4, "{rep}");
        } else {
            assert!(weights_reported.is_none());
        }
    }
}

#[test]
fn bad_rows_are_errors_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = recipe(dir.path(), "concat", &out);
    // Line 3 of the training file has no text.
    let train = r.data.train.clone().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&train)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[2] = r#"{"image": "images/photo.jpg", "label": "true"}"#.into();
    std::fs::write(&train, lines.join("\n")).unwrap();
    let err = mosaic_train::pipeline::run(&r, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.jsonl:3") && err.contains("`text`"),
        "{err}"
    );

    // An unknown label in the test file names its line.
    let r = recipe(dir.path(), "concat", &out);
    let test = r.data.test.clone().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&test)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[1] = r#"{"image": "images/photo.jpg", "text": "x", "label": "maybe"}"#.into();
    std::fs::write(&test, lines.join("\n")).unwrap();
    // The validation file is the same file here: it is read first and fails on the same line.
    let err = mosaic_train::pipeline::run(&r, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test.jsonl:2") && err.contains("maybe"),
        "{err}"
    );

    // A missing image names its line too.
    let r = recipe(dir.path(), "concat", &out);
    let train = r.data.train.clone().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&train)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[0] = r#"{"image": "images/nope.png", "text": "x", "label": "true"}"#.into();
    std::fs::write(&train, lines.join("\n")).unwrap();
    let err = mosaic_train::pipeline::run(&r, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.jsonl:1") && err.contains("nope.png"),
        "{err}"
    );
}

#[test]
fn recipe_keys_of_multimodal_classification_are_checked() {
    let base = "model = \"m\"\ntask = \"multimodal-classification\"\n[data]\ntrain = \"t.jsonl\"\n";
    let err = Recipe::from_toml_str(base, "r.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("vision_model"), "{err}");
    let ok =
        format!("vision_model = \"v\"\nfusion = \"weighted-sum\"\nfreeze_towers = false\n{base}");
    let r = Recipe::from_toml_str(&ok, "r.toml").unwrap();
    assert_eq!(r.train.metric, "accuracy");
    assert_eq!(r.freeze_towers, Some(false));
    let err = Recipe::from_toml_str(
        &format!("vision_model = \"v\"\nfusion = \"sum\"\n{base}"),
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("fusion"), "{err}");
    // Other tasks do not read the new keys.
    let err = Recipe::from_toml_str(
        "model = \"m\"\nfusion = \"concat\"\n[data]\ntrain = \"t.jsonl\"\n",
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("fusion"), "{err}");
}
