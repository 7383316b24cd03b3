//! Causal-LM training on the tiny GPT-2 fixture: response-only labels with EOS always counted, file:line errors for
//! bad rows, gradient accumulation equal to one big batch, and the bundled instruction recipe end to end.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::{Encoder, IGNORE_INDEX};
use mosaic_prompt::InstructionFormat;
use mosaic_train::causal_lm::{self, LmEncoder, RowFormat};
use mosaic_train::observer::Silent;
use mosaic_train::pipeline;
use mosaic_train::recipe::Recipe;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn gpt2_dir() -> PathBuf {
    fixtures().join("models/tiny-gpt2")
}

fn lm_encoder(format: InstructionFormat, max_length: usize) -> LmEncoder {
    let dir = gpt2_dir();
    LmEncoder {
        encoder: Encoder::from_file(dir.join("tokenizer.json")).unwrap(),
        format: RowFormat::Instruction {
            template: Box::new(format.template(Some(&dir)).unwrap()),
            messages_field: "messages".into(),
        },
        eos_id: 0,
        max_length,
    }
}

/// The bundled recipe with absolute paths, writing into `out`; `overrides` as `--set` takes them.
fn instruct_recipe(out: &Path, overrides: &[String]) -> Recipe {
    let text = std::fs::read_to_string(fixtures().join("recipes/instruct-tiny.toml")).unwrap();
    let text = text.replace("\"../", &format!("\"{}/", fixtures().display()));
    // A plain LM run reads no instruction format: the bundled instruction recipe's is dropped for it.
    let plain_lm = overrides.iter().any(|o| o == "method=lm");
    let text = if plain_lm {
        text.replace("format = \"chatml\"\n", "")
    } else {
        text
    };
    let mut all = vec![format!("output={}", out.display())];
    all.extend(overrides.iter().cloned());
    Recipe::from_toml_str_with_overrides(&text, "instruct-tiny.toml", &all).unwrap()
}

#[test]
fn labels_cover_the_response_and_eos_only() {
    let enc = lm_encoder(InstructionFormat::Alpaca, 512);
    let row = serde_json::json!({"instruction": "Reverse", "input": "cat", "output": "tac"});
    let (example, truncated) = enc.encode_row(&row).unwrap().unwrap();
    assert!(!truncated);
    let counted: Vec<u32> = example
        .labels
        .iter()
        .filter(|&&l| l != IGNORE_INDEX)
        .map(|&l| l as u32)
        .collect();
    // Alpaca ends the response with the EOS, which is also the padding id here: it still counts.
    assert_eq!(counted.last(), Some(&0));
    assert_eq!(example.labels.last(), Some(&0));
    let text = enc.encoder.tokenizer().decode(&counted, false).unwrap();
    assert_eq!(text, "tac<|endoftext|>");
    // Everything before the response is masked.
    let first = example
        .labels
        .iter()
        .position(|&l| l != IGNORE_INDEX)
        .unwrap();
    assert!(first > 10);
    assert!(example.labels[..first].iter().all(|&l| l == IGNORE_INDEX));
}

