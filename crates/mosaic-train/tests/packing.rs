//! Sequence packing for causal-LM training on the tiny GPT-2 fixture: several samples per row with positions that
//! restart and attention that stays inside each sample, so the summed token loss and every gradient equal those of
//! the same samples unpacked; labels never let one sample predict the next; too-long samples are clear errors.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use mosaic_data::IGNORE_INDEX;
use mosaic_models::Gpt2;
use mosaic_train::causal_lm::{CausalLmTask, LmBatch, LmExample, LmMeta, pack_examples};
use mosaic_train::observer::Observer;
use mosaic_train::pipeline;
use mosaic_train::recipe::Recipe;
use mosaic_train::trainer::WindowPlan;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn gpt2() -> Gpt2 {
    let gpt2 = Gpt2::from_folder(&fixtures().join("models/tiny-gpt2"), 0, &Device::Cpu).unwrap();
    // Dropout off: packed and unpacked runs must compute the same function.
    gpt2.set_training(false);
    gpt2
}

/// A sample of `len` tokens; the first `prompt` tokens do not count (instruction style).
fn sample(len: usize, prompt: usize, salt: u32) -> LmExample {
    let ids: Vec<u32> = (0..len as u32)
        .map(|i| (i * 37 + salt * 101 + 5) % 400)
        .collect();
    let labels = ids
        .iter()
        .enumerate()
        .map(|(t, &id)| {
            if t < prompt {
                IGNORE_INDEX
            } else {
                i64::from(id)
            }
        })
        .collect();
    LmExample::new(ids, labels)
}

/// Samples of different lengths, some with a masked prompt.
fn samples() -> Vec<LmExample> {
    [
        (7, 0),
        (12, 4),
        (3, 0),
        (9, 2),
        (15, 6),
        (5, 0),
        (11, 3),
        (4, 1),
        (8, 0),
        (6, 2),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(len, prompt))| sample(len, prompt, i as u32))
    .collect()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-6)
}

