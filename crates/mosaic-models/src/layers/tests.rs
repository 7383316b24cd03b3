//! Tests of the building blocks: every trainable parameter of every layer gets a finite, non-zero gradient;
//! cross attention and the key/value prefix agree with a slow composed attention; cached decoding equals the
//! full forward.

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor, Var};

use super::*;
use crate::dropout::{Dropout, Mode};
use crate::params::{ParamLoader, ParamStore};
use crate::testing::{assert_close, assert_gradients_reach};

const H: usize = 8;
const HEADS: usize = 2;

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

fn assert_all_grads(store: &ParamStore, extra: &[&Var], loss: &Tensor) {
    let params = store.all();
    let named = params.iter().map(|(n, v)| (n.as_str(), v));
    let extra = extra.iter().map(|v| ("extra input", *v));
    assert_gradients_reach(named.chain(extra), &loss.backward().unwrap());
}

fn fresh(seed: u64) -> (ParamLoader, ParamStore) {
    let store = ParamStore::new();
    (ParamLoader::fresh(store.clone(), seed, &Device::Cpu), store)
}

fn separate_attention(l: &ParamLoader, kv_dim: usize, mode: &Arc<Mode>) -> MultiHeadAttention {
    let qkv = QkvProjection::Separate {
        query: Linear::load(&l.pp("q"), H, H, 0.3).unwrap(),
        key: Linear::load(&l.pp("k"), kv_dim, H, 0.3).unwrap(),
        value: Linear::load(&l.pp("v"), kv_dim, H, 0.3).unwrap(),
    };
    let settings = AttentionSettings {
        heads: HEADS,
        scale: None,
        attention_dropout: 0.0,
        output_dropout: 0.0,
    };
    MultiHeadAttention::new(
        l,
        qkv,
        Linear::load(&l.pp("o"), H, H, 0.3).unwrap(),
        settings,
        mode,
    )
}

fn gpt_like_layer(l: &ParamLoader, placement: NormPlacement, mode: &Arc<Mode>) -> TransformerLayer {
    let settings = AttentionSettings {
        heads: HEADS,
        scale: None,
        attention_dropout: 0.0,
        output_dropout: 0.0,
    };
    let attention = MultiHeadAttention::new(
        l,
        QkvProjection::Fused(
            Linear::load_as(&l.pp("c_attn"), H, 3 * H, 0.3, LinearKind::Conv1D).unwrap(),
        ),
        Linear::load_as(&l.pp("c_proj"), H, H, 0.3, LinearKind::Conv1D).unwrap(),
        settings,
        mode,
    );
    let mlp = Mlp::new(
        Linear::load_as(&l.pp("c_fc"), H, 3 * H, 0.3, LinearKind::Conv1D).unwrap(),
        Linear::load_as(&l.pp("mlp_proj"), 3 * H, H, 0.3, LinearKind::Conv1D).unwrap(),
        Activation::GeluTanh,
        Dropout::new(0.0, mode.clone()),
    );
    TransformerLayer::new(
        attention,
        LayerNorm::load(&l.pp("ln_1"), H, 1e-5).unwrap(),
        mlp,
        LayerNorm::load(&l.pp("ln_2"), H, 1e-5).unwrap(),
        placement,
    )
}

/// `[B, N, H] -> [B, heads, N, H / heads]`.
fn heads(x: &Tensor) -> Tensor {
    let (b, n, h) = x.dims3().unwrap();
    x.reshape((b, n, HEADS, h / HEADS))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
}

/// Attention from plain matmuls and a composed softmax: `keep` `[B, 1, Nq, Nk]` (1 = attend).
fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, keep: Option<&Tensor>) -> Tensor {
    let d = q.dim(3).unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
    let scores = match keep {
        Some(keep) => {
            let penalty = keep.affine(1e9, -1e9).unwrap();
            scores.broadcast_add(&penalty).unwrap()
        }
        None => scores,
    };
    let max = scores.max_keepdim(D::Minus1).unwrap();
    let e = scores.broadcast_sub(&max).unwrap().exp().unwrap();
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
    let ctx = p.matmul(&v.contiguous().unwrap()).unwrap();
    let (b, _, n, _) = ctx.dims4().unwrap();
    ctx.transpose(1, 2).unwrap().reshape((b, n, H)).unwrap()
}

