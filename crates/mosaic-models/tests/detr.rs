//! Our DETR against transformers' `DetrForObjectDetection` on the same tiny random weights (fixtures from
//! `xtask/scripts/make_detr_fixtures.py`: a basic-block backbone with auxiliary outputs, and a bottleneck backbone
//! read after its first stage without): logits, boxes, hidden states and every auxiliary output within 1e-4,
//! `post_process_object_detection` equal; gradients reach every trainable parameter and no frozen one; saving
//! writes transformers' names and reloads to the same outputs; clear errors.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use mosaic_models::detr::{
    BackboneNorms, Detection, Detr, DetrConfig, post_process_object_detection,
};
use mosaic_models::grad_mode::is_frozen;
use mosaic_models::testing::{assert_gradients_reach, max_abs_diff};
use mosaic_models::{ModelError, no_grad};

const TOLERANCE: f32 = 1e-4;

/// (name, model folder) of each fixture model.
fn cases() -> [(&'static str, PathBuf); 2] {
    let f = common::fixtures();
    [
        ("tiny-detr", f.join("models/tiny-detr")),
        (
            "tiny-detr-bottleneck",
            f.join("reference/tiny-detr-bottleneck"),
        ),
    ]
}

fn reference() -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = common::fixtures().join("reference");
    let tensors =
        candle_core::safetensors::load(dir.join("detr.safetensors"), &Device::Cpu).unwrap();
    let json = std::fs::read_to_string(dir.join("detr.json")).unwrap();
    (tensors, serde_json::from_str(&json).unwrap())
}

fn inputs(tensors: &HashMap<String, Tensor>, name: &str) -> (Tensor, Tensor) {
    let pixels = tensors[&format!("{name}.pixel_values")].clone();
    let mask = tensors[&format!("{name}.pixel_mask")]
        .to_dtype(DType::F32)
        .unwrap();
    (pixels, mask)
}

#[test]
fn outputs_match_transformers() {
    let (tensors, spec) = reference();
    for (name, folder) in cases() {
        let detr = Detr::from_folder(&folder, None, 0, &Device::Cpu).unwrap();
        let (pixels, mask) = inputs(&tensors, name);
        let out = no_grad(|| detr.forward(&pixels, Some(&mask))).unwrap();
        let want = |k: &str| &tensors[&format!("{name}.{k}")];
        let mut worst = 0f32;
        for (key, got) in [
            ("logits", &out.logits),
            ("pred_boxes", &out.pred_boxes),
            ("last_hidden_state", &out.last_hidden_state),
            ("encoder_last_hidden_state", &out.encoder_last_hidden_state),
        ] {
            let err = max_abs_diff(got, want(key));
            println!("{name} {key}: max abs diff {err:.3e}");
            assert!(err <= TOLERANCE, "{name} {key}: {err} > {TOLERANCE}");
            worst = worst.max(err);
        }
        let num_aux = spec["models"][name]["num_aux"].as_u64().unwrap() as usize;
        assert_eq!(out.auxiliary.len(), num_aux, "{name}: auxiliary outputs");
        for (i, aux) in out.auxiliary.iter().enumerate() {
            for (key, got) in [("logits", &aux.logits), ("pred_boxes", &aux.pred_boxes)] {
                let err = max_abs_diff(got, want(&format!("aux.{i}.{key}")));
                println!("{name} aux.{i}.{key}: max abs diff {err:.3e}");
                assert!(
                    err <= TOLERANCE,
                    "{name} aux.{i}.{key}: {err} > {TOLERANCE}"
                );
            }
        }
        println!("{name}: worst {worst:.3e}");
    }
}

