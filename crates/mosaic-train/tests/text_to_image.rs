//! Text → image end to end on `fixtures/models/tiny-llava` and a handful of the scene set's caption rows: the
//! image objective alone and jointly with captioning (each objective logged per step, the image MSE going down,
//! `samples.png` and the checkpoint written, the checkpoint loading back), and bad rows named.

use std::path::{Path, PathBuf};

use mosaic_train::observer::Silent;
use mosaic_train::recipe::Recipe;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `dir/{name}.json`: `n` rows of the scene set's `captions-{split}.json`, their images copied to `dir/images/`.
fn write_rows(dir: &Path, split: &str, name: &str, n: usize) -> PathBuf {
    let scenes = root().join("fixtures/data/scenes");
    let text = std::fs::read_to_string(scenes.join(format!("captions-{split}.json"))).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let rows: Vec<serde_json::Value> = rows.into_iter().take(n).collect();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for row in &rows {
        let image = row["image"].as_str().unwrap();
        std::fs::copy(scenes.join(image), dir.join(image)).unwrap();
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&rows).unwrap()).unwrap();
    path
}

fn recipe(dir: &Path, out: &Path, extra: &str, epochs: usize) -> Recipe {
    let train = write_rows(dir, "train", "train", 16);
    let test = write_rows(dir, "test", "test", 8);
    let text = format!(
        "model = \"{}\"\ntask = \"text-to-image\"\noutput = \"{}\"\n{extra}\n[data]\ntrain = \"{}\"\n\
         valid = \"{}\"\ntest = \"{}\"\n[train]\nepochs = {epochs}\nbatch_size = 4\nlr = 1e-2\nseed = 3\n",
        root().join("fixtures/models/tiny-llava").display(),
        out.display(),
        train.display(),
        test.display(),
        test.display(),
    );
    // `extra` comes before `[data]`: its top-level keys (`freeze_towers`) stay top-level, a `[loss]` table is
    // closed by `[data]`.
    Recipe::from_toml_str(&text, "text-to-image-test.toml").unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn train_records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "train")
        .collect()
}

fn mse(report: &serde_json::Value, when: &str) -> f64 {
    report["image_mse"][when].as_f64().unwrap()
}

#[test]
fn the_image_objective_alone_lowers_the_image_mse_and_writes_samples_and_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let r = recipe(tmp.path(), &out, "", 2);
    mosaic_train::pipeline::run(&r, &mut Silent).unwrap();
    let records = train_records(&out);
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["loss_image"].is_number()),
        "{records:?}"
    );
    assert!(records.iter().all(|r| r.get("loss_caption").is_none()));
    let report = json(&out.join("report.json"));
    assert!(mse(&report, "after") < mse(&report, "before"), "{report}");
    assert_eq!(report["samples"]["captions"].as_array().unwrap().len(), 8);
    assert!(report["caption_loss"].is_null());
    let samples = image::open(out.join("samples.png")).unwrap();
    // Two rows (generated, real) of eight 32-pixel images enlarged 4 times, with 2-pixel gaps.
    assert_eq!(
        (samples.width(), samples.height()),
        (8 * 128 + 9 * 2, 2 * 128 + 3 * 2)
    );
    let best = out.join("best");
    assert!(best.join("decoder.safetensors").is_file());
    // Nothing of the LLaVA trained: the checkpoint points at the base folder instead of copying it.
    let meta = json(&best.join("mosaic.json"));
    assert_eq!(meta["task"], "text-to-image");
    assert!(Path::new(meta["llava_model"].as_str().unwrap()).is_absolute());
    assert!(!best.join("model.safetensors").exists());

    let png = tmp.path().join("pictures/two-red.png");
    let made = mosaic_train::text_to_image::imagine(&best, "two red squares", 2, &png).unwrap();
    assert_eq!((made.width, made.height), (64, 64));
    let image = image::open(&png).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));
}

#[test]
fn the_joint_run_logs_each_objective_and_saves_the_llava_it_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let r = recipe(
        tmp.path(),
        &out,
        "freeze_towers = false\n[loss]\nimage = 1.0\ncaption = 0.5\ncontrastive = 0.1",
        1,
    );
    mosaic_train::pipeline::run(&r, &mut Silent).unwrap();
    let records = train_records(&out);
    for name in ["loss_image", "loss_caption", "loss_contrastive"] {
        assert!(
            records.iter().all(|r| r[name].is_number()),
            "{name}: {records:?}"
        );
    }
    // The logged loss is the weighted sum of the parts.
    let first = &records[0];
    let weighted = first["loss_image"].as_f64().unwrap()
        + 0.5 * first["loss_caption"].as_f64().unwrap()
        + 0.1 * first["loss_contrastive"].as_f64().unwrap();
    assert!(
        (first["loss"].as_f64().unwrap() - weighted).abs() < 1e-4,
        "{first}"
    );
    let report = json(&out.join("report.json"));
    assert!(report["caption_loss"]["before"].is_number(), "{report}");
    assert!(report["caption_loss"]["after"].is_number(), "{report}");
    assert!(mse(&report, "after") < mse(&report, "before"), "{report}");
    let best = out.join("best");
    assert!(best.join("model.safetensors").is_file());
    assert!(best.join("tokenizer.json").is_file());
    assert!(json(&best.join("mosaic.json")).get("llava_model").is_none());
    let loaded =
        mosaic_train::text_to_image::load_checkpoint(&best, &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.meta.image_size, 32);
}

#[test]
fn a_missing_image_names_the_file_and_row_and_bad_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let r = recipe(tmp.path(), &out, "", 1);
    let train = tmp.path().join("train.json");
    let mut rows: Vec<serde_json::Value> = json(&train).as_array().unwrap().clone();
    rows[2]["image"] = "images/nowhere.png".into();
    std::fs::write(&train, serde_json::to_string(&rows).unwrap()).unwrap();
    let err = mosaic_train::pipeline::run(&r, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.json: row 3") && err.contains("nowhere.png"),
        "{err}"
    );

    // Not a text-to-image checkpoint: the LLaVA folder itself, and an empty folder.
    let llava = root().join("fixtures/models/tiny-llava");
    let png = tmp.path().join("x.png");
    let err = mosaic_train::text_to_image::imagine(&llava, "a red square", 1, &png)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a text-to-image checkpoint"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = mosaic_train::text_to_image::imagine(&empty, "a red square", 1, &png)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mosaic.json"), "{err}");
    assert!(!png.exists());
}

#[test]
fn a_gpt2_folder_without_a_vision_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let train = write_rows(tmp.path(), "train", "train", 2);
    let text = format!(
        "model = \"{}\"\ntask = \"text-to-image\"\noutput = \"{}\"\n[data]\ntrain = \"{}\"\n",
        root().join("fixtures/models/tiny-gpt2").display(),
        tmp.path().join("run").display(),
        train.display(),
    );
    let r = Recipe::from_toml_str(&text, "r.toml").unwrap();
    let err = mosaic_train::pipeline::run(&r, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a LLaVA folder") && err.contains("vision_model"),
        "{err}"
    );
}
