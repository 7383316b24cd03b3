//! The three ways to classify and token classification, end to end on the tiny fixtures: each learns, cloze scores
//! are the verbalizer logits, gradient accumulation equals one big batch, early stopping stops, and every bad
//! input of the pipeline issue is a clear error that leaves nothing half-written.

use std::path::{Path, PathBuf};

use candle_core::{Device, IndexOp};
use mosaic_train::observer::{Observer, Silent};
use mosaic_train::pipeline;
use mosaic_train::recipe::Recipe;
use mosaic_train::task_model::{Scoring, TensorBatch};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `n` rows of the bundled sentiment set (balanced, short) written to `dir/name`.
fn sentiment_rows(dir: &Path, name: &str, source: &str, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(fixtures().join("data/sentiment").join(source)).unwrap();
    let rows: Vec<&str> = text.lines().take(n).collect();
    let path = dir.join(name);
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

fn recipe_with(dir: &Path, body: &str, overrides: &[&str]) -> Recipe {
    let text = body
        .replace("{fixtures}", &fixtures().display().to_string())
        .replace("{dir}", &dir.display().to_string());
    Recipe::from_toml_str_with_overrides(&text, "test.toml", overrides).unwrap()
}

fn recipe(dir: &Path, body: &str) -> Recipe {
    recipe_with(dir, body, &[])
}

/// A sentiment recipe on 48 training rows; `overrides` as `--set` takes them.
fn sentiment_recipe(dir: &Path, method: &str, model: &str, overrides: &[&str]) -> Recipe {
    recipe_with(dir, &sentiment_text(dir, method, model), overrides)
}

/// The text of [`sentiment_recipe`]: each method gets the label words it reads (a key the method does not read is
/// an error).
fn sentiment_text(dir: &Path, method: &str, model: &str) -> String {
    let labels = match method {
        "cloze" => {
            "[prompt.verbalizer]\npositive = [\"great\", \"good\"]\nnegative = [\"terrible\", \"bad\"]"
        }
        "prompt-similarity" => {
            "[prompt.descriptions]\npositive = \"this text expresses a positive opinion .\"\n\
             negative = \"this text expresses a negative opinion .\""
        }
        _ => "",
    };
    sentiment_rows(dir, "train.jsonl", "train.jsonl", 48);
    sentiment_rows(dir, "valid.jsonl", "valid.jsonl", 16);
    format!(
        r#"
name = "t"
model = "{{fixtures}}/models/{model}"
method = "{method}"
output = "{{dir}}/run"
[data]
train = "{{dir}}/train.jsonl"
valid = "{{dir}}/valid.jsonl"
max_length = 48
[prompt]
template = "{{text}} it was {{mask}} ."
{labels}
[train]
epochs = 12
batch_size = 8
lr = 3e-3
warmup = 0
seed = 3
metric = "accuracy"
"#
    )
}

fn train_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "train")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

fn assert_learns(recipe: &Recipe) {
    let summary = pipeline::run(recipe, &mut Silent).unwrap();
    let losses = train_losses(&summary.output);
    let k = losses.len() / 4;
    let first: f64 = losses[..k].iter().sum::<f64>() / k as f64;
    let last: f64 = losses[losses.len() - k..].iter().sum::<f64>() / k as f64;
    assert!(
        last < first * 0.85,
        "loss did not go down: {first} -> {last} ({losses:?})"
    );
    for f in [
        "recipe.toml",
        "metrics.jsonl",
        "report.json",
        "training.svg",
        "best/model.safetensors",
        "best/mosaic.json",
        "last/config.json",
        "last/tokenizer.json",
    ] {
        assert!(summary.output.join(f).exists(), "missing {f}");
    }
}

#[test]
fn head_learns_a_tiny_task() {
    let dir = tempfile::tempdir().unwrap();
    assert_learns(&sentiment_recipe(dir.path(), "head", "tiny-bert", &[]));
}