#[test]
fn chatml_appends_eos_and_truncation_keeps_the_end() {
    let enc = lm_encoder(InstructionFormat::ChatMl, 512);
    let row = serde_json::json!({"messages": [
        {"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]});
    let (example, _) = enc.encode_row(&row).unwrap().unwrap();
    assert_eq!(example.input_ids.last(), Some(&0));
    assert_eq!(example.labels.last(), Some(&0));
    // Too long: the start goes, the response and the EOS stay.
    let keep = 4;
    let short = lm_encoder(InstructionFormat::ChatMl, keep);
    let (cut, truncated) = short.encode_row(&row).unwrap().unwrap();
    assert!(truncated);
    let n = example.input_ids.len();
    assert_eq!(cut.input_ids[..], example.input_ids[n - keep..]);
    assert_eq!(cut.labels[..], example.labels[n - keep..]);
    // Nothing left to learn (one token predicts nothing): the example is dropped.
    let tiny = lm_encoder(InstructionFormat::ChatMl, 1);
    assert!(tiny.encode_row(&row).unwrap().is_none());
}

#[test]
fn a_conversation_without_an_assistant_turn_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
    )
    .unwrap();
    let err = lm_encoder(InstructionFormat::Alpaca, 64)
        .load(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.jsonl:2:"), "{err}");
    assert!(err.to_lowercase().contains("assistant"), "{err}");
}

#[test]
fn recipe_keys_are_checked() {
    let err = Recipe::from_toml_str(
        "model = \"m\"\ntask = \"causal-lm\"\n[data]\ntrain = \"t.jsonl\"\n",
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`method`"), "{err}");
    let err = Recipe::from_toml_str(
        "model = \"m\"\nmethod = \"instruction\"\n[data]\ntrain = \"t.jsonl\"\n",
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`task`"), "{err}");
    let err = Recipe::from_toml_str(
        "model = \"m\"\ntask = \"causal-lm\"\nmethod = \"lm\"\n[data]\ntrain = \"t.jsonl\"\nformat = \"alpacca\"\n",
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("did you mean \"alpaca\""), "{err}");
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    // Dropout off so both runs compute the same function; SGD because it is linear in the gradient. The examples
    // have different numbers of counted tokens, so normalising per micro-batch instead of per window would differ.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(gpt2_dir().join(f), model.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(gpt2_dir().join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    for k in ["attn_pdrop", "embd_pdrop", "resid_pdrop"] {
        config[k] = 0.0.into();
    }
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let weights = |batch: usize, accum: usize| -> Vec<f32> {
        let out = dir.path().join(format!("run-{batch}-{accum}"));
        let r = instruct_recipe(
            &out,
            &[
                format!("model={}", model.display()),
                "train.epochs=1".into(),
                format!("train.batch_size={batch}"),
                format!("train.grad_accum={accum}"),
                "train.optimizer=sgd".into(),
                "train.momentum=0.0".into(),
                "train.weight_decay=0.0".into(),
                "train.max_grad_norm=0".into(),
                "train.lr=0.5".into(),
                "train.warmup=0".into(),
                "train.schedule=constant".into(),
                // One window of 16 examples: the first 16 of the seeded epoch order.
                format!("data.train={}", {
                    let text =
                        std::fs::read_to_string(fixtures().join("data/instructions/train.jsonl"))
                            .unwrap();
                    let p = dir.path().join("train16.jsonl");
                    let rows: Vec<&str> = text.lines().take(16).collect();
                    std::fs::write(&p, rows.join("\n")).unwrap();
                    p.display().to_string()
                }),
            ],
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
    let initial: Vec<f32> = {
        let w =
            candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu).unwrap();
        let mut names: Vec<&String> = w.keys().collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| w[*n].flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    let big = weights(16, 1);
    let accumulated = weights(4, 4);
    let moved = big
        .iter()
        .zip(&initial)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let max = big
        .iter()
        .zip(&accumulated)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "the step moved nothing ({moved})");
    assert!(max < 1e-5, "weights differ by {max} (moved {moved})");
}

#[test]
fn the_instruction_recipe_runs_and_the_loss_goes_down() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = instruct_recipe(&out, &[]);
    pipeline::run(&r, &mut Silent).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let before = report["before"]["loss"].as_f64().unwrap();
    let after = report["after"]["loss"].as_f64().unwrap();
    assert!(after < before, "valid loss {before} -> {after}");
    let ppl = report["after"]["perplexity"].as_f64().unwrap();
    assert!((ppl - after.exp()).abs() < 1e-6 * ppl);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let train_losses: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert!(train_losses.len() >= 4);
    assert!(train_losses.last().unwrap() < train_losses.first().unwrap());
    for d in ["best", "last"] {
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "mosaic.json",
        ] {
            assert!(out.join(d).join(f).is_file(), "{d}/{f}");
        }
    }
    assert!(causal_lm::is_causal_lm_checkpoint(&out.join("best")));
    // `mosaic eval` on the best checkpoint gives the report's numbers.
    let e = causal_lm::evaluate_checkpoint(
        &out.join("best"),
        None,
        &fixtures().join("data/instructions/valid.jsonl"),
        16,
        &Device::Cpu,
    )
    .unwrap();
    assert!((e.loss - after).abs() < 1e-4, "{} vs {after}", e.loss);
}

#[test]
fn plain_lm_training_counts_every_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"the cat sat\"}\n{\"text\": \"a dog ran far\"}\n{\"text\": \"the sun is hot\"}\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let r = instruct_recipe(
        &out,
        &[
            "method=lm".into(),
            format!("data.train={}", data.display()),
            format!("data.valid={}", data.display()),
            "train.epochs=3".into(),
            "train.batch_size=2".into(),
        ],
    );
    pipeline::run(&r, &mut Silent).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["after"]["loss"].as_f64().unwrap() < report["before"]["loss"].as_f64().unwrap());
}

