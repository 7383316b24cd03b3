//! Whole-model benchmark cases, as a user composes them from the crates: a MiniLM (BERT) classifier trained with
//! AdamW, the same encoder's inference, the bundled 1M-parameter GPT-2 trained with AdamW and clipping, and GPT-2
//! greedy generation with the KV cache. `benches/scripts/torch_model.py` runs the same cases in PyTorch +
//! transformers.
//!
//! Each case runs in a process of its own (the `model` bench re-runs itself with `--case NAME`), so that the peak
//! resident memory it reports is the case's alone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mosaic_models::{Bert, BertTask, GenerationConfig, Gpt2, Gpt2Config, generate};
use mosaic_peft::{AdapterConfig, Lora, LoraConfig, TargetModules, TaskType};
use mosaic_train::gradients::clip_grad_norm;
use mosaic_train::optim::{AdamW, AdamWConfig, Optimizer};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// What one case measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    /// `BertForSequenceClassification` (2 labels, train mode): forward, cross-entropy, backward, AdamW step.
    MiniLmTrain { batch: usize, seq: usize },
    /// As `MiniLmTrain` with PEFT's LoRA (r = 8 on `query` and `value`, the classifier trained whole): the
    /// base weights frozen (no weight gradients), AdamW over the adapter and the head only.
    MiniLmLoraTrain { batch: usize, seq: usize },
    /// `BertModel` forward without gradients.
    MiniLmInfer { batch: usize, seq: usize },
    /// The bundled 1M-parameter GPT-2: forward, LM loss, backward, clip to norm 1, AdamW step.
    Gpt2Train { batch: usize, seq: usize },
    /// GPT-2 (the 124M `gpt2` shape, random weights) greedy generation of one prompt with the KV cache, no EOS.
    Gpt2Generate { prompt: usize, new_tokens: usize },
}

/// A named case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCase {
    pub name: &'static str,
    pub kind: CaseKind,
}

/// The cases of `cargo xtask bench model`, in table order (the peer script knows the same names).
pub const MODEL_CASES: [ModelCase; 8] = [
    ModelCase {
        name: "minilm-train-16x64",
        kind: CaseKind::MiniLmTrain { batch: 16, seq: 64 },
    },
    ModelCase {
        name: "minilm-train-32x128",
        kind: CaseKind::MiniLmTrain {
            batch: 32,
            seq: 128,
        },
    },
    ModelCase {
        name: "minilm-lora-train-16x64",
        kind: CaseKind::MiniLmLoraTrain { batch: 16, seq: 64 },
    },
    ModelCase {
        name: "minilm-lora-train-32x128",
        kind: CaseKind::MiniLmLoraTrain {
            batch: 32,
            seq: 128,
        },
    },
    ModelCase {
        name: "minilm-infer-64x128",
        kind: CaseKind::MiniLmInfer {
            batch: 64,
            seq: 128,
        },
    },
    ModelCase {
        name: "gpt2-1m-train-8x48",
        kind: CaseKind::Gpt2Train { batch: 8, seq: 48 },
    },
    ModelCase {
        name: "gpt2-1m-train-8x128",
        kind: CaseKind::Gpt2Train { batch: 8, seq: 128 },
    },
    ModelCase {
        name: "gpt2-generate-32+128",
        kind: CaseKind::Gpt2Generate {
            prompt: 32,
            new_tokens: 128,
        },
    },
];

/// The case called `name`.
pub fn find_case(name: &str) -> Option<ModelCase> {
    MODEL_CASES.iter().copied().find(|c| c.name == name)
}

/// Where the models come from.
#[derive(Debug, Clone)]
pub struct ModelInputs {
    /// An HF BERT folder (all-MiniLM-L6-v2).
    pub minilm: PathBuf,
    /// `config.json` of the bundled 1M-parameter GPT-2 (`fixtures/models/gpt2-small-init`).
    pub gpt2_small_config: PathBuf,
}

/// What a case run reports: one JSON line on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub case: String,
    /// `mosaic` or `torch`.
    pub imp: String,
    /// Median milliseconds per call (a step, a forward, or a whole generation).
    pub ms: f64,
    /// Generated tokens per second (generation only).
    pub tokens_per_s: Option<f64>,
    /// Peak resident set of the process (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Warm-up and measured calls per case.
#[derive(Debug, Clone, Copy)]
pub struct Reps {
    pub warm: usize,
    pub measured: usize,
}

impl Reps {
    pub const FULL: Reps = Reps {
        warm: 2,
        measured: 5,
    };
    pub const QUICK: Reps = Reps {
        warm: 1,
        measured: 2,
    };
}

/// A prepared case: calling it runs one measured unit.
type Step = Box<dyn FnMut() -> candle_core::Result<()>>;

