//! Image classification end to end on a toy set written here (bright vs dark 8×8 PNGs): a tiny ViT and a tiny
//! ResNet trained from scratch learn it, checkpoints load back and predict exactly what training measured, the
//! same seed gives the same run, and bad input (an empty label folder, an unreadable image, an unknown
//! `model_type`) is a one-line error naming the file.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_train::image_classification::{self, ImageCheckpoint};
use mosaic_train::observer::Silent;
use mosaic_train::pipeline::{self, RunOptions, RunSummary};
use mosaic_train::recipe::Recipe;

/// A small deterministic generator for pixel noise.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 59) as u8 // 0..32
    }
}

/// Writes `count` 8×8 PNGs of `class` (`bright` or `dark`) into `dir/class/`; grayscale and RGB alternate.
fn write_images(dir: &Path, class: &str, count: usize, seed: u64) {
    let folder = dir.join(class);
    std::fs::create_dir_all(&folder).unwrap();
    let mut rng = Lcg(seed);
    let base: u8 = if class == "bright" { 200 } else { 30 };
    for i in 0..count {
        let path = folder.join(format!("{i:02}.png"));
        if i % 2 == 0 {
            image::GrayImage::from_fn(8, 8, |_, _| image::Luma([base + rng.next()]))
                .save(&path)
                .unwrap();
        } else {
            image::RgbImage::from_fn(8, 8, |_, _| {
                let v = base + rng.next();
                image::Rgb([v, v, v.saturating_sub(10)])
            })
            .save(&path)
            .unwrap();
        }
    }
}

/// `root/{train,valid,test}/{bright,dark}/*.png`.
fn write_toy_set(root: &Path) {
    for (split, count, seed) in [("train", 12, 1), ("valid", 4, 2), ("test", 4, 3)] {
        for (k, class) in ["bright", "dark"].iter().enumerate() {
            write_images(&root.join(split), class, count, seed * 10 + k as u64);
        }
    }
}

const PREPROCESSOR: &str = r#"{
  "image_processor_type": "ViTImageProcessor",
  "do_resize": true, "size": {"height": 8, "width": 8}, "resample": 2,
  "do_rescale": true, "rescale_factor": 0.00392156862745098,
  "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]
}"#;

fn vit_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "vit", "architectures": ["ViTForImageClassification"],
        "image_size": 8, "patch_size": 4, "num_channels": 3,
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "qkv_bias": true,
    })
}

fn resnet_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "resnet", "architectures": ["ResNetForImageClassification"],
        "num_channels": 3, "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
        "layer_type": "basic", "hidden_act": "relu", "downsample_in_first_stage": false,
    })
}

/// A model folder without weights (for `init = "random"`).
fn write_model(dir: &Path, config: &serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("preprocessor_config.json"), PREPROCESSOR).unwrap();
}

fn recipe(root: &Path, model: &Path, out: &Path, extra: &[String]) -> Recipe {
    let text = format!(
        r#"
name = "toy"
model = "{model}"
task = "image-classification"
method = "head"
init = "random"
output = "{out}"

[data]
train = "{root}/train"
valid = "{root}/valid"
test = "{root}/test"

[train]
epochs = 6
batch_size = 4
lr = 5e-3
warmup = 0
schedule = "constant"
seed = 7
"#,
        model = model.display(),
        out = out.display(),
        root = root.display(),
    );
    Recipe::from_toml_str_with_overrides(&text, "toy.toml", extra).unwrap()
}

fn train(recipe: &Recipe) -> RunSummary {
    pipeline::run(recipe, &mut Silent).unwrap()
}

fn train_err(recipe: &Recipe) -> String {
    match pipeline::run(recipe, &mut Silent) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A temporary folder holding the toy set in `data/` and a model folder `model/` written from `config`:
/// `(the folder, data root, model folder)`.
fn toy_workspace(config: &serde_json::Value) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    write_toy_set(&root);
    let model = tmp.path().join("model");
    write_model(&model, config);
    (tmp, root, model)
}

