//! Every projection and attention block of every transformer model is reachable by its HF name from the
//! parameter store, so LoRA and prefix tuning attach without touching a model file.

mod common;

use candle_core::{Device, Tensor};
use mosaic_models::params::ParamStore;
use mosaic_models::{Bert, BertTask, Clip, Gpt2, Vit};

fn names(store: &ParamStore) -> (Vec<String>, Vec<String>) {
    let linears = store.linears().into_iter().map(|(n, _)| n).collect();
    let blocks = store.attentions().into_iter().map(|(n, _)| n).collect();
    (linears, blocks)
}

#[test]
fn every_model_registers_its_projections_and_attention_blocks() {
    let d = Device::Cpu;
    let models = common::fixtures().join("models");
    let bert = Bert::new(
        common::tiny_config(&["a", "b"]),
        BertTask::SequenceClassification,
        0,
        &d,
    )
    .unwrap();
    let (linears, blocks) = names(&bert.params);
    assert!(linears.contains(&"bert.encoder.layer.1.attention.self.query".to_string()));
    assert!(linears.contains(&"bert.encoder.layer.0.output.dense".to_string()));
    assert!(linears.contains(&"classifier".to_string()));
    assert_eq!(
        blocks,
        [
            "bert.encoder.layer.0.attention",
            "bert.encoder.layer.1.attention"
        ]
    );

    let gpt2 = Gpt2::from_folder(&models.join("tiny-gpt2"), 0, &d).unwrap();
    let (linears, blocks) = names(&gpt2.params);
    assert!(linears.contains(&"transformer.h.0.attn.c_attn".to_string()));
    assert!(linears.contains(&"transformer.h.1.mlp.c_proj".to_string()));
    assert_eq!(blocks.len(), gpt2.transformer.num_layers());

    let vit = Vit::from_folder(&models.join("tiny-vit"), None, None, 0, &d).unwrap();
    let (linears, blocks) = names(&vit.params);
    assert!(linears.contains(&"vit.encoder.layer.0.attention.attention.value".to_string()));
    assert_eq!(blocks[0], "vit.encoder.layer.0.attention");

    let clip = Clip::from_folder(&models.join("tiny-clip"), 0, &d).unwrap();
    let (linears, blocks) = names(&clip.params);
    assert!(linears.contains(&"text_model.encoder.layers.0.self_attn.q_proj".to_string()));
    assert!(linears.contains(&"visual_projection".to_string()));
    assert!(blocks.contains(&"vision_model.encoder.layers.1.self_attn".to_string()));
}

#[test]
fn a_prefix_set_through_the_store_changes_the_model() {
    let d = Device::Cpu;
    let gpt2 = Gpt2::from_folder(&common::fixtures().join("models/tiny-gpt2"), 0, &d).unwrap();
    let ids = Tensor::new(&[[300u32, 221, 81]], &d).unwrap();
    let before = gpt2.logits(&ids, None).unwrap();
    let heads = gpt2.config.n_head;
    let head_dim = gpt2.config.head_dim();
    for (_, entry) in gpt2.params.attentions() {
        assert_eq!((entry.heads, entry.head_dim), (heads, head_dim));
        let slot = entry.prefix;
        let keys = Tensor::ones((1, heads, 2, head_dim), candle_core::DType::F32, &d).unwrap();
        slot.set(Some(mosaic_models::layers::KvPrefix {
            values: keys.clone(),
            keys,
        }));
    }
    let after = gpt2.logits(&ids, None).unwrap();
    let diff = mosaic_models::testing::max_abs_diff(&after, &before);
    assert!(diff > 1e-3, "the prefix is attended to ({diff})");
}
