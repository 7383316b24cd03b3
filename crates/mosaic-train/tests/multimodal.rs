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
            true.into(),
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
    let image = Recipe::from_toml_str(&ok.replace("= false", "= \"image\""), "r.toml").unwrap();
    assert_eq!(
        image.freeze_towers,
        Some(mosaic_train::recipe::FreezeTowers::Image)
    );
    let err = Recipe::from_toml_str(&ok.replace("= false", "= \"both\""), "r.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("freeze_towers") && err.contains("\"image\""),
        "{err}"
    );
    assert_eq!(r.train.metric, "accuracy");
    assert_eq!(
        r.freeze_towers,
        Some(mosaic_train::recipe::FreezeTowers::Neither)
    );
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

#[test]
fn cached_tower_features_give_the_logits_of_running_the_towers() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("fixtures/models");
    let train = write_rows(dir.path(), "train", 7);
    for fusion in ["concat", "cross-attention", "weighted-sum"] {
        let kind = FusionKind::parse(Some(fusion)).unwrap();
        let model = MultimodalClassifier::load(
            &models.join("tiny-clip"),
            &models.join("tiny-bert"),
            kind,
            2,
            true.into(),
            5,
            &Device::Cpu,
        )
        .unwrap();
        model.set_training(false);
        let processor =
            mosaic_data::image::ImageProcessor::from_folder(&models.join("tiny-clip")).unwrap();
        let encoder =
            mosaic_data::Encoder::from_file(models.join("tiny-bert/tokenizer.json")).unwrap();
        let fields = mosaic_train::multimodal::Fields {
            image: "image".into(),
            text: "text".into(),
            label: "label".into(),
        };
        let labels = vec!["false".to_string(), "true".to_string()];
        let reader = mosaic_train::multimodal::PairReader {
            fields: &fields,
            labels: &labels,
            processor: &processor,
            encoder: &encoder,
            max_length: 32,
            needs_labels: true,
        };
        let mut set = reader.load(&train, &Device::Cpu).unwrap();
        let rows = [4usize, 0, 6];
        let direct = model.forward(&set.batch(&rows).unwrap()).unwrap().logits;
        // Cached in batches of 3, so rows come from different chunks padded to the split's longest text.
        model.cache_features(&mut set, 3).unwrap();
        let batch = set.batch(&rows).unwrap();
        assert!(batch.features.is_some());
        let cached = model.forward(&batch).unwrap().logits;
        let diff = mosaic_models::testing::max_abs_diff(&direct, &cached);
        assert!(diff < 1e-5, "{fusion}: cached features differ by {diff}");
    }
}