/// Composed separate-projection attention with the block's own weights (names `q`, `k`, `v`, `o`).
fn composed_block(
    store: &ParamStore,
    x: &Tensor,
    context: &Tensor,
    prefix: Option<&KvPrefix>,
    keep: Option<&Tensor>,
) -> Tensor {
    let proj = |name: &str, x: &Tensor| {
        let w = store.get(&format!("{name}.weight")).unwrap();
        let b = store.get(&format!("{name}.bias")).unwrap();
        x.broadcast_matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
    };
    let (q, mut k, mut v) = (
        heads(&proj("q", x)),
        heads(&proj("k", context)),
        heads(&proj("v", context)),
    );
    if let Some(p) = prefix {
        let b = x.dim(0).unwrap();
        let pk = p
            .keys
            .broadcast_as((b, HEADS, p.keys.dim(2).unwrap(), H / HEADS));
        let pv = p
            .values
            .broadcast_as((b, HEADS, p.values.dim(2).unwrap(), H / HEADS));
        k = Tensor::cat(&[&pk.unwrap(), &k], 2).unwrap();
        v = Tensor::cat(&[&pv.unwrap(), &v], 2).unwrap();
    }
    proj(
        "o",
        &composed_attention(&q, &k.contiguous().unwrap(), &v, keep),
    )
}

#[test]
fn every_layer_parameter_gets_a_gradient() {
    let mode = Mode::seeded(3);
    mode.set_training(true);
    let x = input(&[2, 5, H], 0.0);
    for placement in [NormPlacement::Before, NormPlacement::After] {
        let (l, store) = fresh(1);
        let layer = gpt_like_layer(&l, placement, &mode);
        let mask = AttentionMask {
            causal: true,
            ..AttentionMask::default()
        };
        let y = layer.forward(&x, &mask, None).unwrap();
        assert_all_grads(&store, &[], &weighted_sum(&y));
    }
    let (l, store) = fresh(2);
    let embedding = Embedding::load(&l.pp("wte"), 11, H, 0.3).unwrap();
    let positions = Embedding::load(&l.pp("wpe"), 7, H, 0.3).unwrap();
    let norm = LayerNorm::load(&l.pp("ln"), H, 1e-5).unwrap();
    let head = Linear::load_as(&l.pp("head"), H, 3, 0.3, LinearKind::NoBias).unwrap();
    let ids = Tensor::new(&[[0u32, 3, 10, 5], [1, 2, 4, 6]], &Device::Cpu).unwrap();
    let e = positions
        .add_positions(&embedding.forward(&ids).unwrap(), None, 2)
        .unwrap();
    let y = head.forward_rows(&norm.forward(&e).unwrap()).unwrap();
    let full: Vec<u32> = (0..11).collect();
    // Touch every embedding row so none of them has an all-zero gradient.
    let all = embedding.forward(&Tensor::new(full.as_slice(), &Device::Cpu).unwrap());
    let loss = (weighted_sum(&y) + weighted_sum(&all.unwrap())).unwrap();
    let loss = (loss + weighted_sum(&positions.weight().narrow(0, 0, 2).unwrap())).unwrap();
    let loss = (loss + weighted_sum(&positions.weight().narrow(0, 6, 1).unwrap())).unwrap();
    assert_all_grads(&store, &[], &loss);
}

