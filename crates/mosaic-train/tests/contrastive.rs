//! CLIP contrastive fine-tuning and CoOp on the `clip-shapes` fixture: the temperature clamp, InfoNCE against a
//! composed reference, gradients reaching every parameter, CoOp's frozen towers, short runs that learn and repeat
//! exactly, and `evaluate_checkpoint` reproducing a run's figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use mosaic_data::image::ImageProcessor;
use mosaic_models::Clip;
use mosaic_train::contrastive::data::{CaptionTokenizer, PairData};
use mosaic_train::contrastive::{self, Fields, info_nce};
use mosaic_train::observer::Silent;
use mosaic_train::pipeline::{self, RunOptions};
use mosaic_train::recipe::Recipe;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn model_dir() -> PathBuf {
    fixtures().join("models/clip-shapes")
}

fn shapes() -> PathBuf {
    fixtures().join("data/shapes")
}

/// The first `n` rows of `split`, with their images, copied into `dir` (image paths must stay inside the data
/// file's folder).
fn subset(dir: &Path, split: &str, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let text = std::fs::read_to_string(shapes().join(format!("{split}.jsonl"))).unwrap();
    let mut out = String::new();
    for line in text.lines().take(n) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let image = row["image"].as_str().unwrap();
        std::fs::copy(shapes().join(image), dir.join(image)).unwrap();
        out.push_str(line);
        out.push('\n');
    }
    let path = dir.join(format!("{split}.jsonl"));
    std::fs::write(&path, out).unwrap();
    path
}

/// A recipe on small subsets of the shapes set, writing into `root/out`.
fn recipe(root: &Path, method: &str, extra: &str) -> Recipe {
    let data = root.join("data");
    let train = subset(&data, "train", 48);
    let valid = subset(&data, "valid", 16);
    let text = format!(
        r#"
name = "clip-test"
model = "{model}"
task = "image-text-contrastive"
method = "{method}"
output = "{out}"

[data]
train = "{train}"
valid = "{valid}"
test = "{valid}"

[train]
epochs = 2
batch_size = 16
lr = 2e-3
warmup = 0
seed = 7
{extra}
"#,
        model = model_dir().display(),
        out = root.join("out").display(),
        train = train.display(),
        valid = valid.display(),
    );
    Recipe::from_toml_str(&text, "clip-test.toml").unwrap()
}

fn run_with(recipe: &Recipe) -> mosaic_train::Result<pipeline::RunSummary> {
    pipeline::run_with(
        recipe,
        &mut Silent,
        RunOptions {
            resume: false,
            stop: None,
            ..Default::default()
        },
    )
}