#[test]
fn checkpoints_evaluate_and_predict_and_keep_towers_that_trained() {
    let dir = tempfile::tempdir().unwrap();
    use mosaic_train::recipe::FreezeTowers;
    for freeze in [
        FreezeTowers::Both,
        FreezeTowers::Neither,
        FreezeTowers::Image,
        FreezeTowers::Text,
    ] {
        let out = dir.path().join(format!("run-{freeze:?}"));
        let mut r = recipe(dir.path(), "concat", &out);
        r.freeze_towers = Some(freeze);
        r.train.epochs = 1;
        mosaic_train::pipeline::run(&r, &mut Silent).unwrap();
        let best = out.join("best");
        assert!(mosaic_train::multimodal::is_multimodal_checkpoint(&best));
        // Towers that trained are saved beside the head, as HF folders the checkpoint names.
        assert_eq!(
            best.join("vision/config.json").is_file(),
            !freeze.image_frozen()
        );
        assert_eq!(
            best.join("text/tokenizer.json").is_file(),
            !freeze.text_frozen()
        );
        // The count of trainable parameters says which towers trained.
        let rep = report(&out);
        let trainable = rep["trainable_parameters"].as_u64().unwrap() as usize;
        let model = MultimodalClassifier::load(
            &root().join("fixtures/models/tiny-clip"),
            &root().join("fixtures/models/tiny-bert"),
            FusionKind::Concat,
            2,
            freeze,
            5,
            &Device::Cpu,
        )
        .unwrap();
        let pool: usize = model
            .trainable_pool()
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum();
        assert_eq!(trainable, pool, "{freeze:?}");
        let loaded = mosaic_train::multimodal::load(&best, &Device::Cpu).unwrap();
        let test = r.data.test.clone().unwrap();
        let e = loaded.evaluate(&test, 4).unwrap();
        let rep = report(&out);
        let after = rep["after"]["metrics"]["accuracy"].as_f64().unwrap();
        assert!(
            (e.evaluation.metrics["accuracy"] - after).abs() < 1e-9,
            "freeze {freeze:?}: {} vs {after}",
            e.evaluation.metrics["accuracy"]
        );
        let predictions = loaded.predict(&test, 4).unwrap();
        assert_eq!(predictions.len(), 6);
        for (label, probs) in &predictions {
            assert!(label == "true" || label == "false");
            assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
    let err = match mosaic_train::multimodal::load(dir.path(), &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a folder without mosaic.json loaded"),
    };
    assert!(err.contains("mosaic.json"), "{err}");
}

#[test]
fn loss_weights_are_checked_against_the_task_objectives() {
    let t2i = "model = \"m\"\ntask = \"text-to-image\"\n[data]\ntrain = \"t.json\"\n";
    let with = |table: &str| Recipe::from_toml_str(&format!("{t2i}[loss]\n{table}\n"), "r.toml");
    let r = with("image = 1\ncaption = 0.5").unwrap();
    assert_eq!(
        r.objective_weights(),
        vec![("image", 1.0), ("caption", 0.5), ("contrastive", 0.0)]
    );
    let r = Recipe::from_toml_str(t2i, "r.toml").unwrap();
    assert_eq!(r.objective_weights()[0], ("image", 1.0));
    for (table, needle) in [
        ("image = -1", "loss.image"),
        (
            "image = 1\nclassification = 1",
            "no objective `classification`",
        ),
        ("image = 0", "at least one objective"),
        ("image = \"big\"", "loss.image"),
    ] {
        let err = with(table).unwrap_err().to_string();
        assert!(err.contains(needle), "{table}: {err}");
    }
    // A task with one loss reads no [loss] table.
    let err = Recipe::from_toml_str(
        "model = \"m\"\n[data]\ntrain = \"t.jsonl\"\n[loss]\nclassification = 1\n",
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("loss"), "{err}");
}

#[test]
fn vit_and_resnet_image_towers_and_the_clip_text_tower_train() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("fixtures/models");
    for (image, text, fusion) in [
        ("tiny-vit", "tiny-bert", "cross-attention"),
        ("tiny-resnet", "tiny-clip", "concat"),
        ("tiny-clip", "tiny-clip", "weighted-sum"),
    ] {
        let out = dir.path().join(format!("{image}-{text}"));
        let mut r = recipe(dir.path(), fusion, &out);
        r.vision_model = Some(models.join(image).display().to_string());
        r.model = models.join(text).display().to_string();
        r.train.epochs = 1;
        mosaic_train::pipeline::run(&r, &mut Silent).unwrap();
        let rep = report(&out);
        let acc = rep["after"]["metrics"]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{image} + {text}: {rep}");
        let loaded = mosaic_train::multimodal::load(&out.join("best"), &Device::Cpu).unwrap();
        let e = loaded.evaluate(&r.data.test.clone().unwrap(), 4).unwrap();
        assert!((e.evaluation.metrics["accuracy"] - acc).abs() < 1e-9);
    }
    // A folder of another kind is refused, naming its config.json and what is supported.
    let out = dir.path().join("gpt2");
    let mut r = recipe(dir.path(), "concat", &out);
    r.vision_model = Some(models.join("tiny-gpt2").display().to_string());
    let err = mosaic_train::pipeline::run(&r, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("clip, vit, resnet"),
        "{err}"
    );
}