#[test]
fn cross_attention_matches_composed_attention_with_gradients() {
    let mode = Mode::seeded(0);
    let (l, store) = fresh(4);
    let attention = separate_attention(&l, 6, &mode);
    let x = Var::from_tensor(&input(&[2, 3, H], 0.0)).unwrap();
    let context = Var::from_tensor(&input(&[2, 5, 6], 1.0)).unwrap();
    let pad = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 0, 1, 0]], &Device::Cpu).unwrap();
    let mask = AttentionMask {
        key_padding_mask: Some(&pad),
        ..AttentionMask::default()
    };
    let fused = attention
        .forward(x.as_tensor(), Some(context.as_tensor()), &mask, None)
        .unwrap();
    let keep = pad
        .to_dtype(DType::F32)
        .unwrap()
        .reshape((2, 1, 1, 5))
        .unwrap();
    let slow = composed_block(
        &store,
        x.as_tensor(),
        context.as_tensor(),
        None,
        Some(&keep),
    );
    assert_close(&fused, &slow, 1e-5);
    let (g_fused, g_slow) = (
        weighted_sum(&fused).backward().unwrap(),
        weighted_sum(&slow).backward().unwrap(),
    );
    // Gradients agree for the inputs and for every projection weight and bias.
    let params = store.all();
    let vars = params.iter().map(|(_, v)| v).chain([&x, &context]);
    for var in vars {
        let a = g_fused.get(var.as_tensor()).unwrap();
        assert_close(a, g_slow.get(var.as_tensor()).unwrap(), 1e-4);
    }
    assert_all_grads(&store, &[&x, &context], &weighted_sum(&fused));
}

#[test]
fn a_fused_projection_refuses_cross_attention() {
    let mode = Mode::seeded(0);
    let (l, _) = fresh(4);
    let layer = gpt_like_layer(&l, NormPlacement::Before, &mode);
    let x = input(&[1, 2, H], 0.0);
    let err = layer
        .attention
        .forward(&x, Some(&x), &AttentionMask::default(), None);
    assert!(err.is_err());
}

fn prefix(p: usize) -> (Var, Var, KvPrefix) {
    let keys = Var::from_tensor(&input(&[1, HEADS, p, H / HEADS], 2.0)).unwrap();
    let values = Var::from_tensor(&input(&[1, HEADS, p, H / HEADS], 3.0)).unwrap();
    let prefix = KvPrefix {
        keys: keys.as_tensor().clone(),
        values: values.as_tensor().clone(),
    };
    (keys, values, prefix)
}