/// Runs `recipe` and returns its `report.json`.
fn run(recipe: &Recipe) -> serde_json::Value {
    run_with(recipe).unwrap();
    let text = std::fs::read_to_string(recipe.output.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn clip() -> Clip {
    Clip::from_folder(&model_dir(), 0, &Device::Cpu).unwrap()
}

/// A batch of `n` training pairs: pixels, ids, mask.
fn batch(clip: &Clip, n: usize) -> (Tensor, Tensor, Tensor) {
    let dir = model_dir();
    let tokenizer = CaptionTokenizer::load(&dir, clip).unwrap();
    let processor = ImageProcessor::from_folder(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = subset(tmp.path(), "train", n);
    let data = PairData::load(
        &path,
        &Fields::default(),
        &processor,
        &tokenizer,
        &Device::Cpu,
    )
    .unwrap();
    let rows: Vec<&[u32]> = data.captions.iter().map(Vec::as_slice).collect();
    let (ids, mask) = tokenizer.batch(&rows, &Device::Cpu).unwrap();
    (data.pixels, ids, mask)
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn logit_scale_is_clamped_at_ln_100_after_a_step_that_pushes_it_above() {
    let clip = clip();
    let scale = clip.params.get("logit_scale").unwrap();
    let cfg = mosaic_train::recipe::TrainSection {
        optimizer: mosaic_train::recipe::OptimizerKind::Sgd,
        momentum: 0.0,
        lr: 10.0,
        weight_decay: 0.0,
        max_grad_norm: 0.0,
        warmup: mosaic_train::schedule::Warmup::Steps(0),
        schedule: mosaic_train::schedule::ScheduleKind::Constant,
        ..Default::default()
    };
    let mut optimizer = mosaic_train::recipe_optimizer::recipe_optimizer(
        vec![("logit_scale".into(), scale.clone())],
        &cfg,
        |_| false,
    )
    .unwrap();
    // d(-logit_scale)/d(logit_scale) = -1: one SGD step of lr 10 adds 10.
    let loss = scale.as_tensor().neg().unwrap();
    optimizer.step(&loss.backward().unwrap()).unwrap();
    assert!(scalar(scale.as_tensor()) > 12.0);
    clip.clamp_logit_scale().unwrap();
    assert_eq!(scalar(scale.as_tensor()) as f32, 100f32.ln());
    assert_eq!(scalar(&clip.logit_scale) as f32, 100f32.ln());
}

#[test]
fn training_never_lets_logit_scale_past_ln_100() {
    // Start at the cap: any step that raises the temperature must be clamped back.
    let tmp = tempfile::tempdir().unwrap();
    let start = tmp.path().join("model");
    let model = clip();
    model
        .params
        .get("logit_scale")
        .unwrap()
        .set(&Tensor::new(100f32.ln(), &Device::Cpu).unwrap())
        .unwrap();
    model.save(&start).unwrap();
    mosaic_models::folder::copy_tokenizer_files(&model_dir(), &start).unwrap();
    let mut recipe = recipe(tmp.path(), "contrastive", "");
    recipe.model = start.display().to_string();
    recipe.train.lr = 5e-2;
    recipe.train.epochs = 1;
    run(&recipe);
    let log = std::fs::read_to_string(recipe.output.join("metrics.jsonl")).unwrap();
    let scales: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "train")
        .map(|r| r["logit_scale"].as_f64().unwrap())
        .collect();
    assert!(!scales.is_empty());
    for s in scales {
        assert!(s as f32 <= 100f32.ln(), "logit_scale {s} above ln(100)");
    }
}

/// InfoNCE composed from plain ops: normalise, scale, log-softmax by rows and by columns, mean of the diagonal.
fn reference_info_nce(clip: &Clip, pixels: &Tensor, ids: &Tensor, mask: &Tensor) -> f64 {
    let unit = |x: Tensor| {
        let norm = x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
        x.broadcast_div(&norm).unwrap()
    };
    let images = unit(clip.image_features(pixels).unwrap());
    let texts = unit(clip.text_features(ids, Some(mask)).unwrap());
    let logits =
        (texts.matmul(&images.t().unwrap()).unwrap() * scalar(&clip.logit_scale).exp()).unwrap();
    let diag_ce = |l: &Tensor| -> f64 {
        let log_probs = candle_nn::ops::log_softmax(l, D::Minus1).unwrap();
        let rows: Vec<Vec<f32>> = log_probs.to_vec2().unwrap();
        -rows
            .iter()
            .enumerate()
            .map(|(i, r)| r[i] as f64)
            .sum::<f64>()
            / rows.len() as f64
    };
    (diag_ce(&logits) + diag_ce(&logits.t().unwrap().contiguous().unwrap())) / 2.0
}

#[test]
fn info_nce_is_symmetric_and_equals_a_composed_reference() {
    let clip = clip();
    clip.set_training(false);
    let (pixels, ids, mask) = batch(&clip, 6);
    let loss = scalar(&info_nce(&clip, &pixels, &ids, &mask).unwrap());
    let reference = reference_info_nce(&clip, &pixels, &ids, &mask);
    assert!((loss - reference).abs() < 1e-5, "{loss} vs {reference}");
    // Symmetric: swapping the roles of images and texts (the transposed similarity) gives the same loss.
    let out = clip.forward(&ids, Some(&mask), &pixels).unwrap();
    let by_text = scalar(&mosaic_models::clip::clip_loss(&out.logits_per_text).unwrap());
    let by_image = scalar(
        &mosaic_models::clip::clip_loss(&out.logits_per_image.contiguous().unwrap()).unwrap(),
    );
    assert!((by_text - by_image).abs() < 1e-6);
    assert!((by_text - loss).abs() < 1e-6);
    // And it is not trivially symmetric: the row and column cross-entropies differ on this batch.
    let rows = scalar(
        &mosaic_models::loss::cross_entropy(
            &out.logits_per_text,
            &Tensor::arange(0u32, 6, &Device::Cpu).unwrap(),
        )
        .unwrap(),
    );
    assert!((rows - loss).abs() > 1e-4);
}

#[test]
fn every_clip_parameter_gets_a_finite_nonzero_gradient() {
    let clip = clip();
    clip.set_training(true);
    let (pixels, ids, mask) = batch(&clip, 6);
    let loss = info_nce(&clip, &pixels, &ids, &mask).unwrap();
    let grads = loss.backward().unwrap();
    let params = clip.params.all();
    assert!(params.len() > 60);
    for (name, var) in params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let sq = scalar(&g.sqr().unwrap().sum_all().unwrap());
        assert!(sq.is_finite() && sq > 0.0, "{name}: gradient norm² {sq}");
    }
}

/// `mosaic eval` of the run's best checkpoint on its test file.
fn evaluate_best(recipe: &Recipe) -> contrastive::CheckpointEvaluation {
    contrastive::evaluate_checkpoint(
        &recipe.output.join("best"),
        &recipe.data.test.clone().unwrap(),
        32,
        &Device::Cpu,
    )
    .unwrap()
}

/// Each of `keys` in `metrics` equals (to 1e-6) the run report's `after` figure.
fn assert_matches_after(
    metrics: &BTreeMap<String, f64>,
    report: &serde_json::Value,
    keys: &[&str],
) {
    for &key in keys {
        let want = report["after"][key].as_f64().unwrap();
        assert!(
            (metrics[key] - want).abs() < 1e-6,
            "{key}: {} vs {want}",
            metrics[key]
        );
    }
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let loaded = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    loaded
        .into_iter()
        .map(|(k, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            (k, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect()
}

#[test]
fn coop_leaves_the_towers_bit_identical_and_learns_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), "coop", "");
    let report = run(&recipe);
    assert_eq!(report["trainable_parameters"], 4 * 32);
    let original = tensors(&model_dir().join("model.safetensors"));
    for dir in ["best", "last"] {
        let saved = tensors(&recipe.output.join(dir).join("model.safetensors"));
        assert_eq!(saved, original, "{dir}: a tower parameter changed");
    }
    let clip = clip();
    let initial = mosaic_models::clip::CoopPrompt::random(4, &clip, 7, &Device::Cpu).unwrap();
    let learned = mosaic_models::clip::CoopPrompt::load(
        &recipe.output.join("last").join(contrastive::CONTEXT_FILE),
        &Device::Cpu,
    )
    .unwrap();
    let diff = scalar(
        &(learned.context.as_tensor() - initial.context.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap(),
    );
    assert!(diff > 1e-4, "the context did not move ({diff})");
    // CoOp's train loss goes down from the first step.
    let log = std::fs::read_to_string(recipe.output.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "train")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert!(
        losses.last().unwrap() < losses.first().unwrap(),
        "{losses:?}"
    );
    // And `mosaic eval` on the checkpoint gives the run's figures.
    let e = evaluate_best(&recipe);
    assert_eq!(e.method, "coop");
    assert_eq!(e.examples, 16);
    assert_matches_after(&e.metrics, &report, &["accuracy", "loss", "f1_macro"]);
}

#[test]
fn a_short_contrastive_run_learns_repeats_exactly_and_eval_reproduces_it() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = recipe(a.path(), "contrastive", "");
    let rb = recipe(b.path(), "contrastive", "");
    let report = run(&ra);
    run(&rb);
    // The loss on the held-out pairs goes down (recall on 16 pairs is too coarse to promise a rise).
    let before = report["before"]["loss"].as_f64().unwrap();
    let after = report["after"]["loss"].as_f64().unwrap();
    assert!(after < before, "loss {before} -> {after}");
    assert_eq!(report["metric"], "recall_at_1");
    // Same seed, same metrics, record for record.
    let log = |r: &Recipe| std::fs::read_to_string(r.output.join("metrics.jsonl")).unwrap();
    assert_eq!(log(&ra), log(&rb));
    for name in [
        "recipe.toml",
        "training.svg",
        "best/config.json",
        "best/model.safetensors",
        "best/tokenizer.json",
        "best/preprocessor_config.json",
        "best/mosaic.json",
        "last/model.safetensors",
    ] {
        assert!(ra.output.join(name).is_file(), "{name} missing");
    }
    // `mosaic eval` on the best checkpoint reproduces the run's after figures.
    let e = evaluate_best(&ra);
    assert_eq!(e.method, "contrastive");
    assert_matches_after(
        &e.metrics,
        &report,
        &[
            "loss",
            "recall_at_1",
            "recall_at_5",
            "image_to_text_recall_at_1",
            "text_to_image_recall_at_5",
        ],
    );
}

#[test]
fn unsupported_settings_and_metrics_are_refused_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = recipe(tmp.path(), "coop", "");
    r.train.metric = "recall_at_1".into();
    let err = run_with(&r).unwrap_err().to_string();
    assert!(err.contains("train.metric"), "{err}");
    let mut r = recipe(tmp.path(), "contrastive", "");
    r.train.grad_accum = 2;
    let err = run_with(&r).unwrap_err().to_string();
    assert!(err.contains("train.grad_accum"), "{err}");
}

#[test]
fn recipes_default_to_recall_for_contrastive_and_accuracy_for_coop() {
    let base = |method: &str, extra: &str| {
        format!(
            "name = \"x\"\nmodel = \"m\"\ntask = \"image-text-contrastive\"\nmethod = \"{method}\"\n\
             [data]\ntrain = \"t.jsonl\"\n{extra}"
        )
    };
    let r = Recipe::from_toml_str(&base("contrastive", ""), "x.toml").unwrap();
    assert_eq!(r.train.metric, "recall_at_1");
    // Context vectors are CoOp's alone.
    let r =
        Recipe::from_toml_str(&base("coop", "[prompt]\ncontext_tokens = 8\n"), "x.toml").unwrap();
    assert_eq!(r.train.metric, "accuracy");
    assert_eq!(r.prompt.context_tokens, Some(8));
}

/// CoOp's loss over the class logits is the kernels crate's fused softmax cross-entropy, bit for bit.
#[test]
fn the_coop_loss_is_the_fused_cross_entropy() {
    let logits = Tensor::new(&[[2.0f32, -1.0, 0.5], [0.1, 0.2, 3.0]], &Device::Cpu).unwrap();
    let loss = contrastive::coop::class_loss(&logits, &[0, 2]).unwrap();
    let targets = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let fused = mosaic_kernels::cross_entropy(&logits, &targets, 0.0).unwrap();
    assert_eq!(
        loss.to_scalar::<f32>().unwrap().to_bits(),
        fused.to_scalar::<f32>().unwrap().to_bits()
    );
}

/// `train.freeze` works for CLIP runs: with `all-but-top-1` only each tower's top layer, its final norm, the
/// projections and `logit_scale` move; the embeddings and lower layers stay exactly as loaded. CoOp refuses it.
#[test]
fn freezing_keeps_the_frozen_clip_weights_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), "contrastive", "freeze = \"all-but-top-1\"");
    let report = run(&recipe);
    let base = clip();
    let trained = Clip::from_folder(&recipe.output.join("last"), 0, &Device::Cpu).unwrap();
    let layers = base.config.text.encoder.num_hidden_layers;
    let top = format!("encoder.layers.{}.", layers - 1);
    let mut moved = 0;
    for (name, var) in base.params.all() {
        let after = trained.params.get(&name).unwrap();
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let same = values(var.as_tensor()) == values(after.as_tensor());
        let trains = name.contains(&top)
            || name.contains("projection")
            || name == "logit_scale"
            || name.contains("final_layer_norm")
            || name.contains("post_layernorm");
        if trains {
            moved += usize::from(!same);
        } else {
            assert!(same, "{name} is frozen but changed");
        }
    }
    assert!(moved > 0, "nothing trained");
    let total: usize = base.params.all().iter().map(|(_, v)| v.elem_count()).sum();
    assert!(report["trainable_parameters"].as_u64().unwrap() < total as u64);

    let coop = recipe_coop_with_freeze(tmp.path());
    let err = run_with(&coop).unwrap_err().to_string();
    assert!(
        err.contains("train.freeze") && err.contains("coop"),
        "{err}"
    );
}

fn recipe_coop_with_freeze(root: &Path) -> Recipe {
    let mut r = recipe(root, "coop", "freeze = \"embeddings\"");
    r.output = root.join("coop-out");
    r
}
