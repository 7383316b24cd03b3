//! Every trainable BERT parameter receives a finite, non-zero gradient, from each head's loss.

mod common;

use candle_core::{Device, Tensor};
use mosaic_models::loss::cross_entropy;
use mosaic_models::testing::assert_gradients_reach;
use mosaic_models::{Bert, BertTask};

fn inputs() -> (Tensor, Tensor, Tensor) {
    let d = Device::Cpu;
    let ids = Tensor::new(&[[2u32, 7, 9, 11, 4, 3], [2, 13, 4, 3, 0, 0]], &d).unwrap();
    let types = Tensor::new(&[[0u32, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], &d).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &d).unwrap();
    (ids, types, mask)
}

fn assert_all_grads(bert: &Bert, loss: &Tensor) {
    let params = bert.params.all();
    let named = params.iter().map(|(n, v)| (n.as_str(), v));
    assert_gradients_reach(named, &loss.backward().unwrap());
}

#[test]
fn masked_lm_loss_reaches_every_parameter() {
    let bert = Bert::new(
        common::tiny_config(&[]),
        BertTask::MaskedLm,
        1,
        &Device::Cpu,
    )
    .unwrap();
    bert.set_training(true);
    let (ids, types, mask) = inputs();
    let hidden = bert.hidden_states(&ids, Some(&types), Some(&mask)).unwrap();
    let logits = bert.mlm_logits(&hidden).unwrap();
    let labels = Tensor::new(
        &[5i64, -100, 8, -100, 12, -100, 6, 9, -100, 30, -100, -100],
        &Device::Cpu,
    )
    .unwrap();
    let loss = cross_entropy(&logits.flatten_to(1).unwrap(), &labels).unwrap();
    assert_all_grads(&bert, &loss);
}

#[test]
fn sequence_classification_loss_reaches_every_parameter() {
    let bert = Bert::new(
        common::tiny_config(&["neg", "neu", "pos"]),
        BertTask::SequenceClassification,
        2,
        &Device::Cpu,
    )
    .unwrap();
    bert.set_training(true);
    let (ids, types, mask) = inputs();
    let hidden = bert.hidden_states(&ids, Some(&types), Some(&mask)).unwrap();
    let logits = bert.classifier_logits(&hidden).unwrap();
    let loss = cross_entropy(&logits, &Tensor::new(&[2i64, 0], &Device::Cpu).unwrap()).unwrap();
    // The pooler, embeddings and all layers must all be reached.
    assert_all_grads(&bert, &loss);
}

#[test]
fn token_classification_loss_reaches_every_parameter() {
    let bert = Bert::new(
        common::tiny_config(&["O", "B-PER", "I-PER"]),
        BertTask::TokenClassification,
        3,
        &Device::Cpu,
    )
    .unwrap();
    bert.set_training(true);
    let (ids, types, mask) = inputs();
    let hidden = bert.hidden_states(&ids, Some(&types), Some(&mask)).unwrap();
    let logits = bert.classifier_logits(&hidden).unwrap();
    let labels = Tensor::new(
        &[-100i64, 1, 2, 0, 0, -100, -100, 1, 0, -100, -100, -100],
        &Device::Cpu,
    )
    .unwrap();
    let loss = cross_entropy(&logits.flatten_to(1).unwrap(), &labels).unwrap();
    assert_all_grads(&bert, &loss);
}

#[test]
fn dropout_is_active_only_in_training_and_seeded() {
    let (ids, types, mask) = inputs();
    let run = |training: bool, seed: u64| {
        let bert = Bert::new(common::tiny_config(&[]), BertTask::Base, 4, &Device::Cpu).unwrap();
        bert.mode.set_seed(seed);
        bert.set_training(training);
        let h = bert.hidden_states(&ids, Some(&types), Some(&mask)).unwrap();
        h.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(
        run(false, 1),
        run(false, 2),
        "eval mode must be deterministic and dropout-free"
    );
    assert_eq!(run(true, 7), run(true, 7), "same seed, same dropout");
    assert_ne!(
        run(true, 7),
        run(true, 8),
        "different seeds, different dropout"
    );
    assert_ne!(run(true, 7), run(false, 7), "dropout active in training");
}
