//! Training memory stays flat: no growth from retained graphs, gradient stores or caches across many steps.
//! Resident memory is read from /proc at step 20 (after warm-up) and at the last step, and printed.

#![cfg(target_os = "linux")]

use std::path::PathBuf;

use mosaic_train::observer::{Observer, StepLog};
use mosaic_train::pipeline;
use mosaic_train::recipe::Recipe;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[derive(Default)]
struct Rss {
    warm: Option<u64>,
    last: u64,
}

impl Observer for Rss {
    fn step(&mut self, log: &StepLog) {
        if log.step == 20 {
            self.warm = Some(resident_bytes());
        }
        self.last = resident_bytes();
    }
}

#[test]
fn resident_memory_is_flat_across_epochs() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures.join("data/sentiment/train.jsonl")).unwrap();
    let rows: Vec<&str> = text.lines().take(64).collect();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, rows.join("\n")).unwrap();
    let recipe = format!(
        r#"
name = "memory"
model = "{model}"
method = "head"
output = "{out}"
[data]
train = "{train}"
max_length = 32
[train]
epochs = 25
batch_size = 8
lr = 1e-3
save_every = 1000000
"#,
        model = fixtures.join("models/tiny-bert").display(),
        out = dir.path().join("run").display(),
        train = train.display(),
    );
    let recipe = Recipe::from_toml_str(&recipe, "memory.toml").unwrap();
    let mut rss = Rss::default();
    pipeline::run(&recipe, &mut rss).unwrap();
    let warm = rss.warm.unwrap();
    let growth = rss.last as i64 - warm as i64;
    println!(
        "resident memory: {:.1} MiB at step 20, {:.1} MiB at step 200 ({:+.1} MiB)",
        warm as f64 / 1048576.0,
        rss.last as f64 / 1048576.0,
        growth as f64 / 1048576.0
    );
    assert!(
        growth < 16 << 20,
        "resident memory grew by {growth} bytes over 180 steps"
    );
}