/// The run folder's `report.json`.
fn read_report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Trains `config` on the toy set and checks what a run must give: it learns the task, writes the run folder,
/// and its best checkpoint evaluates and predicts exactly as the run measured.
fn learns_and_reloads(config: serde_json::Value) {
    let (tmp, root, model) = toy_workspace(&config);
    let out = tmp.path().join("run");
    let summary = train(&recipe(&root, &model, &out, &[]));

    let before = summary.before.as_ref().unwrap();
    let after = summary.after.as_ref().unwrap();
    assert_eq!(after.metrics["accuracy"], 1.0, "{}", after.report.to_text());
    assert!(
        after.loss < before.loss,
        "{} !< {}",
        after.loss,
        before.loss
    );
    let log = read_jsonl(&out.join("metrics.jsonl"));
    let losses: Vec<f64> = log
        .iter()
        .filter(|r| r["type"] == "train")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 6 * 6, "24 images, batch 4, 6 epochs");
    let first: f64 = losses[..6].iter().sum::<f64>() / 6.0;
    let last: f64 = losses[losses.len() - 6..].iter().sum::<f64>() / 6.0;
    assert!(last < first, "epoch loss {first} -> {last}");
    assert_eq!(log.iter().filter(|r| r["split"] == "valid").count(), 6);
    for file in ["recipe.toml", "report.json", "training.svg"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    for dir in ["best", "last"] {
        for file in [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "mosaic.json",
        ] {
            assert!(out.join(dir).join(file).is_file(), "{dir}/{file}");
        }
    }
    let report = read_report(&out);
    assert_eq!(report["after"]["metrics"]["accuracy"], 1.0);
    assert_eq!(report["labels"], serde_json::json!(["bright", "dark"]));

    // The best checkpoint, loaded back, gives the very probabilities the run's final evaluation saw.
    let best = summary.best_checkpoint.unwrap();
    assert!(image_classification::is_image_checkpoint(&best));
    let loaded = ImageCheckpoint::open(&best, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.labels, ["bright", "dark"]);
    // The run evaluates 2 × train.batch_size images at a time; the same batches sum in the same order.
    let again = loaded
        .evaluate(&root.join("test"), 8, &Device::Cpu)
        .unwrap();
    assert_eq!(again.metrics, after.metrics);
    assert_eq!(again.predictions, after.predictions);

    // predict: JSONL rows naming images relative to the file.
    let input = root.join("predict.jsonl");
    std::fs::write(
        &input,
        "{\"image\": \"test/dark/00.png\", \"id\": 1}\n{\"image\": \"test/bright/01.png\", \"id\": 2}\n",
    )
    .unwrap();
    let rows = loaded.predict(&input, 8, &Device::Cpu).unwrap();
    assert_eq!(rows[0]["label"], "dark");
    assert_eq!(rows[1]["label"], "bright");
    assert_eq!(rows[1]["id"], 2);
    let scores = rows[0]["scores"].as_object().unwrap();
    let total: f64 = scores.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");

    // Fine-tuning from the checkpoint (`init = "pretrained"`) starts from its weights and head.
    let tuned = train(&recipe(
        &root,
        &best,
        &tmp.path().join("tuned"),
        &["init=pretrained".into(), "train.epochs=1".into()],
    ));
    assert_eq!(
        tuned.before.unwrap().predictions,
        after.predictions,
        "the pretrained model before fine-tuning is the checkpoint"
    );
}

#[test]
fn vit_learns_a_separable_task_and_its_checkpoint_reloads() {
    learns_and_reloads(vit_config());
}

#[test]
fn resnet_learns_a_separable_task_and_its_checkpoint_reloads() {
    learns_and_reloads(resnet_config());
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let (tmp, root, model) = toy_workspace(&vit_config());
    let short = ["train.epochs=2".to_string()];
    let run = |name: &str, extra: &[String]| {
        let out = tmp.path().join(name);
        train(&recipe(&root, &model, &out, extra));
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap()
    };
    let a = run("a", &short);
    let b = run("b", &short);
    assert_eq!(a, b);
    let other_seed = [short[0].clone(), "train.seed=8".to_string()];
    assert_ne!(a, run("c", &other_seed));
}

#[test]
fn a_records_file_with_its_own_image_field_and_a_carved_split() {
    let (tmp, root, model) = toy_workspace(&vit_config());
    let mut lines = String::new();
    for class in ["dark", "bright"] {
        for i in 0..12 {
            lines.push_str(&format!(
                "{{\"file\": \"train/{class}/{i:02}.png\", \"class\": \"{class}\"}}\n"
            ));
        }
    }
    let jsonl = root.join("train.jsonl");
    std::fs::write(&jsonl, lines).unwrap();
    let out = tmp.path().join("run");
    let extra = [
        format!("data.train={}", jsonl.display()),
        "data.image_field=file".into(),
        "data.label_field=class".into(),
        "train.epochs=1".into(),
    ];
    let mut recipe = recipe(&root, &model, &out, &extra);
    recipe.data.valid = None;
    recipe.data.split = Some(vec![0.75, 0.25]);
    let summary = train(&recipe);
    let report = read_report(&out);
    assert_eq!(report["train_examples"], 18);
    assert_eq!(report["valid_examples"], 6);
    assert_eq!(report["labels"], serde_json::json!(["bright", "dark"]));
    let meta = ImageCheckpoint::open(&summary.best_checkpoint.unwrap(), &Device::Cpu)
        .unwrap()
        .meta;
    assert_eq!(
        (meta.image_field.as_str(), meta.label_field.as_str()),
        ("file", "class")
    );
}

