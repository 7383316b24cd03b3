//! Exact resume: a run killed with SIGKILL (or stopped with SIGTERM) at a random step and resumed ends with
//! weights byte-identical to an uninterrupted run with the same seed, and the same metrics log.

mod interrupted_run;

use std::path::{Path, PathBuf};

use interrupted_run::{
    finish, fixtures, interrupt_at, latest_step, step_checkpoints, stop_with_sigterm, train,
};

fn write_recipe(dir: &Path) -> PathBuf {
    let data = |name: &str, n: usize| {
        let text = std::fs::read_to_string(fixtures().join("data/sentiment").join(name)).unwrap();
        let rows: Vec<&str> = text.lines().take(n).collect();
        let path = dir.join(name);
        std::fs::write(&path, rows.join("\n")).unwrap();
        path
    };
    let train = data("train.jsonl", 48);
    let valid = data("valid.jsonl", 16);
    let recipe = format!(
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
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, recipe).unwrap();
    path
}

fn metrics_without_timing(output: &Path) -> String {
    std::fs::read_to_string(output.join("metrics.jsonl")).unwrap()
}

#[test]
fn killed_and_resumed_runs_end_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(dir.path());
    let reference = dir.path().join("uninterrupted");
    let out = train(&recipe, &reference, false)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = std::fs::read(reference.join("last/model.safetensors")).unwrap();
    let total = latest_step(&reference);
    assert_eq!(total, 48, "8 epochs × 6 steps");

    // A "random" step from the clock, away from both ends.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let kill_at = 3 + nanos % (total - 10);
    let killed = dir.path().join("killed");
    let out = interrupt_at(&recipe, &killed, kill_at, "-KILL");
    assert!(!out.status.success());
    finish(&recipe, &killed);
    assert_eq!(
        std::fs::read(killed.join("last/model.safetensors")).unwrap(),
        expected,
        "killed at step ≥ {kill_at}"
    );
    assert_eq!(
        metrics_without_timing(&killed),
        metrics_without_timing(&reference)
    );
    assert!(
        step_checkpoints(&killed) <= 3,
        "save_total_limit 2 (+ the best) is respected"
    );

    // SIGTERM: the run saves a checkpoint, says so, and exits non-zero; resuming ends identically too.
    let stopped = dir.path().join("stopped");
    stop_with_sigterm(&recipe, &stopped, 5);
    finish(&recipe, &stopped);
    assert_eq!(
        std::fs::read(stopped.join("last/model.safetensors")).unwrap(),
        expected
    );
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(dir.path());
    let out = train(&recipe, &dir.path().join("nothing"), true)
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no complete checkpoint"), "{stderr}");
}
