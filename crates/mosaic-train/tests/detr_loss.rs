//! DETR's set loss against transformers' `ForObjectDetectionLoss` on the cases that
//! xtask/scripts/make_detr_loss_fixtures.py writes to fixtures/reference/detr_loss.{json,safetensors}: matched
//! indices equal, the loss and every `loss_dict` entry within 1e-5, and the gradients of the total loss with respect
//! to every layer's logits and boxes within 1e-5 of torch's. Then the errors a user can cause.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use mosaic_models::testing::max_abs_diff;
use mosaic_train::detection::{DetectionTarget, DetrLoss, DetrLossConfig, Match};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/reference");
const TOL: f64 = 1e-5;

fn fixtures() -> (Value, HashMap<String, Tensor>) {
    let json =
        std::fs::read_to_string(format!("{DIR}/detr_loss.json")).expect("read detr_loss.json");
    let tensors =
        candle_core::safetensors::load(format!("{DIR}/detr_loss.safetensors"), &Device::Cpu)
            .expect("read detr_loss.safetensors");
    (
        serde_json::from_str(&json).expect("parse detr_loss.json"),
        tensors,
    )
}

fn targets(case: &Value) -> Vec<DetectionTarget> {
    let list = case["targets"].as_array().expect("targets");
    list.iter()
        .map(|t| DetectionTarget {
            class_labels: t["class_labels"]
                .as_array()
                .expect("class_labels")
                .iter()
                .map(|v| v.as_u64().expect("label") as u32)
                .collect(),
            boxes: t["boxes"]
                .as_array()
                .expect("boxes")
                .iter()
                .map(|b| {
                    let b: Vec<f32> = b
                        .as_array()
                        .expect("box")
                        .iter()
                        .map(|v| v.as_f64().unwrap() as f32)
                        .collect();
                    [b[0], b[1], b[2], b[3]]
                })
                .collect(),
        })
        .collect()
}

fn expected_matches(case: &Value, layer: &str) -> Vec<Match> {
    let as_usize = |v: &Value| -> Vec<usize> {
        v.as_array()
            .expect("index list")
            .iter()
            .map(|i| i.as_u64().expect("index") as usize)
            .collect()
    };
    case["indices"][layer]
        .as_array()
        .expect("indices")
        .iter()
        .map(|pair| Match {
            queries: as_usize(&pair[0]),
            targets: as_usize(&pair[1]),
        })
        .collect()
}

/// Runs one fixture case; returns the largest differences (loss and loss_dict, gradients) for the report.
fn check_case(name: &str) -> (f64, f32) {
    let (json, tensors) = fixtures();
    let case = &json["cases"][name];
    let aux_layers = case["aux_layers"].as_u64().expect("aux_layers") as usize;
    let var = |key: &str| Var::from_tensor(&tensors[key]).expect("var");
    let layer_keys: Vec<String> = std::iter::once(name.to_string())
        .chain((0..aux_layers).map(|i| format!("{name}.aux_{i}")))
        .collect();
    let vars: Vec<(Var, Var)> = layer_keys
        .iter()
        .map(|k| (var(&format!("{k}.logits")), var(&format!("{k}.pred_boxes"))))
        .collect();
    let aux: Vec<(Tensor, Tensor)> = vars[1..]
        .iter()
        .map(|(l, b)| (l.as_tensor().clone(), b.as_tensor().clone()))
        .collect();
    let loss = DetrLoss::new(DetrLossConfig::new(
        case["num_labels"].as_u64().unwrap() as usize
    ))
    .unwrap();
    let out = loss
        .forward(
            vars[0].0.as_tensor(),
            vars[0].1.as_tensor(),
            &aux,
            &targets(case),
        )
        .unwrap();

    assert_eq!(
        out.indices,
        expected_matches(case, "final"),
        "{name}: final-layer matching"
    );
    for (i, m) in out.aux_indices.iter().enumerate() {
        assert_eq!(
            m,
            &expected_matches(case, &format!("aux_{i}")),
            "{name}: aux_{i} matching"
        );
    }
    let want_loss = case["loss"].as_f64().unwrap();
    let got_loss = f64::from(out.loss.to_scalar::<f32>().unwrap());
    let mut worst = (got_loss - want_loss).abs();
    assert!(worst <= TOL, "{name}: loss {got_loss} vs {want_loss}");
    let want_dict = case["loss_dict"].as_object().unwrap();
    let got_keys: Vec<&String> = out.loss_dict.keys().collect();
    let want_keys: Vec<&String> = want_dict.keys().collect();
    assert_eq!(got_keys, want_keys, "{name}: loss_dict keys");
    for (k, want) in want_dict {
        let d = (out.loss_dict[k] - want.as_f64().unwrap()).abs();
        assert!(d <= TOL, "{name}: {k} = {} vs {want}", out.loss_dict[k]);
        worst = worst.max(d);
    }

    let grads = out.loss.backward().unwrap();
    let mut worst_grad = 0f32;
    for (key, (l, b)) in layer_keys.iter().zip(&vars) {
        for (what, v) in [("logits", l), ("pred_boxes", b)] {
            let got = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {key}.{what}"));
            let d = max_abs_diff(got, &tensors[&format!("grad.{key}.{what}")]);
            assert!(
                f64::from(d) <= TOL,
                "{name}: gradient of {key}.{what} differs by {d}"
            );
            worst_grad = worst_grad.max(d);
        }
    }
    (worst, worst_grad)
}