fn read_report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn load_weights(path: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn same(a: &candle_core::Tensor, b: &candle_core::Tensor) -> bool {
    a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The first `n` rows of a fixture file, copied into `dir`.
fn head(dir: &Path, fixture: &str, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(fixtures().join(fixture)).unwrap();
    let rows: Vec<&str> = text.lines().take(n).collect();
    let path = dir.join(fixture.replace('/', "-"));
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

#[test]
fn exact_match_trims_whitespace_only_and_breaks_down_by_group() {
    use mosaic_train::metrics::exact_match::{ExactMatch, is_match, normalize};
    assert_eq!(normalize("  Paris \n"), "Paris");
    assert!(is_match(" 14\n", "14"));
    assert!(!is_match("paris", "Paris"), "case counts");
    assert!(!is_match("14.", "14"), "punctuation counts");
    let groups = [
        Some("math".to_string()),
        Some("math".to_string()),
        Some("city".to_string()),
        None,
    ];
    let s =
        ExactMatch::compute(&["7 ", "8", "Rome", "x"], &["7", "9", "Rome", "y"], &groups).unwrap();
    assert_eq!(s.count, 4);
    assert!((s.exact_match - 0.5).abs() < 1e-12);
    assert!((s.by_group["math"].exact_match - 0.5).abs() < 1e-12);
    assert_eq!(s.by_group["math"].count, 2);
    assert!((s.by_group["city"].exact_match - 1.0).abs() < 1e-12);
    assert_eq!(s.by_group.len(), 2);
    let empty = ExactMatch::compute::<&str, &str>(&[], &[], &[]).unwrap();
    assert_eq!(empty.exact_match, 0.0);
    assert!(ExactMatch::compute(&["a"], &["a", "b"], &[None, None]).is_err());
}

#[test]
fn init_random_trains_from_a_folder_without_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("init");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(gpt2_dir().join(f), model.join(f)).unwrap();
    }
    let corpus = head(dir.path(), "data/corpus/valid.jsonl", 24);
    let run = |name: &str, extra: &[String]| {
        let out = dir.path().join(name);
        let mut overrides = vec![
            format!("model={}", model.display()),
            "method=lm".into(),
            format!("data.train={}", corpus.display()),
            format!("data.valid={}", corpus.display()),
            "train.epochs=1".into(),
        ];
        overrides.extend(extra.iter().cloned());
        let r = instruct_recipe(&out, &overrides);
        pipeline::run(&r, &mut Silent).map(|_| out)
    };
    // Without `init = "random"` the missing weights are an error.
    assert!(run("pretrained", &[]).is_err());
    let out = run("random", &["init=random".into()]).unwrap();
    // The checkpoint is a complete HF folder that loads back.
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "mosaic.json",
    ] {
        assert!(out.join("best").join(f).is_file(), "best/{f}");
    }
    mosaic_models::Gpt2::from_folder(&out.join("best"), 0, &Device::Cpu).unwrap();
    let report = read_report(&out);
    assert_eq!(report["init"], "random");
    assert!(report["after"]["loss"].as_f64().unwrap() < report["before"]["loss"].as_f64().unwrap());
    // The seed decides the initial weights: the same seed gives the same run.
    let again = run("again", &["init=random".into()]).unwrap();
    assert_eq!(
        std::fs::read(out.join("last/model.safetensors")).unwrap(),
        std::fs::read(again.join("last/model.safetensors")).unwrap()
    );
    assert!(out.join("training.svg").is_file());
}

#[test]
fn frozen_parameters_do_not_change_and_trainable_ones_do() {
    let dir = tempfile::tempdir().unwrap();
    let initial = load_weights(&gpt2_dir().join("model.safetensors"));
    let train = head(dir.path(), "data/instructions/train.jsonl", 16);
    let run = |name: &str, freeze: &str| {
        let out = dir.path().join(name);
        let r = instruct_recipe(
            &out,
            &[
                format!("train.freeze={freeze}"),
                format!("data.train={}", train.display()),
                "train.epochs=1".into(),
                "train.lr=1e-2".into(),
            ],
        );
        pipeline::run(&r, &mut Silent).map(|_| out)
    };
    // The tiny GPT-2 has 2 blocks and a tied head.
    let out = run("top1", "all-but-top-1").unwrap();
    let after = load_weights(&out.join("last/model.safetensors"));
    for (name, before) in &initial {
        let trains = name.contains(".h.1.") || name.contains("ln_f.");
        assert_eq!(
            !same(before, &after[name]),
            trains,
            "{name} should {}change",
            if trains { "" } else { "not " }
        );
    }
    let report = read_report(&out);
    let trainable = report["trainable_parameters"].as_u64().unwrap();
    let total = report["parameters"].as_u64().unwrap();
    let expected: usize = initial
        .iter()
        .filter(|(n, _)| n.contains(".h.1.") || n.contains("ln_f."))
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(trainable as usize, expected);
    assert!(trainable < total);

    let out = run("embeddings", "embeddings").unwrap();
    let after = load_weights(&out.join("last/model.safetensors"));
    for (name, before) in &initial {
        let embedding = name.contains("wte.") || name.contains("wpe.");
        assert_eq!(same(before, &after[name]), embedding, "{name}");
    }

    let err = run("head", "all-but-head").unwrap_err().to_string();
    assert!(
        err.contains("all-but-head") && err.contains("ties"),
        "{err}"
    );
    let err = run("too-many", "all-but-top-5").unwrap_err().to_string();
    assert!(err.contains("only 2 blocks"), "{err}");
}