#[test]
fn cloze_learns_a_tiny_task() {
    let dir = tempfile::tempdir().unwrap();
    assert_learns(&sentiment_recipe(dir.path(), "cloze", "tiny-bert-mlm", &[]));
}

#[test]
fn prompt_similarity_learns_a_tiny_task() {
    let dir = tempfile::tempdir().unwrap();
    assert_learns(&sentiment_recipe(
        dir.path(),
        "prompt-similarity",
        "tiny-bert",
        &["train.epochs=20"],
    ));
}

#[test]
fn token_classification_learns_and_reports_entities() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures().join("data/ner/train.jsonl")).unwrap();
    let rows: Vec<&str> = text.lines().take(40).collect();
    std::fs::write(dir.path().join("train.jsonl"), rows.join("\n")).unwrap();
    let r = recipe(
        dir.path(),
        r#"
name = "ner"
model = "{fixtures}/models/tiny-bert"
task = "token-classification"
output = "{dir}/run"
[data]
train = "{dir}/train.jsonl"
split = [0.8, 0.2]
[train]
epochs = 8
batch_size = 8
lr = 3e-3
warmup = 0
"#,
    );
    assert_learns(&r);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/report.json")).unwrap())
            .unwrap();
    assert!(
        report["after"]["report"]["micro avg"]["f1-score"].is_number(),
        "{report}"
    );
}

