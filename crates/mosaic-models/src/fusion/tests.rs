//! Every fusion module: each parameter gets a finite, non-zero gradient from a loss on its output; shapes;
//! width mismatches are errors naming both widths; the weighted sum's weights; the cross attention's key padding.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::dropout::Mode;
use crate::error::ModelError;
use crate::grad_mode::no_grad;
use crate::params::{ParamLoader, ParamStore};
use crate::testing::{assert_close, assert_gradients_reach};

fn input(shape: &[usize], offset: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .affine(0.37, offset as f64)
        .unwrap()
        .sin()
        .unwrap()
        .reshape(shape)
        .unwrap()
}

/// A loss that weighs every output element differently, so no gradient cancels by symmetry.
fn weighted_sum(y: &Tensor) -> Tensor {
    y.mul(&input(y.dims(), 0.5)).unwrap().sum_all().unwrap()
}

fn fresh(seed: u64) -> (ParamLoader, ParamStore) {
    let store = ParamStore::new();
    (ParamLoader::fresh(store.clone(), seed, &Device::Cpu), store)
}

fn assert_all_grads(store: &ParamStore, loss: &Tensor) {
    let params = store.all();
    assert_gradients_reach(
        params.iter().map(|(n, v)| (n.as_str(), v)),
        &loss.backward().unwrap(),
    );
}

