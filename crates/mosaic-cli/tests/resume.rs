//! Exact resume, for every task: a run killed with SIGKILL (or stopped with SIGTERM) at a random step and resumed
//! ends with weights, metrics log and report byte-identical to an uninterrupted run with the same seed — text
//! classification (with accumulation and FGM), causal-LM instruction tuning (dropout on), image classification (a
//! ResNet: batch-norm running statistics, augmentation) and CLIP contrastive training.

mod interrupted_run;

use std::path::{Path, PathBuf};

use interrupted_run::{assert_resumes_exactly, fixtures, head, train};

/// What must match an uninterrupted run byte for byte.
const SAME: [&str; 4] = [
    "last/model.safetensors",
    "best/model.safetensors",
    "metrics.jsonl",
    "report.json",
];

fn write_recipe(dir: &Path, text: String) -> PathBuf {
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn text_recipe(dir: &Path) -> PathBuf {
    let data = fixtures().join("data/sentiment");
    let train = head(dir, &data.join("train.jsonl"), 48);
    let valid = head(dir, &data.join("valid.jsonl"), 16);
    write_recipe(
        dir,
        format!(
            r#"
name = "resume"
model = "{model}"
method = "head"
output = "unused"
[data]
train = "{train}"
valid = "{valid}"
max_length = 32
[train]
epochs = 8
batch_size = 4
grad_accum = 2
lr = 1e-3
seed = 11
save_every = 1
save_total_limit = 2
fgm_epsilon = 0.5
"#,
            model = fixtures().join("models/tiny-bert").display(),
            train = train.display(),
            valid = valid.display(),
        ),
    )
}

#[test]
fn text_classification_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = text_recipe(dir.path());
    // 8 epochs × 6 steps (12 batches of 4, 2 per step).
    assert_resumes_exactly(&recipe, dir.path(), 48, &SAME);
}

#[test]
fn causal_lm_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("data/instructions");
    let train = head(dir.path(), &data.join("train.jsonl"), 36);
    let valid = head(dir.path(), &data.join("valid.jsonl"), 8);
    // The fixture keeps its dropout (0.1), so the dropout stream must be restored too.
    let recipe = write_recipe(
        dir.path(),
        format!(
            r#"
name = "resume-lm"
model = "{model}"
task = "causal-lm"
method = "instruction"
output = "unused"
[data]
train = "{train}"
valid = "{valid}"
format = "chatml"
max_length = 64
[train]
epochs = 6
batch_size = 4
grad_accum = 2
lr = 3e-3
seed = 11
save_every = 1
save_total_limit = 2
"#,
            model = fixtures().join("models/tiny-gpt2").display(),
            train = train.display(),
            valid = valid.display(),
        ),
    );
    // 6 epochs × 5 steps (9 batches of 4, 2 per step).
    assert_resumes_exactly(&recipe, dir.path(), 30, &SAME);
}

/// `per_label` images of each digit of a bundled split, copied into `dir/<split>/<label>/`.
fn digits(dir: &Path, split: &str, per_label: usize) -> PathBuf {
    let root = dir.join(split);
    for label in 0..10 {
        let from = fixtures()
            .join("data/digits")
            .join(split)
            .join(label.to_string());
        let to = root.join(label.to_string());
        std::fs::create_dir_all(&to).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&from)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names.into_iter().take(per_label) {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }
    root
}

#[test]
fn image_classification_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let train = digits(dir.path(), "train", 3);
    let valid = digits(dir.path(), "valid", 1);
    let recipe = write_recipe(
        dir.path(),
        format!(
            r#"
name = "resume-digits"
model = "{model}"
task = "image-classification"
method = "head"
init = "random"
output = "unused"
[data]
train = "{train}"
valid = "{valid}"
[data.augment]
brightness = 0.2
[train]
epochs = 4
batch_size = 8
grad_accum = 2
lr = 3e-3
seed = 11
save_every = 1
save_total_limit = 2
"#,
            model = fixtures().join("models/digits-resnet").display(),
            train = train.display(),
            valid = valid.display(),
        ),
    );
    // 4 epochs × 2 steps (4 batches of up to 8, 2 per step).
    assert_resumes_exactly(&recipe, dir.path(), 8, &SAME);
}

/// The first `n` image-caption pairs of a bundled shapes split, with their images, in `dir`.
fn shapes(dir: &Path, split: &str, n: usize) -> PathBuf {
    let source = fixtures()
        .join("data/shapes")
        .join(format!("{split}.jsonl"));
    let path = head(dir, &source, n);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let image = row["image"].as_str().unwrap();
        std::fs::copy(fixtures().join("data/shapes").join(image), dir.join(image)).unwrap();
    }
    path
}

#[test]
fn clip_contrastive_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let train = shapes(dir.path(), "train", 24);
    let valid = shapes(dir.path(), "valid", 8);
    let recipe = write_recipe(
        dir.path(),
        format!(
            r#"
name = "resume-clip"
model = "{model}"
task = "image-text-contrastive"
method = "contrastive"
output = "unused"
[data]
train = "{train}"
valid = "{valid}"
[train]
epochs = 3
batch_size = 8
lr = 1e-3
seed = 11
save_every = 1
save_total_limit = 2
"#,
            model = fixtures().join("models/clip-shapes").display(),
            train = train.display(),
            valid = valid.display(),
        ),
    );
    // 3 epochs × 3 batches of 8.
    assert_resumes_exactly(&recipe, dir.path(), 9, &SAME);
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = text_recipe(dir.path());
    let out = train(&recipe, &dir.path().join("nothing"), true)
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no complete checkpoint"), "{stderr}");
}

#[test]
fn resume_refuses_a_changed_recipe_naming_the_key_but_takes_more_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = text_recipe(dir.path());
    let output = dir.path().join("run");
    let mosaic = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .arg("train")
            .arg(&recipe)
            .arg("--output")
            .arg(&output)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = mosaic(&["--set", "train.epochs=1"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let changed = mosaic(&[
        "--resume",
        "--set",
        "train.epochs=1",
        "--set",
        "train.lr=0.5",
    ]);
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success());
    assert!(
        stderr.contains("train.lr") && stderr.contains("--resume"),
        "{stderr}"
    );
    let longer = mosaic(&["--resume", "--set", "train.epochs=2"]);
    assert!(
        longer.status.success(),
        "{}",
        String::from_utf8_lossy(&longer.stderr)
    );
    assert_eq!(
        interrupted_run::latest_step(&output),
        12,
        "a second epoch of 6 steps"
    );
}