/// The recorded detections of one image at one threshold.
fn recorded(image: &serde_json::Value) -> Vec<Detection> {
    let scores = image["scores"].as_array().unwrap();
    let labels = image["labels"].as_array().unwrap();
    let boxes = image["boxes"].as_array().unwrap();
    (0..scores.len())
        .map(|i| {
            let b: Vec<f32> = boxes[i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            Detection {
                score: scores[i].as_f64().unwrap() as f32,
                label: labels[i].as_u64().unwrap() as usize,
                bbox: [b[0], b[1], b[2], b[3]],
            }
        })
        .collect()
}

#[test]
fn post_processing_matches_detr_image_processor() {
    let (tensors, spec) = reference();
    for (name, folder) in cases() {
        let detr = Detr::from_folder(&folder, None, 0, &Device::Cpu).unwrap();
        let (pixels, mask) = inputs(&tensors, name);
        let out = no_grad(|| detr.forward(&pixels, Some(&mask))).unwrap();
        let m = &spec["models"][name];
        let sizes: Vec<(usize, usize)> = m["image_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s[0].as_u64().unwrap() as usize,
                    s[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        // Boxes are scaled to at most 64 pixels, so their tolerance is the outputs' times 64.
        let box_tol = TOLERANCE * 64.0;
        for (threshold, per_image) in m["post_process"].as_object().unwrap() {
            let t: f32 = threshold.parse().unwrap();
            let got = post_process_object_detection(&out.logits, &out.pred_boxes, t, Some(&sizes))
                .unwrap();
            let want: Vec<Vec<Detection>> =
                per_image.as_array().unwrap().iter().map(recorded).collect();
            assert_eq!(got.len(), want.len());
            for (img, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.len(),
                    w.len(),
                    "{name} threshold {t} image {img}: detections kept"
                );
                for (a, b) in g.iter().zip(w) {
                    assert_eq!(a.label, b.label, "{name} threshold {t} image {img}");
                    assert!((a.score - b.score).abs() <= TOLERANCE, "{a:?} vs {b:?}");
                    for k in 0..4 {
                        assert!((a.bbox[k] - b.bbox[k]).abs() <= box_tol, "{a:?} vs {b:?}");
                    }
                }
            }
            // The batch-wide count: threshold 0 keeps every query.
            if t == 0.0 {
                let q = m["num_queries"].as_u64().unwrap() as usize;
                assert!(got.iter().all(|d| d.len() == q));
            }
        }
    }
}

#[test]
fn every_trainable_parameter_gets_a_gradient_and_frozen_ones_none() {
    let (tensors, _) = reference();
    for (name, folder) in cases() {
        let detr = Detr::from_folder(&folder, None, 0, &Device::Cpu).unwrap();
        detr.set_training(true);
        let (pixels, mask) = inputs(&tensors, name);
        let out = detr.forward(&pixels, Some(&mask)).unwrap();
        // A loss on every prediction with weights of both signs, so no gradient cancels to zero by symmetry.
        let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        let mut predictions = vec![(&out.logits, &out.pred_boxes)];
        predictions.extend(out.auxiliary.iter().map(|a| (&a.logits, &a.pred_boxes)));
        for (i, (logits, boxes)) in predictions.into_iter().enumerate() {
            let wl = common_weights(logits.dims(), i as u64);
            let wb = common_weights(boxes.dims(), 100 + i as u64);
            let term = (logits.mul(&wl).unwrap().sum_all().unwrap()
                + boxes.mul(&wb).unwrap().sum_all().unwrap())
            .unwrap();
            loss = (loss + term).unwrap();
        }
        let grads = loss.backward().unwrap();
        let all = detr.params.all();
        let (frozen, trainable): (Vec<_>, Vec<_>) = all.iter().partition(|(_, v)| is_frozen(v));
        assert!(
            !frozen.is_empty(),
            "{name}: the backbone's stem should be frozen"
        );
        assert!(
            trainable.iter().any(|(n, _)| n.contains("backbone")),
            "{name}: the backbone's later stages should train"
        );
        // The first decoder layer's self-attention reads the zero-initialised queries, so its value projection's
        // weight gets exactly zero gradient (in transformers too); its bias still learns.
        let zero_input = "model.decoder.layers.0.self_attn.v_proj.weight";
        let (zero, checked): (Vec<&&(String, candle_core::Var)>, Vec<_>) =
            trainable.iter().partition(|(n, _)| n == zero_input);
        assert_eq!(zero.len(), 1);
        // Stages after the one the transformer reads (`out_features`) take no part, as in transformers.
        let unused = |n: &str| {
            (detr.config.backbone_stage..detr.config.backbone.depths.len())
                .any(|s| n.contains(&format!("encoder.stages.{s}.")))
        };
        let checked: Vec<_> = checked.into_iter().filter(|(n, _)| !unused(n)).collect();
        let g = grads.get(zero[0].1.as_tensor()).unwrap();
        assert_eq!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        assert_gradients_reach(checked.iter().map(|(n, v)| (n.as_str(), v)), &grads);
        for (n, v) in &frozen {
            assert!(
                grads.get(v.as_tensor()).is_none(),
                "{name}: frozen `{n}` got a gradient"
            );
        }
        // The frozen batch norms' tensors are buffers, never parameters.
        assert!(all.iter().all(|(n, _)| !n.contains("normalization")));
        assert!(!detr.buffers.all().unwrap().is_empty());
    }
}

/// Seeded weights in [-1, 1) of the given shape.
fn common_weights(dims: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

fn tensor_names(path: &Path) -> BTreeSet<String> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect()
}

#[test]
fn save_writes_transformers_names_and_reloads_to_the_same_outputs() {
    let (tensors, _) = reference();
    for (name, folder) in cases() {
        let detr = Detr::from_folder(&folder, None, 0, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("saved");
        detr.save(&saved).unwrap();
        // Exactly the tensors transformers' save_pretrained wrote (num_batches_tracked is not one of them).
        assert_eq!(
            tensor_names(&saved.join("model.safetensors")),
            tensor_names(&folder.join("model.safetensors")),
            "{name}"
        );
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], "detr");
        assert_eq!(config["use_timm_backbone"], false);
        assert_eq!(config["architectures"][0], "DetrForObjectDetection");
        let back = Detr::from_folder(&saved, None, 0, &Device::Cpu).unwrap();
        let (pixels, mask) = inputs(&tensors, name);
        let a = no_grad(|| detr.forward(&pixels, Some(&mask))).unwrap();
        let b = no_grad(|| back.forward(&pixels, Some(&mask))).unwrap();
        assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);
        assert_eq!(max_abs_diff(&a.pred_boxes, &b.pred_boxes), 0.0);
    }
}