fn invalid_input(err: ModelError) -> String {
    match err {
        ModelError::InvalidInput(message) => message,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn training_mode() -> Arc<Mode> {
    let mode = Mode::seeded(7);
    mode.set_training(true);
    mode
}

#[test]
fn concat_fusion_gradients_reach_every_parameter() {
    let (loader, store) = fresh(1);
    let fusion = ConcatFusion::load(&loader.pp("fusion"), &[4, 6, 3], 5, training_mode())
        .unwrap()
        .with_dropout(0.1);
    let inputs = [input(&[2, 4], 0.), input(&[2, 6], 1.), input(&[2, 3], 2.)];
    let y = fusion.forward(&inputs).unwrap();
    assert_eq!(y.dims(), [2, 5]);
    assert_all_grads(&store, &weighted_sum(&y));
    let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fusion.proj.weight", "fusion.proj.bias"]);
}

#[test]
fn concat_fusion_rejects_wrong_count_and_width() {
    let (loader, _) = fresh(1);
    let fusion = ConcatFusion::load(&loader, &[4, 6], 5, Mode::shared()).unwrap();
    let count = fusion.forward(&[input(&[2, 4], 0.)]).unwrap_err();
    assert!(invalid_input(count).contains("expected 2 modality inputs, got 1"));
    let width = fusion
        .forward(&[input(&[2, 4], 0.), input(&[2, 7], 0.)])
        .unwrap_err();
    let message = invalid_input(width);
    assert!(
        message.contains("modality 1 has width 7, expected 6"),
        "{message}"
    );
    let batch = fusion
        .forward(&[input(&[2, 4], 0.), input(&[3, 6], 0.)])
        .unwrap_err();
    assert!(invalid_input(batch).contains("batch size 3"));
}

#[test]
fn weighted_sum_gradients_reach_every_parameter() {
    for scoring in [Scoring::Static, Scoring::Conditioned] {
        let (loader, store) = fresh(2);
        let fusion = WeightedSumFusion::load(&loader.pp("fusion"), &[4, 6], 8, scoring).unwrap();
        let out = fusion
            .forward(&[input(&[3, 4], 0.), input(&[3, 6], 1.)])
            .unwrap();
        assert_eq!(out.fused.dims(), [3, 8]);
        assert_eq!(out.weights.dims(), [3, 2]);
        assert_all_grads(&store, &weighted_sum(&out.fused));
    }
}

#[test]
fn weighted_sum_weights_are_a_distribution_equal_at_init_for_static_scores() {
    let xs = [input(&[3, 4], 0.), input(&[3, 6], 1.), input(&[3, 2], 2.)];
    let (loader, _) = fresh(3);
    let fixed = WeightedSumFusion::load(&loader, &[4, 6, 2], 8, Scoring::Static).unwrap();
    let out = fixed.forward(&xs).unwrap();
    assert_close(
        &out.weights,
        &Tensor::full(1f32 / 3., (3, 3), &Device::Cpu).unwrap(),
        1e-6,
    );
    // The static scores are read through `param`: inside no_grad nothing is recorded.
    assert!(!no_grad(|| fixed.forward(&xs)).unwrap().fused.track_op());

    let (loader, _) = fresh(3);
    let conditioned =
        WeightedSumFusion::load(&loader, &[4, 6, 2], 8, Scoring::Conditioned).unwrap();
    let weights = conditioned.forward(&xs).unwrap().weights;
    let sums = weights.sum(1).unwrap();
    assert_close(
        &sums,
        &Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(),
        1e-6,
    );
    let w = weights.to_vec2::<f32>().unwrap();
    assert!(w.iter().flatten().all(|&x| x > 0.0 && x < 1.0));
    assert_ne!(
        w[0], w[1],
        "conditioned weights should depend on the sample"
    );
}

#[test]
fn weighted_sum_rejects_a_wrong_width() {
    let (loader, _) = fresh(3);
    let fusion = WeightedSumFusion::load(&loader, &[4, 6], 8, Scoring::Static).unwrap();
    let err = fusion
        .forward(&[input(&[2, 5], 0.), input(&[2, 6], 0.)])
        .unwrap_err();
    let message = invalid_input(err);
    assert!(
        message.contains("modality 0 has width 5, expected 4"),
        "{message}"
    );
}

fn cross(direction: Direction, seed: u64) -> (CrossAttentionFusion, ParamStore) {
    let (loader, store) = fresh(seed);
    let cfg = CrossAttentionConfig {
        direction,
        ..CrossAttentionConfig::new([6, 5], 8, 2)
    };
    let fusion = CrossAttentionFusion::load(&loader.pp("fusion"), &cfg, &Mode::shared()).unwrap();
    (fusion, store)
}

fn masks() -> (Tensor, Tensor) {
    let d = Device::Cpu;
    let a_mask = Tensor::new(&[[1u32, 1, 1], [1, 1, 0]], &d).unwrap();
    let b_mask = Tensor::new(&[[1u32, 1, 1, 0], [1, 1, 0, 0]], &d).unwrap();
    (a_mask, b_mask)
}

#[test]
fn cross_attention_gradients_reach_every_parameter() {
    let (a_mask, b_mask) = masks();
    for direction in [Direction::AToB, Direction::Both] {
        let (fusion, store) = cross(direction, 4);
        let (a, b) = (input(&[2, 3, 6], 0.), input(&[2, 4, 5], 1.));
        let out = fusion
            .forward(&a, Some(&a_mask), &b, Some(&b_mask))
            .unwrap();
        assert_eq!(out.pooled.dims(), [2, 8]);
        assert_eq!(out.a_tokens.dims(), [2, 3, 8]);
        assert_eq!(
            out.b_tokens.as_ref().map(|t| t.dims().to_vec()),
            (direction == Direction::Both).then(|| vec![2, 4, 8])
        );
        assert_all_grads(&store, &weighted_sum(&out.pooled));
        let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"fusion.a_to_b.attention.query.weight".to_string()));
        assert!(names.contains(&"fusion.a_to_b.residual.weight".to_string()));
        assert_eq!(
            names.iter().any(|n| n.starts_with("fusion.b_to_a.")),
            direction == Direction::Both
        );
    }
}

