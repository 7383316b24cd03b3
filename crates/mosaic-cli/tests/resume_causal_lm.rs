//! Exact resume of causal-LM runs: an instruction-tuning run of the tiny GPT-2 killed with SIGKILL (or stopped
//! with SIGTERM) at a random step and resumed ends with weights, metrics log and report byte-identical to an
//! uninterrupted run with the same seed.

mod interrupted_run;

use std::path::{Path, PathBuf};

use interrupted_run::{
    finish, fixtures, interrupt_at, latest_step, step_checkpoints, stop_with_sigterm, train,
};

fn write_recipe(dir: &Path) -> PathBuf {
    let data = |name: &str, n: usize| {
        let text =
            std::fs::read_to_string(fixtures().join("data/instructions").join(name)).unwrap();
        let rows: Vec<&str> = text.lines().take(n).collect();
        let path = dir.join(name);
        std::fs::write(&path, rows.join("\n")).unwrap();
        path
    };
    let train = data("train.jsonl", 36);
    let valid = data("valid.jsonl", 8);
    // The fixture keeps its dropout (0.1), so the dropout stream must be restored too.
    let recipe = format!(
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
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, recipe).unwrap();
    path
}

fn read(output: &Path, file: &str) -> Vec<u8> {
    std::fs::read(output.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// What must match an uninterrupted run byte for byte.
const SAME: [&str; 4] = [
    "last/model.safetensors",
    "best/model.safetensors",
    "metrics.jsonl",
    "report.json",
];

#[test]
fn killed_and_resumed_causal_lm_runs_end_bit_identical() {
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
    let total = latest_step(&reference);
    assert_eq!(total, 30, "6 epochs × 5 steps (9 batches of 4, 2 per step)");
    assert!(reference.join("training.svg").is_file());

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
    for file in SAME {
        assert!(
            read(&killed, file) == read(&reference, file),
            "{file} differs (killed at step ≥ {kill_at})"
        );
    }
    assert!(
        step_checkpoints(&killed) <= 3,
        "save_total_limit 2 (+ the best) is respected"
    );

    // SIGTERM: the run saves a checkpoint, says so, and exits non-zero; resuming ends identically too.
    let stopped = dir.path().join("stopped");
    stop_with_sigterm(&recipe, &stopped, 5);
    finish(&recipe, &stopped);
    for file in SAME {
        assert!(
            read(&stopped, file) == read(&reference, file),
            "{file} differs after SIGTERM"
        );
    }
}

#[test]
fn resuming_a_causal_lm_run_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = write_recipe(dir.path());
    let out = train(&recipe, &dir.path().join("nothing"), true)
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no complete checkpoint"), "{stderr}");
}