#[test]
fn a_replaced_frozen_buffer_reaches_the_forward_and_the_saved_file() {
    let (tensors, _) = reference();
    let (name, folder) = &cases()[0];
    let detr = Detr::from_folder(folder, None, 0, &Device::Cpu).unwrap();
    let (pixels, mask) = inputs(&tensors, name);
    let before = no_grad(|| detr.forward(&pixels, Some(&mask))).unwrap();
    let buffer = "model.backbone.conv_encoder.model.embedder.embedder.normalization.running_mean";
    let value = detr.buffers.get(buffer).unwrap();
    detr.buffers.set(buffer, &(value + 1.0).unwrap()).unwrap();
    let after = no_grad(|| detr.forward(&pixels, Some(&mask))).unwrap();
    assert!(max_abs_diff(&before.logits, &after.logits) > 1e-3);
    let dir = tempfile::tempdir().unwrap();
    detr.save(dir.path()).unwrap();
    let back = Detr::from_folder(dir.path(), None, 0, &Device::Cpu).unwrap();
    let again = no_grad(|| back.forward(&pixels, Some(&mask))).unwrap();
    assert_eq!(max_abs_diff(&after.logits, &again.logits), 0.0);
}

#[test]
fn trainable_backbone_norms_learn_and_save_as_the_frozen_norms_transformers_loads() {
    let (tensors, _) = reference();
    let (name, folder) = &cases()[0];
    let config = DetrConfig::read(&folder.join("config.json")).unwrap();
    let detr = Detr::new_with(config, BackboneNorms::Trainable, 7, &Device::Cpu).unwrap();
    for (_, v) in detr.params.all() {
        mosaic_models::grad_mode::set_frozen(&v, false);
    }
    let norm = "model.backbone.conv_encoder.model.embedder.embedder.normalization";
    let names: Vec<String> = detr.params.all().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&format!("{norm}.weight")), "{names:?}");
    let (pixels, mask) = inputs(&tensors, name);
    let mean_before = detr.buffers.get(&format!("{norm}.running_mean")).unwrap();
    detr.set_training(true);
    let out = detr.forward(&pixels, Some(&mask)).unwrap();
    let wl = common_weights(out.logits.dims(), 1);
    let wb = common_weights(out.pred_boxes.dims(), 2);
    let loss = (out.logits.mul(&wl).unwrap().sum_all().unwrap()
        + out.pred_boxes.mul(&wb).unwrap().sum_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let all = detr.params.all();
    let norms: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.contains("normalization"))
        .map(|(n, v)| (n.as_str(), v))
        .collect();
    assert!(!norms.is_empty());
    assert_gradients_reach(norms, &grads);
    // Training updated the running statistics.
    let mean_after = detr.buffers.get(&format!("{norm}.running_mean")).unwrap();
    assert!(max_abs_diff(&mean_before, &mean_after) > 1e-4);
    // Saved under transformers' names and reloaded as frozen norms: the same function as the model in eval mode.
    detr.set_training(false);
    let dir = tempfile::tempdir().unwrap();
    detr.save(dir.path()).unwrap();
    let want: BTreeSet<String> = tensor_names(&folder.join("model.safetensors"));
    assert_eq!(tensor_names(&dir.path().join("model.safetensors")), want);
    let back = Detr::from_folder(dir.path(), None, 0, &Device::Cpu).unwrap();
    let a = no_grad(|| detr.forward(&pixels, Some(&mask))).unwrap();
    let b = no_grad(|| back.forward(&pixels, Some(&mask))).unwrap();
    assert!(max_abs_diff(&a.logits, &b.logits) < 1e-5);
    assert!(max_abs_diff(&a.pred_boxes, &b.pred_boxes) < 1e-5);
}