#[test]
fn cloze_scores_are_the_verbalizer_logits_at_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let r = sentiment_recipe(dir.path(), "cloze", "tiny-bert-mlm", &[]);
    let prepared = pipeline::prepare(&r, &mut Silent).unwrap();
    let Scoring::Cloze {
        mask_id,
        label_words,
    } = prepared.model.scoring.clone()
    else {
        panic!()
    };
    let train = prepared.train.as_ref().unwrap();
    let batch = prepared.collator().collate(&train.examples[..4]).unwrap();
    let tensors = TensorBatch::new(&batch, &Device::Cpu).unwrap();
    let scores: Vec<Vec<f32>> = prepared.model.scores(&tensors).unwrap().to_vec2().unwrap();
    let hidden = prepared
        .model
        .bert
        .hidden_states(
            &tensors.input_ids,
            Some(&tensors.token_type_ids),
            Some(&tensors.attention_mask),
        )
        .unwrap();
    let logits = prepared.model.bert.mlm_logits(&hidden).unwrap();
    for (b, row_scores) in scores.iter().enumerate() {
        let row = &batch.input_ids[b * batch.seq_len..(b + 1) * batch.seq_len];
        let pos = row.iter().position(|&id| id == mask_id).unwrap();
        let at_mask: Vec<f32> = logits.i((b, pos)).unwrap().to_vec1().unwrap();
        for (l, words) in label_words.iter().enumerate() {
            let expected =
                words.iter().map(|&w| at_mask[w as usize]).sum::<f32>() / words.len() as f32;
            assert!(
                (row_scores[l] - expected).abs() < 1e-5,
                "{} vs {expected}",
                row_scores[l]
            );
        }
    }
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    // Dropout off so the two runs see the same function; SGD because it is linear in the gradient (Adam's
    // m/√v turns float noise in near-zero gradients into full-size steps).
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixtures().join("models/tiny-bert").join(f), model.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(fixtures().join("models/tiny-bert/config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    sentiment_rows(dir.path(), "train.jsonl", "train.jsonl", 16);
    let weights = |batch: usize, accum: usize| -> Vec<f32> {
        let r = recipe(
            dir.path(),
            &format!(
                r#"
name = "acc"
model = "{{dir}}/model"
output = "{{dir}}/run-{batch}-{accum}"
[data]
train = "{{dir}}/train.jsonl"
[train]
epochs = 1
batch_size = {batch}
grad_accum = {accum}
optimizer = "sgd"
momentum = 0.0
lr = 0.5
warmup = 0
"#
            ),
        );
        let summary = pipeline::run(&r, &mut Silent).unwrap();
        let w = candle_core::safetensors::load(
            summary.output.join("last/model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let mut names: Vec<&String> = w.keys().collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| w[*n].flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    let big = weights(8, 1);
    let accumulated = weights(4, 2);
    let max = big
        .iter()
        .zip(&accumulated)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-5, "max weight difference {max}");
    let single = weights(4, 1);
    let max = big
        .iter()
        .zip(&single)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max > 1e-4, "different batching must give different weights");
}

#[test]
fn early_stopping_stops_after_patience() {
    let dir = tempfile::tempdir().unwrap();
    let r = sentiment_recipe(
        dir.path(),
        "head",
        "tiny-bert",
        &[
            "train.lr=1e-9",
            "train.epochs=10",
            "train.patience=2",
            "train.metric=\"loss\"",
            "train.min_delta=0.5",
        ],
    );
    let summary = pipeline::run(&r, &mut Silent).unwrap();
    let evals = std::fs::read_to_string(summary.output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"split\":\"valid\"") && !l.contains("final"))
        .count();
    assert_eq!(evals, 3, "one improvement (the first), then patience 2");
}

struct Messages(Vec<String>);
impl Observer for Messages {
    fn message(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
}

fn run_err(r: &Recipe) -> String {
    pipeline::run(r, &mut Silent)
        .expect_err("expected an error")
        .to_string()
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = sentiment_recipe(d, "cloze", "tiny-bert-mlm", &[]);

    std::fs::write(
        d.join("bad.jsonl"),
        "{\"text\": \"fine\", \"label\": \"positive\"}\n{\"text\": \"broken\"\n",
    )
    .unwrap();
    let mut r = base.clone();
    r.data.train = Some(d.join("bad.jsonl"));
    let msg = run_err(&r);
    assert!(msg.contains("bad.jsonl:2"), "{msg}");

    std::fs::write(
        d.join("nofield.jsonl"),
        "{\"txt\": \"fine\", \"label\": \"positive\"}\n",
    )
    .unwrap();
    r.data.train = Some(d.join("nofield.jsonl"));
    let msg = run_err(&r);
    assert!(
        msg.contains("nofield.jsonl:1") && msg.contains("text"),
        "{msg}"
    );

    std::fs::write(
        d.join("unknown.jsonl"),
        "{\"text\": \"meh\", \"label\": \"neutral\"}\n",
    )
    .unwrap();
    r.data.train = Some(d.join("unknown.jsonl"));
    let msg = run_err(&r);
    assert!(
        msg.contains("unknown.jsonl:1") && msg.contains("neutral"),
        "{msg}"
    );

    std::fs::write(d.join("empty.jsonl"), "").unwrap();
    r.data.train = Some(d.join("empty.jsonl"));
    let msg = run_err(&r);
    assert!(msg.contains("empty.jsonl"), "{msg}");

    let mut r = base.clone();
    r.prompt.template = Some("{text} no mask here".into());
    let msg = run_err(&r);
    assert!(
        msg.contains("prompt.template") && msg.contains("mask"),
        "{msg}"
    );

    let mut r = base.clone();
    r.prompt.verbalizer.remove("negative");
    let msg = run_err(&r);
    assert!(msg.contains("negative"), "{msg}");

    // A verbalizer word the tokenizer splits: a warning naming it, and the first piece is used.
    let mut r = base.clone();
    r.prompt.verbalizer.insert(
        "positive".into(),
        mosaic_train::recipe::Verbalization::One("movies".into()),
    );
    r.train.epochs = 1;
    let mut messages = Messages(Vec::new());
    pipeline::run(&r, &mut messages).unwrap();
    assert!(
        messages
            .0
            .iter()
            .any(|m| m.contains("`movies`") && m.contains("pieces")),
        "{:?}",
        messages.0
    );
}

#[test]
fn non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let r = sentiment_recipe(
        dir.path(),
        "head",
        "tiny-bert",
        &[
            "train.lr=1e30",
            "train.optimizer=\"sgd\"",
            "train.max_grad_norm=0.0",
            "train.epochs=20",
        ],
    );
    let msg = run_err(&r);
    assert!(msg.contains("non-finite") && msg.contains("step"), "{msg}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("run"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial") || n.contains(".tmp") || n.contains(".old"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn cloze_demonstrations_are_prepended_and_saved_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let r = sentiment_recipe(
        dir.path(),
        "cloze",
        "tiny-bert-mlm",
        &["prompt.shots=1", "train.epochs=1", "data.max_length=64"],
    );
    // Short rows, so two demonstrations and the query fit the tiny model's 64 positions.
    let rows = [
        "{\"text\": \"good food\", \"label\": \"positive\"}",
        "{\"text\": \"bad film\", \"label\": \"negative\"}",
    ];
    for f in ["train.jsonl", "valid.jsonl"] {
        std::fs::write(dir.path().join(f), rows.repeat(4).join("\n")).unwrap();
    }
    let summary = pipeline::run(&r, &mut Silent).unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(summary.output.join("best/mosaic.json")).unwrap(),
    )
    .unwrap();
    let template = meta["template"].as_str().unwrap();
    // One demonstration per label, each with its label word where the mask was, then the query template.
    assert!(template.ends_with("{text} it was {mask} ."), "{template}");
    assert_eq!(template.matches("{mask}").count(), 1, "{template}");
    assert!(
        template.contains("it was great .") && template.contains("it was terrible ."),
        "{template}"
    );

    // Demonstrations are for cloze only: a head recipe asking for them is refused when it is read.
    let text = sentiment_text(dir.path(), "head", "tiny-bert");
    let msg = Recipe::from_toml_str_with_overrides(&text, "test.toml", &["prompt.shots=1"])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("prompt.shots"), "{msg}");
}