#[test]
fn exact_match_is_reported_before_and_after_per_type() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let test = head(dir.path(), "data/instruct/test.jsonl", 12);
    let r = instruct_recipe(
        &out,
        &[
            format!("data.test={}", test.display()),
            "train.epochs=1".into(),
        ],
    );
    pipeline::run(&r, &mut Silent).unwrap();
    let report = read_report(&out);
    let em = &report["exact_match"];
    assert_eq!(em["split"], "test");
    for when in ["before", "after"] {
        let value = em[when]["exact_match"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{when}: {value}");
        assert_eq!(em[when]["count"], 12);
        let by_type = em[when]["by_type"].as_object().unwrap();
        assert!(by_type.contains_key("arithmetic"), "{by_type:?}");
        let counted: u64 = by_type.values().map(|t| t["count"].as_u64().unwrap()).sum();
        assert_eq!(counted, 12);
    }
    let predictions = em["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 12);
    assert!(
        predictions
            .iter()
            .all(|p| p["reference"].is_string() && p["prediction"].is_string())
    );
    // Both figures are in metrics.jsonl too; the plot is written.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r.get("exact_match").is_some())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["before"], true);
    assert_eq!(records[1]["final"], true);
    assert!(
        std::fs::read_to_string(out.join("training.svg"))
            .unwrap()
            .contains("<svg")
    );
    // `mosaic eval` on the best checkpoint answers the same way.
    let again = causal_lm::exact_match_checkpoint(&out.join("best"), None, &test, &Device::Cpu)
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::json!(again.score.exact_match),
        em["after"]["exact_match"]
    );
    let predicted: Vec<&str> = predictions
        .iter()
        .map(|p| p["prediction"].as_str().unwrap())
        .collect();
    assert_eq!(again.predictions, predicted);
}

/// A checkpoint save that fails leaves the previous checkpoint whole (it is built beside it and swapped in, never
/// deleted first).
#[test]
fn a_failed_checkpoint_save_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("best");
    let model = mosaic_models::Gpt2::from_folder(&gpt2_dir(), 0, &Device::Cpu).unwrap();
    let meta = causal_lm::LmMeta {
        task: "causal-lm".into(),
        method: "lm".into(),
        format: None,
        messages_field: "messages".into(),
        text_field: "text".into(),
        max_length: 32,
        epoch: 1,
        step: 1,
        metrics: Default::default(),
    };
    causal_lm::save_checkpoint(&model, &meta, &gpt2_dir(), &dir).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    // A file where the staging folder goes makes the next save fail before anything is swapped.
    let staging = tmp
        .path()
        .join(format!(".best.{}.partial", std::process::id()));
    std::fs::write(&staging, b"in the way").unwrap();
    assert!(causal_lm::save_checkpoint(&model, &meta, &gpt2_dir(), &dir).is_err());
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(dir.join("mosaic.json").is_file() && dir.join("config.json").is_file());
}

/// FGM applies to causal-LM runs (it perturbs GPT-2's token embeddings `wte`) instead of being ignored.
#[test]
fn fgm_perturbs_the_token_embeddings_of_a_causal_lm() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[String]| {
        let out = tmp.path().join(name);
        let mut overrides = vec!["train.epochs=1".to_string()];
        overrides.extend_from_slice(extra);
        pipeline::run(&instruct_recipe(&out, &overrides), &mut Silent).unwrap();
        std::fs::read(out.join("last/model.safetensors")).unwrap()
    };
    let plain = run("plain", &[]);
    let fgm = run("fgm", &["train.fgm_epsilon=0.5".to_string()]);
    assert_ne!(plain, fgm, "train.fgm_epsilon changed nothing");
}
