//! Our ResNet against Hugging Face transformers on the same tiny random weights (fixtures from
//! `xtask/scripts/make_resnet_fixtures.py`, basic and bottleneck blocks): eval-mode logits, one training-mode
//! forward (logits, running-statistics updates, every parameter's gradient); candle's conv2d gradients against an
//! im2col + matmul composition; the max pool against a direct loop; saving and reloading; clear errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor, Var};
use mosaic_models::loss::cross_entropy;
use mosaic_models::resnet::{LayerType, conv2d, max_pool2d};
use mosaic_models::{ModelError, ResNet, ResNetConfig};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// (model folder, reference outputs) of each fixture.
fn cases() -> [(&'static str, PathBuf, PathBuf); 2] {
    let f = fixtures();
    [
        (
            "tiny-resnet",
            f.join("models/tiny-resnet"),
            f.join("reference/tiny-resnet.safetensors"),
        ),
        (
            "tiny-resnet-bottleneck",
            f.join("reference/tiny-resnet-bottleneck"),
            f.join("reference/tiny-resnet-bottleneck.safetensors"),
        ),
    ]
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    a.sub(&b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Seeded f64 test data with full 53-bit mantissas, uniform in [-1, 1).
fn seeded64(shape: impl Into<candle_core::Shape>, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let shape = shape.into();
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<f64> = (0..shape.elem_count())
        .map(|_| rng.random::<f64>() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Seeded test data, uniform in [-1, 1) (candle's `randn` is not seeded).
fn seeded(shape: impl Into<candle_core::Shape>, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let shape = shape.into();
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<f32> = (0..shape.elem_count())
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn eval_logits_match_transformers() {
    for (name, folder, reference) in cases() {
        let reference = load(&reference);
        let resnet = ResNet::from_folder(&folder, None, 0, &Device::Cpu).unwrap();
        let pixels = &reference["pixel_values"];
        let logits = resnet.logits(pixels).unwrap();
        let pooled = resnet.pooled(pixels).unwrap();
        let e_logits = max_abs_diff(&logits, &reference["eval.logits"]);
        let e_pooled = max_abs_diff(&pooled, &reference["eval.pooled"]);
        println!("{name} eval: logits max abs error {e_logits:.3e}, pooled {e_pooled:.3e}");
        assert!(e_logits < TOLERANCE && e_pooled < TOLERANCE);
        // Eval mode leaves the running statistics alone.
        let saved = load(&folder.join("model.safetensors"));
        for (buffer, value) in resnet.buffers.all().unwrap() {
            let saved = &saved[&buffer];
            assert_eq!(
                max_abs_diff(&value, saved),
                0.0,
                "{buffer} changed in eval mode"
            );
        }
    }
}

#[test]
fn training_forward_matches_transformers_in_logits_running_stats_and_gradients() {
    for (name, folder, reference) in cases() {
        let reference = load(&reference);
        let resnet = ResNet::from_folder(&folder, None, 0, &Device::Cpu).unwrap();
        resnet.set_training(true);
        let logits = resnet.logits(&reference["pixel_values"]).unwrap();
        let e_logits = max_abs_diff(&logits, &reference["train.logits"]);
        let loss = cross_entropy(&logits, &reference["train.labels"]).unwrap();
        let e_loss = max_abs_diff(&loss.reshape(1).unwrap(), &reference["train.loss"]);

        let mut e_stats = 0f32;
        let buffers = resnet.buffers.all().unwrap();
        assert_eq!(
            buffers.len(),
            reference
                .keys()
                .filter(|k| k.starts_with("train.") && k.contains("normalization"))
                .count()
        );
        for (buffer, value) in &buffers {
            let want = &reference[&format!("train.{buffer}")];
            if buffer.ends_with("num_batches_tracked") {
                assert_eq!(value.to_scalar::<i64>().unwrap(), 8, "{buffer}");
                assert_eq!(want.to_scalar::<i64>().unwrap(), 8, "{buffer}");
            } else {
                e_stats = e_stats.max(max_abs_diff(value, want));
            }
        }

        let grads = loss.backward().unwrap();
        let mut e_grads = 0f32;
        for (param, var) in resnet.params.all() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient reached `{param}`"));
            let want = &reference[&format!("grad.{param}")];
            // Relative to the gradient's scale (some are O(1), some O(1e-3)).
            let e = max_abs_diff(g, want) / max_abs(want).max(1e-3);
            e_grads = e_grads.max(e);
            assert!(
                e < 1e-3,
                "{name}: gradient of `{param}`: relative error {e:.3e}"
            );
        }
        println!(
            "{name} train: logits max abs error {e_logits:.3e}, loss {e_loss:.3e}, running stats {e_stats:.3e}, \
             gradients max relative error {e_grads:.3e} over {} parameters",
            resnet.params.all().len()
        );
        assert!(e_logits < TOLERANCE && e_loss < TOLERANCE && e_stats < TOLERANCE);
    }
}

fn tiny_config(layer_type: &str) -> ResNetConfig {
    let json = serde_json::json!({
        "model_type": "resnet", "num_channels": 3, "embedding_size": 4, "hidden_sizes": [8, 12],
        "depths": [2, 1], "layer_type": layer_type, "hidden_act": "relu",
        "downsample_in_first_stage": layer_type == "bottleneck",
        "id2label": {"0": "x", "1": "y", "2": "z"},
    });
    ResNetConfig::parse(&json.to_string(), "test-config.json".as_ref()).unwrap()
}

#[test]
fn classification_loss_reaches_every_parameter() {
    for layer_type in ["basic", "bottleneck"] {
        let resnet = ResNet::new(tiny_config(layer_type), 1, &Device::Cpu).unwrap();
        resnet.set_training(true);
        let pixels = seeded((3, 3, 32, 32), 1);
        let logits = resnet.logits(&pixels).unwrap();
        assert_eq!(logits.dims(), [3, 3]);
        let loss =
            cross_entropy(&logits, &Tensor::new(&[2i64, 0, 1], &Device::Cpu).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let params = resnet.params.all();
        // Trainable: conv weights, batch-norm weight and bias, the classifier; no running statistics.
        assert!(
            params
                .iter()
                .all(|(n, _)| !n.contains("running") && !n.contains("num_batches"))
        );
        assert!(!resnet.buffers.is_empty());
        for (name, var) in params {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient reached `{name}`"));
            let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "non-finite gradient in `{name}`"
            );
            assert!(v.iter().any(|x| *x != 0.0), "all-zero gradient in `{name}`");
        }
    }
}

#[test]
fn fresh_models_are_seeded_and_initialised_as_hf() {
    // Trainers move models across threads.
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ResNet>();
    let a = ResNet::new(tiny_config("basic"), 5, &Device::Cpu).unwrap();
    let b = ResNet::new(tiny_config("basic"), 5, &Device::Cpu).unwrap();
    let c = ResNet::new(tiny_config("basic"), 6, &Device::Cpu).unwrap();
    let w = |r: &ResNet| {
        r.params
            .get("resnet.embedder.embedder.convolution.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
    // Kaiming normal, fan-out: std √(2 / (4 · 7 · 7)) ≈ 0.101.
    let v = w(&a);
    let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    assert!((std - 0.101).abs() < 0.02, "std {std}");
    let bn = a
        .params
        .get("resnet.embedder.embedder.normalization.weight")
        .unwrap();
    assert_eq!(bn.to_vec1::<f32>().unwrap(), vec![1.0; 4]);
    let rv = a
        .buffers
        .get("resnet.embedder.embedder.normalization.running_var")
        .unwrap();
    assert_eq!(rv.to_vec1::<f32>().unwrap(), vec![1.0; 4]);
    assert_eq!(a.config.layer_type, LayerType::Basic);
}

#[test]
fn saved_model_reloads_identically_under_hf_names() {
    let (_, folder, reference) = &cases()[0];
    let reference = load(reference);
    let resnet = ResNet::from_folder(folder, None, 0, &Device::Cpu).unwrap();
    // One training step's worth of running-statistics updates, so the buffers differ from the fixture's.
    resnet.set_training(true);
    resnet.logits(&reference["pixel_values"]).unwrap();
    resnet.set_training(false);
    let dir = tempfile::tempdir().unwrap();
    resnet.save(dir.path()).unwrap();
    let saved = load(&dir.path().join("model.safetensors"));
    let original = load(&folder.join("model.safetensors"));
    let mut names: Vec<_> = saved.keys().cloned().collect();
    let mut want: Vec<_> = original.keys().cloned().collect();
    names.sort();
    want.sort();
    assert_eq!(names, want, "saved names differ from HF's");
    assert_eq!(
        saved["resnet.encoder.stages.1.layers.0.shortcut.normalization.num_batches_tracked"]
            .dtype(),
        DType::I64
    );
    let again = ResNet::from_folder(dir.path(), None, 0, &Device::Cpu).unwrap();
    let (a, b) = (
        resnet.state_tensors().unwrap(),
        again.state_tensors().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(max_abs_diff(t, &b[name]), 0.0, "{name}");
    }
    let pixels = &reference["pixel_values"];
    assert_eq!(
        max_abs_diff(
            &resnet.logits(pixels).unwrap(),
            &again.logits(pixels).unwrap()
        ),
        0.0
    );
    assert_eq!(again.config.labels, ["cat", "dog", "bird"]);
    assert_eq!(again.config.architectures, ["ResNetForImageClassification"]);

    // Buffers restore from a state map (training checkpoints).
    let fresh = ResNet::from_folder(folder, None, 0, &Device::Cpu).unwrap();
    fresh.buffers.load_from(&a).unwrap();
    assert_eq!(
        max_abs_diff(
            &fresh.logits(pixels).unwrap(),
            &again.logits(pixels).unwrap()
        ),
        0.0
    );
}

#[test]
fn backbone_loads_without_the_prefix_and_new_labels_replace_the_head() {
    let (_, folder, reference) = &cases()[0];
    let reference = load(reference);
    let pixels = &reference["pixel_values"];
    // A ResNetModel checkpoint: no `resnet.` prefix, no classifier, no labels.
    let dir = tempfile::tempdir().unwrap();
    let bare: HashMap<String, Tensor> = load(&folder.join("model.safetensors"))
        .into_iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .map(|(k, v)| (k.trim_start_matches("resnet.").to_string(), v))
        .collect();
    candle_core::safetensors::save(&bare, dir.path().join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap())
            .unwrap();
    let obj = config.as_object_mut().unwrap();
    obj.remove("id2label");
    obj.remove("label2id");
    obj.insert("architectures".into(), serde_json::json!(["ResNetModel"]));
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();

    let base = ResNet::from_folder(dir.path(), None, 0, &Device::Cpu).unwrap();
    assert!(base.classifier.is_none());
    assert!(
        base.logits(pixels)
            .unwrap_err()
            .to_string()
            .contains("no classification head")
    );
    let e = max_abs_diff(&base.pooled(pixels).unwrap(), &reference["eval.pooled"]);
    assert!(e < TOLERANCE, "{e}");
    let out = tempfile::tempdir().unwrap();
    base.save(out.path()).unwrap();
    assert!(
        load(&out.path().join("model.safetensors"))
            .contains_key("embedder.embedder.convolution.weight")
    );

    let labels = vec!["p".to_string(), "q".to_string()];
    let headed = ResNet::from_folder(dir.path(), Some(&labels), 3, &Device::Cpu).unwrap();
    assert_eq!(headed.logits(pixels).unwrap().dims(), [2, 2]);
    assert!(headed.params.get("classifier.1.weight").is_some());
    let e = max_abs_diff(&headed.pooled(pixels).unwrap(), &reference["eval.pooled"]);
    assert!(e < TOLERANCE, "{e}");
    // Different labels on a headed checkpoint: a fresh head of the new size; the same labels: the saved head.
    let replaced = ResNet::from_folder(folder, Some(&labels), 3, &Device::Cpu).unwrap();
    assert_eq!(replaced.logits(pixels).unwrap().dims(), [2, 2]);
    let same: Vec<String> = ["cat", "dog", "bird"].map(String::from).to_vec();
    let kept = ResNet::from_folder(folder, Some(&same), 3, &Device::Cpu).unwrap();
    assert!(max_abs_diff(&kept.logits(pixels).unwrap(), &reference["eval.logits"]) < TOLERANCE);
}

#[test]
fn bad_configs_and_tensors_are_clear_errors() {
    let parse = |json: &str| {
        ResNetConfig::parse(json, "c.json".as_ref())
            .unwrap_err()
            .to_string()
    };
    let e = parse(
        r#"{"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8], "layer_type": "basic"}"#,
    );
    assert!(e.contains("c.json") && e.contains("depths"), "{e}");
    let e = parse(
        r#"{"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8], "depths": [1], "layer_type": "wide"}"#,
    );
    assert!(e.contains("layer_type") && e.contains("wide"), "{e}");
    let e = parse(
        r#"{"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1], "layer_type": "basic"}"#,
    );
    assert!(e.contains("depths") && e.contains("hidden_sizes"), "{e}");
    let e = parse(r#"{"model_type": "vit"}"#);
    assert!(e.contains("vit") && e.contains("resnet"), "{e}");

    // A tensor of the wrong shape, a missing running statistic: named in the error.
    let (_, folder, _) = &cases()[0];
    for (name, replacement) in [
        (
            "resnet.encoder.stages.1.layers.0.layer.0.convolution.weight",
            Some((16usize, 8usize, 1usize, 1usize)),
        ),
        (
            "resnet.encoder.stages.0.layers.0.layer.1.normalization.running_var",
            None,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(folder.join("config.json"), dir.path().join("config.json")).unwrap();
        let mut tensors = load(&folder.join("model.safetensors"));
        match replacement {
            Some(shape) => {
                tensors.insert(
                    name.into(),
                    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap(),
                );
            }
            None => {
                tensors.remove(name);
            }
        }
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
        let e = ResNet::from_folder(dir.path(), None, 0, &Device::Cpu)
            .err()
            .unwrap();
        assert!(matches!(
            e,
            ModelError::TensorShape { .. } | ModelError::MissingTensor { .. }
        ));
        let e = e.to_string();
        assert!(e.contains(name) && e.contains("model.safetensors"), "{e}");
    }

    let resnet = ResNet::new(tiny_config("basic"), 0, &Device::Cpu).unwrap();
    let gray = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let e = resnet.logits(&gray).unwrap_err().to_string();
    assert!(e.contains("(batch, 3, height, width)"), "{e}");
}

/// Convolution as im2col + matmul from differentiable candle ops (zero padding, stride, no dilation).
fn conv2d_im2col(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Tensor {
    let (b, c, h, wd) = x.dims4().unwrap();
    let (o, _, k, _) = w.dims4().unwrap();
    let x = x
        .pad_with_zeros(2, padding, padding)
        .unwrap()
        .pad_with_zeros(3, padding, padding)
        .unwrap();
    let oh = (h + 2 * padding - k) / stride + 1;
    let ow = (wd + 2 * padding - k) / stride + 1;
    let idx = |start: usize, n: usize| {
        Tensor::from_vec(
            (0..n)
                .map(|i| (start + i * stride) as u32)
                .collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )
        .unwrap()
    };
    // Columns (B, C·k·k, OH·OW), in the (c, ki, kj) order of the flattened kernel.
    let mut patches = Vec::new();
    for ki in 0..k {
        let rows = x.index_select(&idx(ki, oh), 2).unwrap();
        for kj in 0..k {
            patches.push(
                rows.index_select(&idx(kj, ow), 3)
                    .unwrap()
                    .reshape((b, c, 1, oh * ow))
                    .unwrap(),
            );
        }
    }
    let cols = Tensor::cat(&patches, 2)
        .unwrap()
        .reshape((b, c * k * k, oh * ow))
        .unwrap();
    let wm = w.reshape((o, c * k * k)).unwrap();
    wm.broadcast_matmul(&cols)
        .unwrap()
        .reshape((b, o, oh, ow))
        .unwrap()
}

#[test]
fn conv2d_gradients_match_im2col() {
    let mut worst = (0f64, 0f64, 0f64);
    for (i, &(b, c, h, w, o, k, stride, padding)) in [
        (2, 3, 9, 9, 4, 3, 1, 1),
        (2, 3, 10, 11, 5, 3, 2, 1),
        (1, 2, 13, 13, 3, 7, 2, 3),
        (2, 4, 8, 8, 6, 1, 2, 0),
        (1, 3, 7, 6, 2, 3, 1, 0),
        (1, 3, 12, 15, 2, 7, 2, 3), // (H + 2p − k) mod s differs between H and W
    ]
    .iter()
    .enumerate()
    {
        let x = Var::from_tensor(&seeded64((b, c, h, w), 10 + i as u64)).unwrap();
        let wt = Var::from_tensor(&seeded64((o, c, k, k), 20 + i as u64)).unwrap();
        let y = conv2d(x.as_tensor(), wt.as_tensor(), stride, padding).unwrap();
        let y_ref = conv2d_im2col(x.as_tensor(), wt.as_tensor(), stride, padding);
        assert_eq!(y.dims(), y_ref.dims(), "case {i}");
        // A non-uniform upstream gradient, so every output position matters differently.
        let dy = seeded64(y.dims(), 30 + i as u64);
        let g = (y.clone() * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_ref = (y_ref.clone() * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let diff = |a: &Tensor, b: &Tensor| -> f64 {
            a.sub(b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(D::Minus1)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let ex = diff(g.get(&x).unwrap(), g_ref.get(&x).unwrap());
        let ew = diff(g.get(&wt).unwrap(), g_ref.get(&wt).unwrap());
        let ey = diff(&y, &y_ref);
        assert!(
            ey < 1e-9 && ex < 1e-9 && ew < 1e-9,
            "case {i}: y {ey:e}, dx {ex:e}, dw {ew:e}"
        );
        worst = (worst.0.max(ey), worst.1.max(ex), worst.2.max(ew));
    }
    println!(
        "conv2d vs im2col (f64): output max abs error {:.3e}, input grad {:.3e}, kernel grad {:.3e}",
        worst.0, worst.1, worst.2
    );
}

#[test]
fn max_pool_matches_a_direct_loop_with_gradients() {
    let (b, c, h, w) = (2, 3, 9, 8);
    let x = Var::from_tensor(&seeded((b, c, h, w), 2)).unwrap();
    let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
    let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
    assert_eq!(y.dims(), [b, c, oh, ow]);
    let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    let dy = seeded(y.dims(), 3);
    let dyv: Vec<f32> = dy.flatten_all().unwrap().to_vec1().unwrap();
    let mut dx_want = vec![0f32; xv.len()];
    for bc in 0..b * c {
        for i in 0..oh {
            for j in 0..ow {
                // PyTorch's window: rows 2i−1..2i+1, columns 2j−1..2j+1, clipped; the gradient goes to the argmax.
                let mut best = (f32::NEG_INFINITY, 0);
                for r in (2 * i).saturating_sub(1)..(2 * i + 2).min(h) {
                    for s in (2 * j).saturating_sub(1)..(2 * j + 2).min(w) {
                        let at = bc * h * w + r * w + s;
                        if xv[at] > best.0 {
                            best = (xv[at], at);
                        }
                    }
                }
                let out = bc * oh * ow + i * ow + j;
                assert_eq!(yv[out], best.0);
                dx_want[best.1] += dyv[out];
            }
        }
    }
    let g = (y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    let dx: Vec<f32> = g.get(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let e = dx
        .iter()
        .zip(&dx_want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(e < 1e-6, "max pool gradient error {e}");
}