#[test]
fn an_empty_label_folder_is_an_error_naming_it() {
    let (tmp, root, model) = toy_workspace(&vit_config());
    std::fs::create_dir_all(root.join("train/grey")).unwrap();
    let err = train_err(&recipe(&root, &model, &tmp.path().join("run"), &[]));
    assert!(
        err.contains("train/grey") && err.contains("no images"),
        "{err}"
    );
}

#[test]
fn an_unreadable_image_is_an_error_naming_it() {
    let (tmp, root, model) = toy_workspace(&vit_config());
    std::fs::write(root.join("valid/dark/broken.png"), b"not a png at all").unwrap();
    let err = train_err(&recipe(&root, &model, &tmp.path().join("run"), &[]));
    assert!(err.contains("valid/dark/broken.png"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn an_unknown_model_type_is_an_error_naming_the_config() {
    let (tmp, root, model) = toy_workspace(&serde_json::json!({"model_type": "convnext"}));
    let err = train_err(&recipe(&root, &model, &tmp.path().join("run"), &[]));
    assert!(
        err.contains("config.json") && err.contains("convnext") && err.contains("vit, resnet"),
        "{err}"
    );
}

#[test]
fn resume_without_a_checkpoint_names_the_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model(&model, &vit_config());
    let recipe = recipe(tmp.path(), &model, &tmp.path().join("run"), &[]);
    let options = RunOptions {
        resume: true,
        stop: None,
        ..Default::default()
    };
    let err = match pipeline::run_with(&recipe, &mut Silent, options) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("checkpoints/latest") && err.contains("no complete checkpoint"),
        "{err}"
    );
}

#[test]
fn augmentation_is_seeded_and_its_recipe_round_trips() {
    let (tmp, root, model) = toy_workspace(&vit_config());
    let augment = [
        "train.epochs=2".to_string(),
        "data.augment.scale=[0.5, 1.0]".into(),
        "data.augment.brightness=0.2".into(),
    ];
    let run = |name: &str, extra: &[String]| {
        let out = tmp.path().join(name);
        train(&recipe(&root, &model, &out, extra));
        out
    };
    let a = run("a", &augment);
    let b = run("b", &augment);
    let plain = run("plain", &augment[..1]);
    let log = |out: &Path| std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log(&a), log(&b));
    assert_ne!(log(&a), log(&plain));
    // The saved recipe reads back, augmentation included.
    let saved = Recipe::from_file(&a.join("recipe.toml")).unwrap();
    let section = saved.data.augment.unwrap();
    assert_eq!(section.scale, [0.5, 1.0]);
    assert_eq!(section.brightness, 0.2);
    assert_eq!(section.hflip_prob, 0.5, "torchvision's default");
}

/// A detection-only augmentation key is refused by name for image classification.
#[test]
fn a_detection_augment_key_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model(&model, &vit_config());
    let root = tmp.path().join("data");
    write_toy_set(&root);
    let bad = ["data.augment.crop_prob=0.5".to_string()];
    let err = train_err(&recipe(&root, &model, &tmp.path().join("run"), &bad));
    assert!(err.contains("data.augment.crop_prob"), "{err}");
}

#[test]
fn a_bad_augmentation_is_an_error_naming_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model(&model, &vit_config());
    let err = Recipe::from_toml_str_with_overrides(
        "model = \"m\"\ntask = \"image-classification\"\n[data.augment]\nhflip_prb = 0.5\n",
        "toy.toml",
        &[] as &[&str],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("data.augment.hflip_prob"), "{err}");
    let root = tmp.path().join("data");
    write_toy_set(&root);
    let bad = ["data.augment.scale=[0.9, 0.2]".to_string()];
    let err = train_err(&recipe(&root, &model, &tmp.path().join("run"), &bad));
    assert!(
        err.contains("data.augment") && err.contains("scale"),
        "{err}"
    );
}

/// An interrupt saves a resumable checkpoint after the step and stops; resuming ends byte-identical to a run
/// never interrupted — for the ViT (dropout stream) and the ResNet (batch-norm running statistics), with
/// accumulation, augmentation and freezing on.
#[test]
fn an_interrupted_run_resumes_exactly() {
    for config in [vit_config(), resnet_config()] {
        let (tmp, root, model) = toy_workspace(&config);
        let extra = [
            "train.epochs=2".to_string(),
            "train.grad_accum=2".into(),
            "train.batch_size=2".into(),
            "train.freeze=embeddings".into(),
            "data.augment.brightness=0.2".into(),
        ];
        let reference = tmp.path().join("reference");
        train(&recipe(&root, &model, &reference, &extra));
        let out = tmp.path().join("run");
        let stop = std::sync::atomic::AtomicBool::new(true);
        let options = RunOptions {
            resume: false,
            stop: Some(&stop),
            ..Default::default()
        };
        let err =
            match pipeline::run_with(&recipe(&root, &model, &out, &extra), &mut Silent, options) {
                Ok(_) => panic!("expected the interrupt"),
                Err(e) => e.to_string(),
            };
        assert!(err.contains("interrupted at step 1"), "{err}");
        assert!(out.join("checkpoints/step-00000001").is_dir());
        let options = RunOptions {
            resume: true,
            stop: None,
            ..Default::default()
        };
        pipeline::run_with(&recipe(&root, &model, &out, &extra), &mut Silent, options).unwrap();
        for file in [
            "last/model.safetensors",
            "best/model.safetensors",
            "metrics.jsonl",
            "report.json",
        ] {
            assert_eq!(
                std::fs::read(out.join(file)).unwrap(),
                std::fs::read(reference.join(file)).unwrap(),
                "{file} ({})",
                config["model_type"]
            );
        }
    }
}