/// Loads the models and inputs of `case`; the returned closure is what is timed.
pub fn prepare(case: &ModelCase, inputs: &ModelInputs) -> Result<Step, String> {
    let dev = Device::Cpu;
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{}: {what}: {e}", case.name);
    match case.kind {
        CaseKind::MiniLmTrain { batch, seq } => {
            let bert = minilm_classifier(inputs, &dev).map_err(|e| fail("loading MiniLM", &e))?;
            let cfg = AdamWConfig {
                lr: 2e-5,
                ..AdamWConfig::default()
            };
            let opt = AdamW::new(bert.params.all(), cfg).map_err(|e| fail("AdamW", &e))?;
            classifier_step(bert, opt, batch, seq).map_err(|e| fail("inputs", &e))
        }
        CaseKind::MiniLmLoraTrain { batch, seq } => {
            let bert = minilm_classifier(inputs, &dev).map_err(|e| fail("loading MiniLM", &e))?;
            let mut lora =
                LoraConfig::new(TargetModules::Names(vec!["query".into(), "value".into()]));
            lora.modules_to_save = vec!["classifier".into()];
            let config = AdapterConfig {
                lora,
                base_model: None,
                task_type: Some(TaskType::SeqCls),
            };
            let adapter = Lora::apply(&bert.params, bert.mode.clone(), config, 0)
                .map_err(|e| fail("LoRA", &e))?;
            let trainable = adapter.trainable();
            let train_ids: std::collections::HashSet<_> =
                trainable.iter().map(|(_, v)| v.id()).collect();
            // As the Trainer does: what does not train is read detached, so it costs no weight gradient.
            for (_, v) in bert.params.all() {
                if !train_ids.contains(&v.id()) {
                    mosaic_models::grad_mode::set_frozen(&v, true);
                }
            }
            let cfg = AdamWConfig {
                lr: 2e-4,
                ..AdamWConfig::default()
            };
            let opt = AdamW::new(trainable, cfg).map_err(|e| fail("AdamW", &e))?;
            classifier_step(bert, opt, batch, seq).map_err(|e| fail("inputs", &e))
        }
        CaseKind::MiniLmInfer { batch, seq } => {
            let bert = Bert::from_folder(&inputs.minilm, Some(BertTask::Base), None, 0, &dev)
                .map_err(|e| fail("loading MiniLM", &e))?;
            bert.set_training(false);
            let (ids, mask) = token_batch(batch, seq, bert.config.vocab_size, &dev)
                .map_err(|e| fail("inputs", &e))?;
            Ok(Box::new(move || {
                mosaic_models::no_grad(|| bert.hidden_states(&ids, None, Some(&mask))).map(drop)
            }))
        }
        CaseKind::Gpt2Train { batch, seq } => {
            let config = Gpt2Config::read(&inputs.gpt2_small_config)
                .map_err(|e| fail("GPT-2 config", &e))?;
            let vocab = config.vocab_size;
            let gpt2 = Gpt2::new(config, 0, &dev).map_err(|e| fail("GPT-2", &e))?;
            gpt2.set_training(true);
            let cfg = AdamWConfig {
                lr: 2e-3,
                weight_decay: 0.01,
                ..AdamWConfig::default()
            };
            let params = gpt2.params.all();
            let mut opt = AdamW::new(params.clone(), cfg).map_err(|e| fail("AdamW", &e))?;
            let ids = random_ids(batch, seq, 1..vocab as u32, &dev).map_err(|e| fail("ids", &e))?;
            Ok(Box::new(move || {
                let (sum, count) = gpt2.lm_loss_sum(&ids, None, None)?;
                let loss = (sum / count.max(1) as f64)?;
                let mut grads = loss.backward()?;
                clip_grad_norm(&params, &mut grads, 1.0)?;
                opt.step(&grads)
            }))
        }
        CaseKind::Gpt2Generate { prompt, new_tokens } => {
            let config = gpt2_124m_config(prompt + new_tokens)?;
            let vocab = config.vocab_size as u32;
            let gpt2 = Gpt2::new(config, 0, &dev).map_err(|e| fail("GPT-2", &e))?;
            gpt2.set_training(false);
            let mut rng = StdRng::seed_from_u64(1);
            let prompts = vec![(0..prompt).map(|_| rng.random_range(1..vocab)).collect()];
            let gen_cfg = GenerationConfig::greedy(new_tokens);
            Ok(Box::new(move || {
                let out = mosaic_models::no_grad(|| generate(&gpt2, &prompts, &gen_cfg, None))
                    .map_err(candle_core::Error::wrap)?;
                let made = out.first().map_or(0, |g| g.token_ids.len());
                if made != new_tokens {
                    candle_core::bail!("generated {made} tokens, wanted {new_tokens}");
                }
                Ok(())
            }))
        }
    }
}

