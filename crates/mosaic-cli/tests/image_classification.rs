//! `mosaic train` → `mosaic eval` → `mosaic predict` for an image classifier, through the real binary, on a toy
//! set of bright and dark 8×8 PNGs written here and a tiny ViT trained from scratch (a recipe with relative paths).

use std::path::Path;
use std::process::{Command, Output};

fn mosaic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mosaic eval --json` of the checkpoint `best` on `data`, parsed.
fn eval_json(best: &Path, data: &Path) -> serde_json::Value {
    let json = ok(&mosaic(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]));
    serde_json::from_str(json.trim()).unwrap()
}

/// `mosaic predict` with the checkpoint `best` from `input` into `output`.
fn predict(best: &Path, input: &Path, output: &Path) -> Output {
    mosaic(&[
        "predict",
        "--checkpoint",
        best.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
}

/// `root/<split>/<class>/NN.png`, values around 200 (bright) or 30 (dark).
fn write_toy_set(root: &Path) {
    let mut state = 5u64;
    for (split, count) in [("train", 12), ("valid", 4), ("test", 4)] {
        for (class, base) in [("bright", 200u8), ("dark", 30u8)] {
            let folder = root.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                image::GrayImage::from_fn(8, 8, |_, _| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    image::Luma([base + (state >> 59) as u8])
                })
                .save(folder.join(format!("{i:02}.png")))
                .unwrap();
            }
        }
    }
}

const CONFIG: &str = r#"{
  "model_type": "vit", "architectures": ["ViTForImageClassification"],
  "image_size": 8, "patch_size": 4, "num_channels": 3,
  "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02
}"#;

const PREPROCESSOR: &str = r#"{
  "image_processor_type": "ViTImageProcessor", "size": {"height": 8, "width": 8}, "resample": 2,
  "rescale_factor": 0.00392156862745098, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]
}"#;

const RECIPE: &str = r#"
name = "toy-vit"
model = "model"
task = "image-classification"
method = "head"
init = "random"
output = "run"

[data]
train = "data/train"
valid = "data/valid"
test = "data/test"

[train]
epochs = 6
batch_size = 4
lr = 5e-3
warmup = 0
schedule = "constant"
seed = 7
"#;

#[test]
fn train_eval_predict_an_image_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_toy_set(&dir.join("data"));
    std::fs::create_dir_all(dir.join("model")).unwrap();
    std::fs::write(dir.join("model/config.json"), CONFIG).unwrap();
    std::fs::write(dir.join("model/preprocessor_config.json"), PREPROCESSOR).unwrap();
    let recipe = dir.join("toy.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let run = dir.join("run");

    let stdout = ok(&mosaic(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ]));
    assert!(stdout.contains("before training (random init)"), "{stdout}");
    assert!(
        stdout.contains("trained (after, best checkpoint)"),
        "{stdout}"
    );
    assert!(stdout.contains("f1_macro:"), "{stdout}");
    assert!(stdout.contains("weighted avg"), "{stdout}");
    let best = run.join("best");

    // eval on an image folder: the table, or JSON.
    let test = dir.join("data/test");
    let table = ok(&mosaic(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
    ]));
    assert!(
        table.contains("accuracy") && table.contains("bright"),
        "{table}"
    );
    let value = eval_json(&best, &test);
    assert_eq!(value["metrics"]["accuracy"], 1.0, "{value}");

    // eval on a JSONL file naming the images (relative to the file).
    let records = dir.join("data/test.jsonl");
    std::fs::write(
        &records,
        "{\"image\": \"test/dark/00.png\", \"label\": \"dark\"}\n{\"image\": \"test/bright/00.png\", \"label\": \"bright\"}\n",
    )
    .unwrap();
    let value = eval_json(&best, &records);
    assert_eq!(value["metrics"]["accuracy"], 1.0, "{value}");

    // predict: label and scores added to each row, other fields kept.
    let input = dir.join("data/predict.jsonl");
    std::fs::write(
        &input,
        "{\"image\": \"test/bright/03.png\", \"id\": \"a\"}\n{\"image\": \"test/dark/03.png\", \"id\": \"b\"}\n",
    )
    .unwrap();
    let output = dir.join("predictions.jsonl");
    ok(&predict(&best, &input, &output));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (&rows[0]["label"], &rows[0]["id"]),
        (&"bright".into(), &"a".into())
    );
    assert_eq!(rows[1]["label"], "dark");
    assert_eq!(rows[1]["scores"].as_object().unwrap().len(), 2);

    // A row naming an image outside the input's folder is refused, in one error line naming file and line.
    std::fs::write(&input, "{\"image\": \"../../etc/passwd\"}\n").unwrap();
    let out = predict(&best, &input, &output);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("predict.jsonl:1") && errors[0].contains("outside"),
        "{stderr}"
    );
}