#[test]
fn matches_transformers_with_an_empty_image_and_aux_layers() {
    let (loss, grad) = check_case("main");
    println!("main: max |loss diff| {loss:e}, max |grad diff| {grad:e}");
}

#[test]
fn matches_transformers_when_every_query_is_matched() {
    let (loss, grad) = check_case("dense");
    println!("dense: max |loss diff| {loss:e}, max |grad diff| {grad:e}");
}

fn small_batch(q: usize) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let logits = Tensor::zeros((1, q, 3), candle_core::DType::F32, &dev).unwrap();
    let boxes = (Tensor::ones((1, q, 4), candle_core::DType::F32, &dev).unwrap() * 0.25).unwrap();
    (logits, boxes)
}

fn err_of(logits: &Tensor, boxes: &Tensor, target: DetectionTarget) -> String {
    let loss = DetrLoss::new(DetrLossConfig::new(2)).unwrap();
    loss.forward(logits, boxes, &[], &[target])
        .unwrap_err()
        .to_string()
}

#[test]
fn more_targets_than_queries_is_an_error() {
    let (logits, boxes) = small_batch(2);
    let target = DetectionTarget {
        class_labels: vec![0, 1, 0],
        boxes: vec![[0.5, 0.5, 0.2, 0.2]; 3],
    };
    let err = err_of(&logits, &boxes, target);
    assert!(
        err.contains("3 boxes") && err.contains("only 2 queries"),
        "{err}"
    );
}

#[test]
fn label_out_of_range_is_an_error() {
    let (logits, boxes) = small_batch(4);
    let target = DetectionTarget {
        class_labels: vec![2],
        boxes: vec![[0.5, 0.5, 0.2, 0.2]],
    };
    let err = err_of(&logits, &boxes, target);
    assert!(
        err.contains("class label 2") && err.contains("out of range"),
        "{err}"
    );
}

#[test]
fn nan_boxes_are_errors() {
    let (logits, boxes) = small_batch(4);
    let target = DetectionTarget {
        class_labels: vec![1],
        boxes: vec![[0.5, f32::NAN, 0.2, 0.2]],
    };
    let err = err_of(&logits, &boxes, target);
    assert!(
        err.contains("box 0") && err.contains("not a valid"),
        "{err}"
    );

    let nan_pred = boxes.affine(f64::NAN, 0.0).unwrap();
    let target = DetectionTarget {
        class_labels: vec![1],
        boxes: vec![[0.5, 0.5, 0.2, 0.2]],
    };
    let err = err_of(&logits, &nan_pred, target);
    assert!(
        err.contains("image 0: predicted boxes") && err.contains("NaN"),
        "{err}"
    );
}

#[test]
fn shapes_are_checked() {
    let (logits, boxes) = small_batch(4);
    let loss = DetrLoss::new(DetrLossConfig::new(3)).unwrap();
    let err = loss
        .forward(&logits, &boxes, &[], &[DetectionTarget::default()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_labels + 1"), "{err}");
    let loss = DetrLoss::new(DetrLossConfig::new(2)).unwrap();
    let err = loss
        .forward(&logits, &boxes, &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("0 detection targets for a batch of 1"),
        "{err}"
    );
    assert!(DetrLoss::new(DetrLossConfig::new(0)).is_err());
}

#[test]
fn a_batch_without_objects_gives_zero_box_losses() {
    let (logits, boxes) = small_batch(3);
    let loss = DetrLoss::new(DetrLossConfig::new(2)).unwrap();
    let out = loss
        .forward(&logits, &boxes, &[], &[DetectionTarget::default()])
        .unwrap();
    assert_eq!(out.loss_dict["loss_bbox"], 0.0);
    assert_eq!(out.loss_dict["loss_giou"], 0.0);
    // Uniform logits over 3 classes: every query's cross-entropy is ln 3, and so is the weighted mean.
    assert!((out.loss_dict["loss_ce"] - 3f64.ln()).abs() < 1e-6);
    assert_eq!(out.loss_dict["cardinality_error"], 3.0);
}