/// MiniLM as `BertForSequenceClassification` with 2 labels, in training mode.
fn minilm_classifier(inputs: &ModelInputs, dev: &Device) -> mosaic_models::Result<Bert> {
    let labels = Some(vec!["0".to_string(), "1".to_string()]);
    let bert = Bert::from_folder(
        &inputs.minilm,
        Some(BertTask::SequenceClassification),
        labels,
        0,
        dev,
    )?;
    bert.set_training(true);
    Ok(bert)
}

/// One classifier train step on a fixed batch: forward, cross-entropy, backward, the optimizer's step.
fn classifier_step(
    bert: Bert,
    mut opt: AdamW,
    batch: usize,
    seq: usize,
) -> candle_core::Result<Step> {
    let dev = Device::Cpu;
    let (ids, mask) = token_batch(batch, seq, bert.config.vocab_size, &dev)?;
    let labels = Tensor::new((0..batch).map(|i| (i % 2) as i64).collect::<Vec<_>>(), &dev)?;
    Ok(Box::new(move || {
        let hidden = bert.hidden_states(&ids, None, Some(&mask))?;
        let logits = bert
            .classifier_logits(&hidden)
            .map_err(candle_core::Error::wrap)?;
        let loss = mosaic_models::loss::cross_entropy(&logits, &labels)?;
        let grads = loss.backward()?;
        opt.step(&grads)
    }))
}

/// The `gpt2` (124M) shape with room for `context` positions (at least HF's 1024).
fn gpt2_124m_config(context: usize) -> Result<Gpt2Config, String> {
    let json = serde_json::json!({
        "model_type": "gpt2", "vocab_size": 50257, "n_positions": context.max(1024), "n_embd": 768,
        "n_layer": 12, "n_head": 12, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "tie_word_embeddings": true
    });
    Gpt2Config::parse(&json.to_string(), Path::new("gpt2-124m.json")).map_err(|e| e.to_string())
}

/// Ids in `1000..20000` (as the peer script draws them; within the vocabulary of a smaller model) and an
/// all-ones mask.
fn token_batch(
    batch: usize,
    seq: usize,
    vocab: usize,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let hi = vocab.min(20000) as u32;
    let ids = random_ids(batch, seq, (hi / 2).min(1000)..hi, dev)?;
    let mask = Tensor::ones((batch, seq), DType::U32, dev)?;
    Ok((ids, mask))
}

fn random_ids(
    batch: usize,
    seq: usize,
    range: std::ops::Range<u32>,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(0);
    let ids: Vec<u32> = (0..batch * seq)
        .map(|_| rng.random_range(range.clone()))
        .collect();
    Tensor::from_vec(ids, (batch, seq), dev)
}

/// Runs `step` `reps.warm` times, then `reps.measured` times; the median milliseconds of the measured calls.
pub fn median_ms(step: &mut Step, reps: Reps) -> candle_core::Result<f64> {
    for _ in 0..reps.warm {
        step()?;
    }
    let mut times = Vec::with_capacity(reps.measured);
    for _ in 0..reps.measured.max(1) {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Runs one case in this process and reports it.
pub fn run_case(case: &ModelCase, inputs: &ModelInputs, reps: Reps) -> Result<CaseResult, String> {
    let mut step = prepare(case, inputs)?;
    let ms = median_ms(&mut step, reps).map_err(|e| format!("{}: {e}", case.name))?;
    let tokens_per_s = match case.kind {
        CaseKind::Gpt2Generate { new_tokens, .. } => Some(new_tokens as f64 / (ms / 1e3)),
        _ => None,
    };
    Ok(CaseResult {
        case: case.name.to_string(),
        imp: "mosaic".into(),
        ms,
        tokens_per_s,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// This process's peak resident set (`VmHWM` in `/proc/self/status`), where the system reports one.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models")
    }

    #[test]
    fn case_names_are_unique_and_found() {
        for c in MODEL_CASES {
            assert_eq!(find_case(c.name), Some(c));
        }
        assert!(find_case("nope").is_none());
    }

    #[test]
    fn every_training_case_runs_on_the_tiny_models() {
        // The tiny BERT stands in for MiniLM: the same code path at a smoke-test size.
        let inputs = ModelInputs {
            minilm: fixtures().join("tiny-bert"),
            gpt2_small_config: fixtures().join("gpt2-small-init/config.json"),
        };
        let small = [
            ModelCase {
                name: "t",
                kind: CaseKind::MiniLmTrain { batch: 2, seq: 8 },
            },
            ModelCase {
                name: "l",
                kind: CaseKind::MiniLmLoraTrain { batch: 2, seq: 8 },
            },
            ModelCase {
                name: "i",
                kind: CaseKind::MiniLmInfer { batch: 2, seq: 8 },
            },
            ModelCase {
                name: "g",
                kind: CaseKind::Gpt2Train { batch: 2, seq: 8 },
            },
        ];
        for case in small {
            let r = run_case(&case, &inputs, Reps::QUICK).unwrap();
            assert!(r.ms > 0.0, "{r:?}");
        }
    }
}