#[test]
fn cross_attention_ignores_padded_tokens() {
    let (a_mask, b_mask) = masks();
    let (a, b) = (input(&[2, 3, 6], 0.), input(&[2, 4, 5], 1.));
    // Large values at the padded positions only.
    let changed = |x: &Tensor, mask: &Tensor| {
        let pad = mask
            .ones_like()
            .unwrap()
            .sub(mask)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let noise = input(x.dims(), 3.).affine(50.0, 7.0).unwrap();
        x.add(&noise.broadcast_mul(&pad.unsqueeze(2).unwrap()).unwrap())
            .unwrap()
    };
    let (a2, b2) = (changed(&a, &a_mask), changed(&b, &b_mask));
    assert!(
        b2.sub(&b)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 1.0
    );
    for direction in [Direction::AToB, Direction::Both] {
        let (fusion, _) = cross(direction, 5);
        let one = fusion
            .forward(&a, Some(&a_mask), &b, Some(&b_mask))
            .unwrap();
        // A-to-B keeps A as it is, so that its token outputs can be compared too (A's padded rows would differ).
        let a_other = if direction == Direction::Both {
            &a2
        } else {
            &a
        };
        let two = fusion
            .forward(a_other, Some(&a_mask), &b2, Some(&b_mask))
            .unwrap();
        assert_close(&two.pooled, &one.pooled, 1e-5);
        if direction == Direction::AToB {
            assert_close(&two.a_tokens, &one.a_tokens, 1e-5);
        }
    }
}

#[test]
fn cross_attention_rejects_a_wrong_width_or_mask() {
    let (fusion, _) = cross(Direction::AToB, 6);
    let a = input(&[2, 3, 6], 0.);
    let err = fusion
        .forward(&a, None, &input(&[2, 4, 7], 0.), None)
        .unwrap_err();
    let message = invalid_input(err);
    assert!(
        message.contains("input b has width 7, expected 5"),
        "{message}"
    );
    let err = fusion
        .forward(&input(&[2, 3, 4], 0.), None, &input(&[2, 4, 5], 0.), None)
        .unwrap_err();
    assert!(invalid_input(err).contains("input a has width 4, expected 6"));
    let short = Tensor::ones((2, 3), DType::U32, &Device::Cpu).unwrap();
    let err = fusion
        .forward(&a, None, &input(&[2, 4, 5], 0.), Some(&short))
        .unwrap_err();
    assert!(invalid_input(err).contains("mask of input b"));
    let (loader, _) = fresh(6);
    let bad = CrossAttentionFusion::load(
        &loader,
        &CrossAttentionConfig::new([6, 5], 9, 2),
        &Mode::shared(),
    );
    assert!(matches!(bad, Err(ModelError::InvalidInput(_))));
}

#[test]
fn two_branch_cnn_gradients_reach_every_parameter() {
    let (loader, store) = fresh(7);
    let cnn = TwoBranchCnn::load(&loader.pp("cnn"), [3, 1], 4, 2).unwrap();
    let y = cnn
        .forward(&input(&[2, 3, 6, 5], 0.), &input(&[2, 1, 6, 5], 1.))
        .unwrap();
    assert_eq!(y.dims(), [2, 4]);
    assert_all_grads(&store, &weighted_sum(&y));
    assert_eq!(store.all().len(), 8);
    assert!(store.get("cnn.branches.1.layers.1.bias").is_some());
}

#[test]
fn two_branch_cnn_rejects_mismatched_inputs() {
    let (loader, _) = fresh(7);
    let cnn = TwoBranchCnn::load(&loader, [3, 1], 4, 1).unwrap();
    let err = cnn
        .forward(&input(&[2, 3, 6, 5], 0.), &input(&[2, 2, 6, 5], 0.))
        .unwrap_err();
    let message = invalid_input(err);
    assert!(
        message.contains("input b has 2 channels, its branch expects 1"),
        "{message}"
    );
    let err = cnn
        .forward(&input(&[2, 3, 6, 5], 0.), &input(&[2, 1, 6, 4], 0.))
        .unwrap_err();
    let message = invalid_input(err);
    assert!(
        message.contains("2×6×5") && message.contains("2×6×4"),
        "{message}"
    );
    assert!(TwoBranchCnn::load(&loader, [3, 1], 4, 0).is_err());
}