#[test]
fn packed_loss_and_gradients_equal_unpacked() {
    let model = gpt2();
    let params = model.params.all();
    let device = Device::Cpu;
    let examples = samples();
    let packed = pack_examples(examples.clone(), 32).unwrap();
    assert!(packed.len() < examples.len());
    for (row, p) in packed.iter().enumerate() {
        let layout = p.packing.as_ref().unwrap();
        let samples = layout.segment_ids.iter().max().unwrap() + 1;
        assert!(p.input_ids.len() <= 32);
        assert!(samples >= 3, "packed row {row} holds {samples} samples");
    }
    assert_eq!(
        packed.iter().map(LmExample::counted).sum::<usize>(),
        examples.iter().map(LmExample::counted).sum::<usize>()
    );

    // Summed token loss: one padded batch of the samples vs the packed rows.
    let unpacked_batch = LmBatch::collate(&examples, 0, &device).unwrap();
    let packed_batch = LmBatch::collate(&packed, 0, &device).unwrap();
    assert!(unpacked_batch.position_ids.is_none() && unpacked_batch.segment_ids.is_none());
    let loss_sum = |b: &LmBatch| {
        let (sum, n) = model
            .lm_loss_sum_with_layout(&b.input_ids, &b.layout(), Some(&b.labels))
            .unwrap();
        (sum.to_scalar::<f32>().unwrap(), n)
    };
    let (unpacked_sum, unpacked_n) = loss_sum(&unpacked_batch);
    let (packed_sum, packed_n) = loss_sum(&packed_batch);
    assert_eq!(packed_n, unpacked_n);
    assert_eq!(packed_n, unpacked_batch.counted);
    let sum_err = (packed_sum - unpacked_sum).abs() / unpacked_sum.abs();
    println!(
        "packing: {} samples into {} rows; summed token loss packed {packed_sum:.6} vs unpacked \
         {unpacked_sum:.6} over {packed_n} tokens (relative error {sum_err:.2e})",
        examples.len(),
        packed.len()
    );
    assert!(sum_err < 1e-5);

    // Gradients of the window loss: unpacked in one micro-batch, packed split over two, so the normalisation by
    // the window's counted tokens is exercised too.
    // The trainer's own window: the task's micro-batch losses, each divided by the window's counted tokens.
    let meta = LmMeta {
        task: "causal-lm".into(),
        method: "lm".into(),
        format: None,
        messages_field: "messages".into(),
        text_field: "text".into(),
        max_length: 32,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let window = |train: &[LmExample], batches: &[&[usize]]| {
        let task = CausalLmTask {
            model: &model,
            train,
            valid: None,
            pad_id: 0,
            eval_batch: 1,
            device: &device,
            meta: &meta,
            model_dir: std::path::Path::new("."),
        };
        let plan = WindowPlan {
            params: &params,
            fgm: None,
            max_grad_norm: 0.0,
            collective: &mosaic_train::collective::SINGLE_PROCESS,
            buckets: Default::default(),
        };
        let done = plan.run(&task, batches).unwrap().ok().unwrap();
        (done.grads, done.loss)
    };
    let all: Vec<usize> = (0..examples.len()).collect();
    let (g_unpacked, l_unpacked) = window(&examples, &[&all]);
    let rest: Vec<usize> = (1..packed.len()).collect();
    let (g_packed, l_packed) = window(&packed, &[&[0], &rest]);
    let loss_err = (l_packed - l_unpacked).abs() / l_unpacked.abs();
    assert!(loss_err < 1e-5, "window loss {l_packed} vs {l_unpacked}");
    let mut worst = (0f32, String::new());
    for (name, var) in &params {
        let a = g_packed
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no packed gradient for {name}"));
        let b = g_unpacked
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let e = max_rel_diff(a, b);
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    println!(
        "packing: window loss packed {l_packed:.6} vs unpacked {l_unpacked:.6} (relative error {loss_err:.2e}); \
         gradients max relative error {:.2e} ({}) over {} parameters",
        worst.0,
        worst.1,
        params.len()
    );
    assert!(worst.0 < 1e-5, "gradients differ: {worst:?}");
}

#[test]
fn positions_restart_and_labels_never_cross_samples() {
    let a = LmExample::new(vec![10, 11, 12], vec![IGNORE_INDEX, 11, 12]);
    let b = LmExample::new(vec![20, 21], vec![20, 21]);
    let c = LmExample::new(
        vec![30, 31, 32, 33],
        vec![IGNORE_INDEX, IGNORE_INDEX, 32, 33],
    );
    let packed = pack_examples(vec![a.clone(), b.clone(), c.clone()], 16).unwrap();
    assert_eq!(packed.len(), 1);
    let p = &packed[0];
    assert_eq!(p.input_ids, [10, 11, 12, 20, 21, 30, 31, 32, 33]);
    let layout = p.packing.as_ref().unwrap();
    assert_eq!(layout.position_ids, [0, 1, 2, 0, 1, 0, 1, 2, 3]);
    assert_eq!(layout.segment_ids, [0, 0, 0, 1, 1, 2, 2, 2, 2]);
    // Each sample's first label is −100: the token before it (the previous sample's last) predicts nothing.
    let ig = IGNORE_INDEX;
    assert_eq!(p.labels, [ig, 11, 12, ig, 21, ig, ig, 32, 33]);
    assert_eq!(p.counted(), a.counted() + b.counted() + c.counted());

    // Collation: packed and unpacked rows side by side, padding in a segment of its own.
    let batch = LmBatch::collate([p, &b], 0, &Device::Cpu).unwrap();
    let rows = |t: &Option<Tensor>| t.as_ref().unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(
        rows(&batch.position_ids),
        [
            vec![0, 1, 2, 0, 1, 0, 1, 2, 3],
            vec![0, 1, 0, 0, 0, 0, 0, 0, 0]
        ]
    );
    assert_eq!(
        rows(&batch.segment_ids),
        [
            vec![0, 0, 0, 1, 1, 2, 2, 2, 2],
            vec![0, 0, 1, 1, 1, 1, 1, 1, 1]
        ]
    );
    assert_eq!(
        batch.attention_mask.to_vec2::<u32>().unwrap(),
        [vec![1; 9], vec![1, 1, 0, 0, 0, 0, 0, 0, 0]]
    );
    assert_eq!(batch.counted, p.counted() + b.counted());
}

#[test]
fn packing_is_first_fit_in_input_order() {
    let lengths = [6, 6, 3, 4, 10, 1];
    let examples: Vec<LmExample> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| LmExample::new(vec![i as u32; n], vec![i as i64; n]))
        .collect();
    let packed = pack_examples(examples, 10).unwrap();
    let members: Vec<Vec<u32>> = packed
        .iter()
        .map(|p| {
            let mut ids = p.input_ids.clone();
            ids.dedup();
            ids
        })
        .collect();
    // 6 → new row, 6 → new row, 3 → row 0, 4 → row 1, 10 → new row, 1 → row 0 (the first with room).
    assert_eq!(members, [vec![0, 2, 5], vec![1, 3], vec![4]]);
    assert!(packed.iter().all(|p| p.input_ids.len() <= 10));
}

#[test]
fn a_sample_longer_than_the_packing_length_is_a_clear_error() {
    let examples = vec![
        sample(5, 0, 0),
        sample(8, 0, 1),
        sample(21, 2, 2),
        sample(3, 0, 3),
    ];
    let err = pack_examples(examples, 20).unwrap_err().to_string();
    assert!(
        err.contains("example 2")
            && err.contains("21 tokens")
            && err.contains("packing length of 20"),
        "{err}"
    );
}

/// Records the observer's messages.
#[derive(Default)]
struct Messages(Vec<String>);

impl Observer for Messages {
    fn message(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
}

#[test]
fn a_recipe_with_packing_trains_on_packed_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.jsonl");
    let rows: Vec<String> = [
        "the cat sat",
        "a dog ran far",
        "the sun is hot",
        "we go home",
        "it rains",
        "red sky",
    ]
    .iter()
    .map(|t| format!("{{\"text\": \"{t}\"}}"))
    .collect();
    std::fs::write(&data, rows.join("\n")).unwrap();
    let text = std::fs::read_to_string(fixtures().join("recipes/instruct-tiny.toml")).unwrap();
    let text = text.replace("\"../", &format!("\"{}/", fixtures().display()));
    // A plain LM run reads no instruction format: the bundled instruction recipe's is dropped for it.
    let text = text.replace("format = \"chatml\"\n", "");
    let overrides = [
        format!("output={}", dir.path().join("run").display()),
        "method=lm".into(),
        format!("data.train={}", data.display()),
        format!("data.valid={}", data.display()),
        "data.packing=true".into(),
        "train.epochs=2".into(),
        "train.batch_size=2".into(),
    ];
    let recipe =
        Recipe::from_toml_str_with_overrides(&text, "instruct-tiny.toml", &overrides).unwrap();
    let mut messages = Messages::default();
    pipeline::run(&recipe, &mut messages).unwrap();
    let packing: Vec<&String> = messages
        .0
        .iter()
        .filter(|m| m.starts_with("packing:"))
        .collect();
    assert_eq!(packing.len(), 1, "{:?}", messages.0);
    assert!(
        packing[0].contains("6 examples into 1 sequences"),
        "{}",
        packing[0]
    );
}