#[test]
fn a_key_value_prefix_matches_composed_attention_and_trains() {
    let mode = Mode::seeded(0);
    let (l, store) = fresh(5);
    let attention = separate_attention(&l, H, &mode);
    let (keys, values, kv) = prefix(3);
    attention.set_prefix(Some(kv.clone()));
    let x = input(&[2, 4, H], 0.0);
    let pad = Tensor::new(&[[1u32, 1, 1, 1], [1, 1, 1, 0]], &Device::Cpu).unwrap();
    let mask = AttentionMask {
        causal: true,
        key_padding_mask: Some(&pad),
        segment_ids: None,
    };
    let fused = attention.forward(&x, None, &mask, None).unwrap();
    // Every query sees the whole prefix, then the keys up to itself that are not padding.
    let causal = Tensor::new(
        &[
            [1f32, 0., 0., 0.],
            [1., 1., 0., 0.],
            [1., 1., 1., 0.],
            [1., 1., 1., 1.],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let keep = Tensor::cat(
        &[
            &Tensor::ones((4, 3), DType::F32, &Device::Cpu).unwrap(),
            &causal,
        ],
        1,
    )
    .unwrap()
    .reshape((1, 1, 4, 7))
    .unwrap();
    let pad_keep = Tensor::cat(
        &[
            &Tensor::ones((2, 3), DType::U32, &Device::Cpu).unwrap(),
            &pad,
        ],
        1,
    )
    .unwrap()
    .to_dtype(DType::F32)
    .unwrap()
    .reshape((2, 1, 1, 7))
    .unwrap();
    let keep = keep.broadcast_mul(&pad_keep).unwrap();
    let slow = composed_block(&store, &x, &x, Some(&kv), Some(&keep));
    assert_close(&fused, &slow, 1e-5);
    assert_all_grads(&store, &[&keys, &values], &weighted_sum(&fused));
    let segments = Tensor::zeros((2, 4), DType::U32, &Device::Cpu).unwrap();
    let packed = AttentionMask {
        segment_ids: Some(&segments),
        ..mask
    };
    assert!(attention.forward(&x, None, &packed, None).is_err());
}

/// A stack of GPT-like layers run over the whole sequence or step by step through a cache.
fn run_stack(
    layers: &[TransformerLayer],
    x: &Tensor,
    pad: &Tensor,
    cache: Option<&mut KvCache>,
) -> Tensor {
    let mask = AttentionMask {
        causal: true,
        key_padding_mask: Some(pad),
        segment_ids: None,
    };
    let mut x = x.clone();
    let mut cache = cache;
    for (i, layer) in layers.iter().enumerate() {
        x = layer
            .forward(&x, &mask, cache.as_deref_mut().map(|c| (c, i)))
            .unwrap();
    }
    x
}

#[test]
fn cached_decoding_equals_the_full_forward_with_and_without_a_prefix() {
    let mode = Mode::seeded(0);
    let (l, _) = fresh(6);
    let layers: Vec<TransformerLayer> = (0..2)
        .map(|i| gpt_like_layer(&l.pp(&i.to_string()), NormPlacement::Before, &mode))
        .collect();
    let x = input(&[2, 7, H], 0.0);
    // Left padding on the second row, as batched generation makes it.
    let pad = Tensor::new(&[[1u32; 7], [0, 0, 1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
    for with_prefix in [false, true] {
        if with_prefix {
            for layer in &layers {
                layer.attention.set_prefix(Some(prefix(2).2));
            }
        }
        let full = run_stack(&layers, &x, &pad, None);
        let mut cache = KvCache::new(2);
        let mut seen = 0;
        for n in [3, 1, 1, 2] {
            let step = x.narrow(1, seen, n).unwrap();
            let out = run_stack(
                &layers,
                &step,
                &pad.narrow(1, 0, seen + n).unwrap(),
                Some(&mut cache),
            );
            // Padding queries see no key at all; what they return is never used, so it is not compared.
            let real = pad
                .narrow(1, seen, n)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .unsqueeze(2)
                .unwrap();
            let want = full
                .narrow(1, seen, n)
                .unwrap()
                .broadcast_mul(&real)
                .unwrap();
            assert_close(&out.broadcast_mul(&real).unwrap(), &want, 1e-5);
            seen += n;
            assert_eq!(cache.seq_len(), seen);
        }
    }
}

#[test]
fn a_prefix_in_a_gradient_cache_equals_the_block_prefix() {
    let mode = Mode::seeded(0);
    let (l, _) = fresh(7);
    let layer = gpt_like_layer(&l, NormPlacement::Before, &mode);
    let (_, _, kv) = prefix(2);
    let x = input(&[1, 3, H], 0.0);
    let mut cache = KvCache::with_gradients(1);
    cache.set(0, kv.keys.clone(), kv.values.clone()).unwrap();
    let pad = Tensor::ones((1, 5), DType::U32, &Device::Cpu).unwrap();
    let through_cache = run_stack(std::slice::from_ref(&layer), &x, &pad, Some(&mut cache));
    layer.attention.set_prefix(Some(kv));
    let pad = Tensor::ones((1, 3), DType::U32, &Device::Cpu).unwrap();
    let through_prefix = run_stack(std::slice::from_ref(&layer), &x, &pad, None);
    assert_close(&through_cache, &through_prefix, 1e-6);
}

#[test]
fn conv1d_layout_computes_the_transposed_linear() {
    let (l, store) = fresh(8);
    let conv = Linear::load_as(&l.pp("c"), H, 5, 0.3, LinearKind::Conv1D).unwrap();
    assert_eq!(conv.weight().dims(), [H, 5], "kept as stored: (in, out)");
    let w = store.get("c.weight").unwrap().as_tensor().t().unwrap();
    let b = store.get("c.bias").unwrap().as_tensor().clone();
    let linear = Linear::from_weights(w.contiguous().unwrap(), Some(b), WeightLayout::OutIn);
    let x = input(&[2, 3, H], 0.0);
    assert_close(
        &conv.forward(&x).unwrap(),
        &linear.forward(&x).unwrap(),
        1e-6,
    );
}

#[derive(Debug)]
struct AddOne;

impl LinearAdapter for AddOne {
    fn forward(&self, _x: &Tensor, base_output: Tensor) -> candle_core::Result<Tensor> {
        base_output.affine(1.0, 1.0)
    }
}

#[test]
fn projections_are_registered_by_name_and_take_adapters() {
    let mode = Mode::seeded(0);
    let (l, store) = fresh(9);
    let attention = separate_attention(&l.pp("layer.0"), H, &mode);
    let names: Vec<String> = store.linears().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["layer.0.q", "layer.0.k", "layer.0.v", "layer.0.o"]);
    let blocks: Vec<String> = store.attentions().into_iter().map(|(n, _)| n).collect();
    assert_eq!(blocks, ["layer.0"]);
    store.attentions()[0].1.prefix.set(Some(prefix(1).2));
    assert!(
        attention.prefix().is_some(),
        "the block sees a prefix set through the store"
    );
    attention.set_prefix(None);
    let x = input(&[1, 2, H], 0.0);
    let before = attention
        .forward(&x, None, &AttentionMask::default(), None)
        .unwrap();
    let (_, output) = &store.linears()[3];
    output.slot.set(Some(Arc::new(AddOne)));
    let after = attention
        .forward(&x, None, &AttentionMask::default(), None)
        .unwrap();
    assert_close(&after, &before.affine(1.0, 1.0).unwrap(), 1e-6);
}

#[test]
fn positions_reach_queries_and_keys_but_not_values() {
    // DETR's attention: q from x + query position, k from context + key position, v from context alone.
    let mode = Mode::seeded(0);
    let (l, store) = fresh(5);
    let attention = separate_attention(&l, H, &mode);
    let x = Var::from_tensor(&input(&[2, 3, H], 0.0)).unwrap();
    let context = input(&[2, 4, H], 1.0);
    let query_pos = Var::from_tensor(&input(&[2, 3, H], 2.0)).unwrap();
    let key_pos = input(&[2, 4, H], 3.0);
    let positions = PositionInputs {
        query: Some(query_pos.as_tensor()),
        key: Some(&key_pos),
    };
    let got = attention
        .forward_with_positions(
            x.as_tensor(),
            Some(&context),
            &positions,
            &AttentionMask::default(),
            None,
        )
        .unwrap();
    let proj = |name: &str, x: &Tensor| {
        let w = store.get(&format!("{name}.weight")).unwrap();
        let b = store.get(&format!("{name}.bias")).unwrap();
        x.broadcast_matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
    };
    let q = heads(&proj(
        "q",
        &(x.as_tensor() + query_pos.as_tensor()).unwrap(),
    ));
    let k = heads(&proj("k", &(&context + &key_pos).unwrap()));
    let v = heads(&proj("v", &context));
    let want = proj(
        "o",
        &composed_attention(&q, &k.contiguous().unwrap(), &v, None),
    );
    assert_close(&got, &want, 1e-5);
    // Without positions it is the plain forward; the query position gets a gradient.
    let plain = attention
        .forward(
            x.as_tensor(),
            Some(&context),
            &AttentionMask::default(),
            None,
        )
        .unwrap();
    let none = attention
        .forward_with_positions(
            x.as_tensor(),
            Some(&context),
            &PositionInputs::default(),
            &AttentionMask::default(),
            None,
        )
        .unwrap();
    assert_close(&plain, &none, 0.0);
    assert_all_grads(&store, &[&x, &query_pos], &weighted_sum(&got));
}