#[test]
fn new_labels_get_a_fresh_classifier_with_a_no_object_class() {
    let (_, folder) = &cases()[0];
    let labels: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let detr = Detr::from_folder(folder, Some(&labels), 3, &Device::Cpu).unwrap();
    let pixels = Tensor::zeros((1, 3, 32, 40), DType::F32, &Device::Cpu).unwrap();
    let out = no_grad(|| detr.forward(&pixels, None)).unwrap();
    assert_eq!(out.logits.dims(), [1, 6, 6]);
    assert_eq!(out.pred_boxes.dims(), [1, 6, 4]);
    assert_eq!(detr.config.to_json()["id2label"]["4"], "e");
}

/// A copy of the tiny folder with its config edited by `edit` and the tensor `drop` (if any) left out.
fn edited_copy(dir: &Path, edit: impl Fn(&mut serde_json::Value), drop: Option<&str>) -> PathBuf {
    let src = &cases()[0].1;
    let out = dir.join("edited");
    std::fs::create_dir_all(&out).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let mut tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    if let Some(name) = drop {
        assert!(tensors.remove(name).is_some(), "no tensor {name}");
    }
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn a_timm_backbone_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let folder = edited_copy(dir.path(), |c| c["use_timm_backbone"] = true.into(), None);
    let err = Detr::from_folder(&folder, None, 0, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, ModelError::Config { .. }), "{err}");
    assert!(err.to_string().contains("use_timm_backbone"), "{err}");
    // transformers 5.x reads a config without `backbone_config` as a timm one too.
    let folder = edited_copy(
        dir.path(),
        |c| {
            c.as_object_mut().unwrap().remove("backbone_config");
            c.as_object_mut().unwrap().remove("use_timm_backbone");
        },
        None,
    );
    let err = Detr::from_folder(&folder, None, 0, &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("backbone_config"), "{err}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "model.decoder.layers.1.encoder_attn.k_proj.weight",
        "model.backbone.conv_encoder.model.encoder.stages.1.layers.0.shortcut.normalization.running_var",
        "model.query_position_embeddings.weight",
    ] {
        let folder = edited_copy(dir.path(), |_| {}, Some(name));
        let err = Detr::from_folder(&folder, None, 0, &Device::Cpu)
            .err()
            .unwrap();
        match &err {
            ModelError::MissingTensor { name: missing, .. } => assert_eq!(missing, name),
            other => panic!("expected a missing-tensor error for {name}, got {other}"),
        }
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn bad_inputs_and_configs_are_errors() {
    let (_, folder) = &cases()[0];
    let detr = Detr::from_folder(folder, None, 0, &Device::Cpu).unwrap();
    let pixels = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let mask = Tensor::ones((2, 16, 32), DType::F32, &Device::Cpu).unwrap();
    let err = detr.forward(&pixels, Some(&mask)).err().unwrap();
    assert!(err.to_string().contains("pixel_mask"), "{err}");
    let err = detr.forward(&pixels.get(0).unwrap(), None).err().unwrap();
    assert!(err.to_string().contains("pixel_values"), "{err}");

    let text = std::fs::read_to_string(folder.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["position_embedding_type"] = "learned".into();
    let err = DetrConfig::parse(&config.to_string(), "c.json".as_ref())
        .err()
        .unwrap();
    assert!(err.to_string().contains("position_embedding_type"), "{err}");
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["backbone_config"]["out_features"] = serde_json::json!(["stage7"]);
    let err = DetrConfig::parse(&config.to_string(), "c.json".as_ref())
        .err()
        .unwrap();
    assert!(err.to_string().contains("out_features"), "{err}");

    let logits = Tensor::zeros((1, 6, 4), DType::F32, &Device::Cpu).unwrap();
    let boxes = Tensor::zeros((1, 5, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(post_process_object_detection(&logits, &boxes, 0.5, None).is_err());
    let boxes = Tensor::zeros((1, 6, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(post_process_object_detection(&logits, &boxes, 0.5, Some(&[(1, 1), (2, 2)])).is_err());
}