#[test]
fn the_report_counts_only_the_parameters_that_train() {
    let tmp = tempfile::tempdir().unwrap();
    let r = sentiment_recipe(
        tmp.path(),
        "head",
        "tiny-bert",
        &["train.freeze=all-but-head", "train.epochs=1"],
    );
    pipeline::run(&r, &mut Silent).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.output.join("report.json")).unwrap())
            .unwrap();
    let prepared = pipeline::prepare(&r, &mut Silent).unwrap();
    let count = |keep: &dyn Fn(&str) -> bool| -> u64 {
        prepared
            .model
            .bert
            .params
            .all()
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(_, v)| v.elem_count() as u64)
            .sum()
    };
    let head = count(&|n| n.starts_with("classifier.") || n.contains("pooler."));
    let total = count(&|_| true);
    assert!(head > 0 && head < total);
    assert_eq!(report["trainable_parameters"].as_u64(), Some(head));
}

/// The loss every text method trains on is the kernels crate's fused softmax cross-entropy of its scores, bit for
/// bit (for sequence and token labels alike).
#[test]
fn the_text_loss_is_the_fused_cross_entropy() {
    let dir = tempfile::tempdir().unwrap();
    for (method, model) in [("head", "tiny-bert"), ("cloze", "tiny-bert-mlm")] {
        let r = sentiment_recipe(dir.path(), method, model, &[]);
        let prepared = pipeline::prepare(&r, &mut Silent).unwrap();
        prepared.model.bert.set_training(false);
        let train = prepared.train.as_ref().unwrap();
        let batch = prepared.collator().collate(&train.examples[..4]).unwrap();
        let tensors = TensorBatch::new(&batch, &Device::Cpu).unwrap();
        let (loss, counted) = prepared.model.loss_sum(&tensors).unwrap();
        let scores = prepared.model.scores(&tensors).unwrap();
        let (fused, n) = mosaic_kernels::cross_entropy_sum(&scores, &tensors.labels, 0.0).unwrap();
        assert_eq!(counted, n);
        assert_eq!(
            loss.to_scalar::<f32>().unwrap().to_bits(),
            fused.to_scalar::<f32>().unwrap().to_bits(),
            "{method}"
        );
    }
}
