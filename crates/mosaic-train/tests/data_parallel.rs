//! Data parallelism through the one Trainer, with ranks that are threads (no MPI needed): two ranks of batch 8
//! end with the weights of one process of batch 16 (dropout 0, SGD), only rank 0 writes the run folder, and
//! a rank's data is its shard of the epoch. `mpirun` itself is tested by mosaic-cli's `data_parallel_mpi`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mosaic_train::collective::{Collective, thread_ranks};
use mosaic_train::observer::Silent;
use mosaic_train::pipeline::{self, RunOptions};
use mosaic_train::recipe::Recipe;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The tiny MLM BERT with dropout 0, so one process and two ranks compute the same function.
fn model_without_dropout(dir: &Path) -> PathBuf {
    let src = fixtures().join("models/tiny-bert-mlm");
    let dst = dir.join("model");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    let config = std::fs::read_to_string(dst.join("config.json")).unwrap();
    let config = config
        .replace(
            "\"attention_probs_dropout_prob\": 0.1",
            "\"attention_probs_dropout_prob\": 0.0",
        )
        .replace(
            "\"hidden_dropout_prob\": 0.1",
            "\"hidden_dropout_prob\": 0.0",
        );
    assert!(!config.contains("dropout_prob\": 0.1"), "{config}");
    std::fs::write(dst.join("config.json"), config).unwrap();
    dst
}

fn recipe(model: &Path, output: &Path, batch_size: usize) -> Recipe {
    let data = fixtures().join("data/sentiment");
    let text = format!(
        r#"
name = "data-parallel"
model = "{model}"
task = "classification"
method = "cloze"
output = "{output}"
[data]
train = "{train}"
valid = "{valid}"
max_length = 64
[prompt]
template = "{{text}} it was {{mask}} ."
[prompt.verbalizer]
positive = ["great", "good"]
negative = ["terrible", "bad"]
[train]
epochs = 1
batch_size = {batch_size}
optimizer = "sgd"
lr = 0.05
seed = 3
"#,
        model = model.display(),
        output = output.display(),
        train = data.join("train.jsonl").display(),
        valid = data.join("valid.jsonl").display(),
    );
    Recipe::from_toml_str_with_overrides(&text, "data-parallel.toml", &[] as &[String]).unwrap()
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut named: Vec<_> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn two_ranks_of_batch_8_train_as_one_process_of_batch_16() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_dropout(dir.path());
    let single = dir.path().join("single");
    pipeline::run(&recipe(&model, &single, 16), &mut Silent).unwrap();

    let parallel = dir.path().join("parallel");
    let handles: Vec<_> = thread_ranks(2, Duration::from_secs(120))
        .into_iter()
        .map(|rank| {
            let recipe = recipe(&model, &parallel, 8);
            std::thread::spawn(move || {
                let options = RunOptions {
                    collective: Some(&rank as &dyn Collective),
                    ..Default::default()
                };
                pipeline::run_with(&recipe, &mut Silent, options)
                    .map(|s| s.after.map(|a| a.metrics))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let afters: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    // Both ranks evaluated the same best checkpoint.
    assert_eq!(afters[0], afters[1]);

    let (a, b) = (
        weights(&single.join("last/model.safetensors")),
        weights(&parallel.join("last/model.safetensors")),
    );
    let initial = weights(&model.join("model.safetensors"));
    let mut worst = 0.0f32;
    let mut moved = 0.0f32;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
        if let Some((_, w0)) = initial.iter().find(|(n, _)| n == name) {
            for (p, q) in x.iter().zip(w0) {
                moved = moved.max((p - q).abs());
            }
        }
    }
    assert!(moved > 1e-3, "training moved the weights ({moved})");
    assert!(worst < 1e-5, "two ranks differ from one process by {worst}");

    // One writer: the step records carry what the all-reduce moved, and there is a single metrics log.
    let log = std::fs::read_to_string(parallel.join("metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "train")
        .collect();
    // 440 examples: 28 steps of 16 (the last of 8), in both runs.
    assert_eq!(steps.len(), 28);
    assert!(
        steps
            .iter()
            .all(|r| r["allreduce_bytes"].as_u64().unwrap() > 0)
    );
}

#[test]
fn a_resume_with_another_world_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_dropout(dir.path());
    let output = dir.path().join("run");
    let mut one = recipe(&model, &output, 16);
    one.train.save_every = 5;
    pipeline::run(&one, &mut Silent).unwrap();
    let handles: Vec<_> = thread_ranks(2, Duration::from_secs(60))
        .into_iter()
        .map(|rank| {
            let recipe = one.clone();
            std::thread::spawn(move || {
                let options = RunOptions {
                    resume: true,
                    collective: Some(&rank as &dyn Collective),
                    ..Default::default()
                };
                pipeline::run_with(&recipe, &mut Silent, options)
                    .err()
                    .map(|e| e.to_string())
            })
        })
        .collect();
    for h in handles {
        let err = h.join().unwrap().expect("refused");
        assert!(
            err.contains("checkpointed by 1 rank(s) and would resume with 2"),
            "{err}"
        );
    }
}