/// Through the loss the run uses, every parameter of both architectures gets a finite, non-zero gradient.
#[test]
fn every_parameter_gets_a_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    write_toy_set(&root);
    let labels = vec!["bright".to_string(), "dark".to_string()];
    for config in [vit_config(), resnet_config()] {
        let model_dir = tmp.path().join(config["model_type"].as_str().unwrap());
        write_model(&model_dir, &config);
        let device = Device::Cpu;
        let model =
            image_classification::ImageClassifier::load(&model_dir, &labels, true, 3, &device)
                .unwrap();
        let set = image_classification::read_dataset(
            &root.join("train"),
            None,
            &image_classification::Fields {
                image: "image".into(),
                label: "label".into(),
            },
        )
        .unwrap();
        let processor = mosaic_data::image::ImageProcessor::from_folder(&model_dir).unwrap();
        let pixels =
            image_classification::PixelSet::from_dataset(&set, &processor, &device).unwrap();
        model.set_training(true);
        let (x, y) = pixels.batch(&[0, 1, 12, 13]).unwrap();
        let loss = mosaic_kernels::cross_entropy(&model.logits(&x).unwrap(), &y, 0.0).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in model.params() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let values: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{name}: not finite");
            assert!(values.iter().any(|&v| v != 0.0), "{name}: all zero");
        }
    }
}

/// `train.freeze` works for image runs: with `all-but-head` only the classifier moves, for the ViT and the ResNet;
/// `report.json` counts only the classifier as trainable.
#[test]
fn freezing_keeps_the_frozen_image_weights_exact() {
    for config in [vit_config(), resnet_config()] {
        let (tmp, root, model) = toy_workspace(&config);
        let out = tmp.path().join("run");
        let extra = [
            "train.freeze=all-but-head".to_string(),
            "train.epochs=2".into(),
        ];
        train(&recipe(&root, &model, &out, &extra));
        let labels = vec!["bright".to_string(), "dark".to_string()];
        let device = Device::Cpu;
        let start =
            image_classification::ImageClassifier::load(&model, &labels, true, 7, &device).unwrap();
        let trained = image_classification::ImageCheckpoint::open(&out.join("last"), &device)
            .unwrap()
            .model;
        let after: std::collections::HashMap<String, candle_core::Var> =
            trained.params().into_iter().collect();
        let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut head = 0u64;
        for (name, var) in start.params() {
            let same = values(var.as_tensor()) == values(after[&name].as_tensor());
            if name.starts_with("classifier") {
                assert!(!same, "{name}: the head did not train");
                head += var.elem_count() as u64;
            } else {
                assert!(
                    same,
                    "{name} is frozen but changed ({})",
                    config["model_type"]
                );
            }
        }
        assert_eq!(
            read_report(&out)["trainable_parameters"].as_u64(),
            Some(head)
        );
    }
}

/// Gradient accumulation in image runs: two micro-batches of 2 make the same step as one batch of 4 (a ViT
/// without dropout; SGD so the step is linear in the gradient).
#[test]
fn accumulated_image_batches_equal_one_big_batch() {
    let mut config = vit_config();
    config["hidden_dropout_prob"] = 0.0.into();
    let (tmp, root, model) = toy_workspace(&config);
    let weights = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut overrides: Vec<String> = ["train.epochs=1", "train.optimizer=sgd", "train.lr=0.5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        overrides.extend(extra.iter().map(|s| s.to_string()));
        train(&recipe(&root, &model, &out, &overrides));
        candle_core::safetensors::load(out.join("last/model.safetensors"), &Device::Cpu).unwrap()
    };
    let big = weights("big", &["train.batch_size=4"]);
    let accumulated = weights("accumulated", &["train.batch_size=2", "train.grad_accum=2"]);
    for (name, a) in &big {
        let diff = (a - &accumulated[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap();
        let worst = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(worst < 1e-5, "{name}: {worst}");
    }
}
