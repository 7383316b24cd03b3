//! Attention against the composed reference, mask semantics and dropout.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use common::{Rng, assert_close, assert_finite_nonzero, compare_with_reference};
use mosaic_kernels::{AttentionOptions, attention, dropout_mask, reference};
use proptest::prelude::*;

const TOL: f32 = 1e-4;

/// A `(b, nk)` key padding mask of the given dtype with key 0 always kept
/// (so, with bottom-right causal masking and `nq <= nk`, every query row keeps
/// at least one key).
fn padding_mask(rng: &mut Rng, b: usize, nk: usize, dtype: DType) -> Tensor {
    let data: Vec<f32> = (0..b * nk)
        .map(|i| {
            if i % nk == 0 || rng.bool(0.6) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(data, (b, nk), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn qkv(rng: &mut Rng, b: usize, h: usize, nq: usize, nk: usize, d: usize, dv: usize) -> [Var; 3] {
    [
        rng.var((b, h, nq, d), -2.0, 2.0),
        rng.var((b, h, nk, d), -2.0, 2.0),
        rng.var((b, h, nk, dv), -2.0, 2.0),
    ]
}

fn compare(what: &str, vars: &[Var], opts: &AttentionOptions, rng: &mut Rng) -> Vec<Tensor> {
    compare_with_reference(
        what,
        vars,
        |t| attention(&t[0], &t[1], &t[2], opts),
        |t| reference::attention(&t[0], &t[1], &t[2], opts),
        rng,
        TOL,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    #[test]
    fn attention_matches_reference(
        b in 1usize..=2, h in 1usize..=3, nq in 1usize..=9, nk in 1usize..=9,
        d in 1usize..=16, same_dv in any::<bool>(), dv in 1usize..=16,
        causal in any::<bool>(), use_mask in any::<bool>(), mask_dtype in 0usize..4,
        custom_scale in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let nq = if causal { nq.min(nk) } else { nq };
        let dv = if same_dv { d } else { dv };
        let dtype = [DType::F32, DType::U8, DType::I64, DType::U32][mask_dtype];
        let opts = AttentionOptions {
            scale: custom_scale.then(|| rng.uniform(0.05, 1.0) as f64),
            causal,
            key_padding_mask: use_mask.then(|| padding_mask(&mut rng, b, nk, dtype)),
            dropout: 0.0,
            seed: 0,
            segment_ids: None,
        };
        let vars = qkv(&mut rng, b, h, nq, nk, d, dv);
        compare("attention", &vars, &opts, &mut rng);
    }

    #[test]
    fn attention_with_dropout_matches_reference(
        b in 1usize..=2, h in 1usize..=3, nq in 1usize..=9, nk in 1usize..=9,
        d in 1usize..=16, causal in any::<bool>(), p in 0.05f32..0.6, seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let nq = if causal { nq.min(nk) } else { nq };
        let opts = AttentionOptions {
            causal,
            key_padding_mask: Some(padding_mask(&mut rng, b, nk, DType::F32)),
            dropout: p,
            seed,
            ..Default::default()
        };
        let vars = qkv(&mut rng, b, h, nq, nk, d, d);
        compare("attention+dropout", &vars, &opts, &mut rng);
    }
}

/// A `(b, nk)` key padding mask where any key (even all of a batch row) may be
/// padding.
fn sparse_padding_mask(rng: &mut Rng, b: usize, nk: usize, keep: f32) -> Tensor {
    let data: Vec<f32> = (0..b * nk)
        .map(|_| if rng.bool(keep) { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(data, (b, nk), &Device::Cpu).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases().div_ceil(3)))]

    /// Shapes spanning several query and key blocks of the fused kernel (48 ×
    /// 256), partial tiles, `Nq > Nk` with causal masking (rows that see no
    /// key), sparse padding (possibly a whole batch row) and dropout.
    #[test]
    fn attention_matches_reference_across_blocks(
        b in 1usize..=2, h in 1usize..=2, nq in 1usize..=110, nk in 1usize..=300,
        d in prop::sample::select(vec![1usize, 7, 16, 64]),
        dv in prop::sample::select(vec![1usize, 9, 64]),
        causal in any::<bool>(), mask_keep in prop::option::of(0.0f32..1.0),
        dropout in prop::option::of(0.05f32..0.5), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let opts = AttentionOptions {
            scale: None,
            causal,
            key_padding_mask: mask_keep.map(|keep| sparse_padding_mask(&mut rng, b, nk, keep)),
            dropout: dropout.unwrap_or(0.0),
            seed,
            segment_ids: None,
        };
        let vars = qkv(&mut rng, b, h, nq, nk, d, dv);
        compare("attention (blocks)", &vars, &opts, &mut rng);
    }
}

/// `(b, n)` segment ids of the given integer dtype: runs of `1..=max_run`
/// tokens, numbered in order (`distinct`) or with small random ids that may
/// repeat, even in neighbouring runs (which then merge into one segment).
fn segment_ids(
    rng: &mut Rng,
    b: usize,
    n: usize,
    max_run: usize,
    distinct: bool,
    dtype: DType,
) -> Tensor {
    let mut ids = Vec::with_capacity(b * n);
    for _ in 0..b {
        let (mut left, mut id, mut run) = (0usize, 0f32, 0f32);
        for _ in 0..n {
            if left == 0 {
                left = 1 + (rng.uniform(0.0, max_run as f32) as usize).min(max_run - 1);
                id = if distinct {
                    run
                } else {
                    rng.uniform(0.0, 4.0).floor()
                };
                run += 1.0;
            }
            left -= 1;
            ids.push(id);
        }
    }
    Tensor::from_vec(ids, (b, n), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    /// Packed segments (self-attention) combined with causal masking, key
    /// padding (possibly hiding every key of a row) and dropout: forward and
    /// every gradient against the f64 composed reference, on lengths that span
    /// several query (48) and key (128) blocks.
    #[test]
    fn attention_with_segments_matches_reference(
        b in 1usize..=2, h in 1usize..=2, n in 1usize..=150,
        d in prop::sample::select(vec![1usize, 8, 16]), dv in prop::sample::select(vec![1usize, 8]),
        causal in any::<bool>(), max_run in 1usize..=80, distinct in any::<bool>(),
        i64_ids in any::<bool>(), mask_keep in prop::option::of(0.3f32..1.0),
        dropout in prop::option::of(0.05f32..0.5), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let dtype = if i64_ids { DType::I64 } else { DType::U32 };
        let opts = AttentionOptions {
            causal,
            key_padding_mask: mask_keep.map(|keep| sparse_padding_mask(&mut rng, b, n, keep)),
            dropout: dropout.unwrap_or(0.0),
            seed,
            segment_ids: Some(segment_ids(&mut rng, b, n, max_run, distinct, dtype)),
            ..Default::default()
        };
        let vars = qkv(&mut rng, b, h, n, n, d, dv);
        compare("attention (segments)", &vars, &opts, &mut rng);
    }
}

/// Max |fast − f64 reference| of the output and of each gradient (for the
/// report printed by [`segments_max_errors_against_reference`]).
fn max_errors(vars: &[Var], opts: &AttentionOptions, rng: &mut Rng) -> [f64; 4] {
    let y = attention(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
        opts,
    )
    .unwrap();
    let vars64: Vec<Var> = vars
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap())
        .collect();
    let y64 = reference::attention(
        vars64[0].as_tensor(),
        vars64[1].as_tensor(),
        vars64[2].as_tensor(),
        opts,
    )
    .unwrap();
    let w = rng.tensor(y.shape(), -1.0, 1.0);
    let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let g64 = (&y64 * &w.to_dtype(DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let err = |a: &Tensor, b: &Tensor| {
        (a.to_dtype(DType::F64).unwrap() - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let mut out = [err(&y, &y64), 0.0, 0.0, 0.0];
    for (i, (v, v64)) in vars.iter().zip(&vars64).enumerate() {
        out[i + 1] = err(g.get(v).unwrap(), g64.get(v64).unwrap());
    }
    out
}

/// A fixed packed batch of 300 tokens (several key blocks) in every mask
/// combination; prints the max errors against the f64 reference.
#[test]
fn segments_max_errors_against_reference() {
    let mut rng = Rng::new(21);
    let (b, h, n, d) = (2, 2, 300, 32);
    let vars = qkv(&mut rng, b, h, n, n, d, d);
    let segments = segment_ids(&mut rng, b, n, 90, true, DType::U32);
    let padding = sparse_padding_mask(&mut rng, b, n, 0.9);
    let mut worst = [0f64; 4];
    for (causal, pad, dropout) in [
        (true, false, 0.0),
        (true, true, 0.0),
        (false, true, 0.0),
        (true, true, 0.2),
    ] {
        let opts = AttentionOptions {
            causal,
            key_padding_mask: pad.then(|| padding.clone()),
            dropout,
            seed: 3,
            segment_ids: Some(segments.clone()),
            ..Default::default()
        };
        let e = max_errors(&vars, &opts, &mut rng);
        println!(
            "segments (causal={causal}, padding={pad}, dropout={dropout}): max |err| out {:.2e}, dq {:.2e}, dk {:.2e}, dv {:.2e}",
            e[0], e[1], e[2], e[3]
        );
        for (w, x) in worst.iter_mut().zip(e) {
            *w = w.max(x);
        }
    }
    assert!(worst.iter().all(|&e| e < 1e-4), "max errors {worst:?}");
}

/// Each sample of a packed row gets exactly what it gets when run alone.
#[test]
fn packed_segments_equal_separate_samples() {
    let mut rng = Rng::new(22);
    let lengths = [3usize, 60, 1, 140, 26];
    let n: usize = lengths.iter().sum();
    let q = rng.tensor((1, 2, n, 8), -1.0, 1.0);
    let k = rng.tensor((1, 2, n, 8), -1.0, 1.0);
    let v = rng.tensor((1, 2, n, 8), -1.0, 1.0);
    let ids: Vec<i64> = lengths
        .iter()
        .enumerate()
        .flat_map(|(s, &len)| std::iter::repeat_n(s as i64 * 7 + 100, len))
        .collect();
    for causal in [true, false] {
        let opts = AttentionOptions {
            causal,
            segment_ids: Some(Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu).unwrap()),
            ..Default::default()
        };
        let packed = attention(&q, &k, &v, &opts).unwrap();
        let alone_opts = AttentionOptions {
            causal,
            ..Default::default()
        };
        let mut start = 0;
        for &len in &lengths {
            let part = |t: &Tensor| t.narrow(2, start, len).unwrap();
            let alone = attention(&part(&q), &part(&k), &part(&v), &alone_opts).unwrap();
            assert_close(
                &format!("sample at {start} (causal={causal})"),
                &part(&packed),
                &alone,
                1e-5,
            );
            start += len;
        }
    }
}

#[test]
fn attention_gradients_finite_and_nonzero() {
    let mut rng = Rng::new(1);
    let vars = qkv(&mut rng, 2, 3, 5, 7, 8, 8);
    let opts = AttentionOptions {
        key_padding_mask: Some(padding_mask(&mut rng, 2, 7, DType::U8)),
        ..Default::default()
    };
    let grads = compare("attention", &vars, &opts, &mut rng);
    for (g, name) in grads.iter().zip(["dq", "dk", "dv"]) {
        assert_finite_nonzero(name, g);
    }
    let opts = AttentionOptions {
        causal: true,
        dropout: 0.2,
        seed: 9,
        ..Default::default()
    };
    let vars = qkv(&mut rng, 2, 3, 7, 7, 8, 8);
    let grads = compare("causal+dropout", &vars, &opts, &mut rng);
    for (g, name) in grads.iter().zip(["dq", "dk", "dv"]) {
        assert_finite_nonzero(name, g);
    }
}

#[test]
fn causal_mask_semantics() {
    let mut rng = Rng::new(2);
    let dev = Device::Cpu;
    let opts = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    // Nq == Nk: the first query only sees the first key, so it returns v[0].
    let q = rng.tensor((1, 1, 4, 3), -1.0, 1.0);
    let k = rng.tensor((1, 1, 4, 3), -1.0, 1.0);
    let v = rng.tensor((1, 1, 4, 2), -1.0, 1.0);
    let y = attention(&q, &k, &v, &opts).unwrap();
    assert_close(
        "row 0",
        &y.i((0, 0, 0)).unwrap(),
        &v.i((0, 0, 0)).unwrap(),
        1e-6,
    );
    // Changing the last key/value changes only the last query's output.
    let k2 = k
        .slice_assign(
            &[0..1, 0..1, 3..4, 0..3],
            &Tensor::ones((1, 1, 1, 3), DType::F32, &dev).unwrap(),
        )
        .unwrap();
    let v2 = v
        .slice_assign(
            &[0..1, 0..1, 3..4, 0..2],
            &Tensor::ones((1, 1, 1, 2), DType::F32, &dev).unwrap(),
        )
        .unwrap();
    let y2 = attention(&q, &k2, &v2, &opts).unwrap();
    assert_close(
        "rows 0..3",
        &y2.narrow(2, 0, 3).unwrap(),
        &y.narrow(2, 0, 3).unwrap(),
        0.0,
    );
    // Nq < Nk is bottom-right aligned: the single query sees every key.
    let q1 = q.narrow(2, 3, 1).unwrap();
    let y_causal = attention(&q1, &k, &v, &opts).unwrap();
    let y_full = attention(&q1, &k, &v, &AttentionOptions::default()).unwrap();
    assert_close("bottom-right", &y_causal, &y_full, 0.0);
}

#[test]
fn key_padding_semantics_and_fully_masked_rows() {
    let mut rng = Rng::new(3);
    let dev = Device::Cpu;
    let q = rng.var((2, 2, 3, 4), -1.0, 1.0);
    let k = rng.var((2, 2, 5, 4), -1.0, 1.0);
    let v = rng.var((2, 2, 5, 4), -1.0, 1.0);
    // Batch 0 keeps keys 0 and 2; batch 1 is entirely padding.
    let mask = Tensor::new(&[[1u8, 0, 1, 0, 0], [0, 0, 0, 0, 0]], &dev).unwrap();
    let opts = AttentionOptions {
        key_padding_mask: Some(mask),
        ..Default::default()
    };
    let y = attention(&q, &k, &v, &opts).unwrap();
    // Padding keys do not matter: attention over keys {0, 2} only.
    let idx = Tensor::new(&[0u32, 2], &dev).unwrap();
    let y_sub = attention(
        &q.i(0..1).unwrap(),
        &k.i(0..1).unwrap().index_select(&idx, 2).unwrap(),
        &v.i(0..1).unwrap().index_select(&idx, 2).unwrap(),
        &AttentionOptions::default(),
    )
    .unwrap();
    assert_close("padded batch", &y.i(0..1).unwrap(), &y_sub, 1e-6);
    // A fully masked row is finite: the uniform average of v.
    let mean_v = v
        .i(1)
        .unwrap()
        .mean_keepdim(1)
        .unwrap()
        .broadcast_as((2, 3, 4))
        .unwrap();
    assert_close("fully masked", &y.i(1).unwrap(), &mean_v, 1e-6);
    // ... and it gives no gradient to q or k, while the reference agrees everywhere.
    let grads = compare("fully masked", &[q, k, v], &opts, &mut rng);
    for g in &grads {
        assert_finite_nonzero("grad", g);
    }
    for g in &grads[..2] {
        assert_eq!(common::max_abs(&g.i(1).unwrap()), 0.0);
    }
}

#[test]
fn rejects_bad_arguments() {
    let dev = Device::Cpu;
    let t = Tensor::zeros((1, 1, 2, 4), DType::F32, &dev).unwrap();
    let msg = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
    let f64t = t.to_dtype(DType::F64).unwrap();
    assert!(msg(attention(&f64t, &t, &t, &Default::default())).contains("must be f32"));
    let bad_k = Tensor::zeros((1, 1, 2, 3), DType::F32, &dev).unwrap();
    assert!(msg(attention(&t, &bad_k, &t, &Default::default())).contains("incompatible"));
    let opts = AttentionOptions {
        key_padding_mask: Some(Tensor::ones((1, 3), DType::U8, &dev).unwrap()),
        ..Default::default()
    };
    assert!(msg(attention(&t, &t, &t, &opts)).contains("key_padding_mask"));
    let opts = AttentionOptions {
        dropout: 1.0,
        ..Default::default()
    };
    assert!(msg(attention(&t, &t, &t, &opts)).contains("dropout"));
    // Segment ids: self-attention only, (B, N), integer.
    let seg = |t: Tensor| AttentionOptions {
        segment_ids: Some(t),
        ..Default::default()
    };
    let q1 = Tensor::zeros((1, 1, 1, 4), DType::F32, &dev).unwrap();
    let ok_ids = Tensor::zeros((1, 2), DType::U32, &dev).unwrap();
    let e = msg(attention(&q1, &t, &t, &seg(ok_ids.clone())));
    assert!(e.contains("segment_ids") && e.contains("Nq == Nk"), "{e}");
    let e = msg(attention(
        &t,
        &t,
        &t,
        &seg(Tensor::zeros((1, 3), DType::U32, &dev).unwrap()),
    ));
    assert!(e.contains("segment_ids must have shape (1, 2)"), "{e}");
    let e = msg(attention(
        &t,
        &t,
        &t,
        &seg(Tensor::zeros((1, 2), DType::F32, &dev).unwrap()),
    ));
    assert!(e.contains("segment_ids must be an integer tensor"), "{e}");
    assert!(attention(&t, &t, &t, &seg(ok_ids)).is_ok());
}

#[test]
fn dropout_is_seeded_and_zero_dropout_is_identity() {
    let mut rng = Rng::new(4);
    let q = rng.tensor((2, 2, 6, 8), -1.0, 1.0);
    let k = rng.tensor((2, 2, 6, 8), -1.0, 1.0);
    let v = rng.tensor((2, 2, 6, 8), -1.0, 1.0);
    let with = |dropout: f32, seed: u64| {
        let opts = AttentionOptions {
            causal: true,
            dropout,
            seed,
            ..Default::default()
        };
        attention(&q, &k, &v, &opts)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(with(0.3, 42), with(0.3, 42), "same seed, same output");
    assert_ne!(
        with(0.3, 42),
        with(0.3, 43),
        "different seed, different output"
    );
    assert_ne!(with(0.3, 42), with(0.0, 42), "dropout changes the output");
    assert_eq!(with(0.0, 42), with(0.0, 7), "p = 0 ignores the seed");
    let plain = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let y = attention(&q, &k, &v, &plain)
        .unwrap()
        .flatten_all()
        .unwrap();
    assert_eq!(
        with(0.0, 42),
        y.to_vec1::<f32>().unwrap(),
        "p = 0 is no dropout"
    );
}

#[test]
fn dropout_mask_values_and_rate() {
    let p = 0.25f32;
    let m = dropout_mask((4, 8, 64, 64), p, 123).unwrap();
    let v = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let keep = 1.0 / (1.0 - p);
    assert!(v.iter().all(|&x| x == 0.0 || x == keep));
    let kept = v.iter().filter(|&&x| x != 0.0).count() as f64 / v.len() as f64;
    assert!((kept - 0.75).abs() < 0.01, "kept fraction {kept}");
    let again = dropout_mask((4, 8, 64, 64), p, 123).unwrap();
    assert_close("same mask", &again, &m, 0.0);
    // The mask depends only on the flat element index, not on the shape.
    let flat = dropout_mask(4 * 8 * 64 * 64, p, 123).unwrap();
    assert_close("shape independent", &flat, &m.flatten_all().unwrap(), 0.0);
}

/// Gradients with dropout equal a hand-written composition that applies the
/// public `dropout_mask` explicitly.
#[test]
fn dropout_gradients_match_explicit_mask() {
    let mut rng = Rng::new(5);
    let (b, h, n, d) = (2, 2, 5, 6);
    let vars = qkv(&mut rng, b, h, n, n, d, d);
    let opts = AttentionOptions {
        dropout: 0.4,
        seed: 2024,
        ..Default::default()
    };
    let mask = dropout_mask((b, h, n, n), 0.4, 2024).unwrap();
    let scale = 1.0 / (d as f64).sqrt();
    compare_with_reference(
        "dropout vs explicit mask",
        &vars,
        |t| attention(&t[0], &t[1], &t[2], &opts),
        |t| {
            let s = (t[0].matmul(&t[1].t()?)? * scale)?;
            let p = reference::softmax_last_dim(&s)?;
            (p * mask.to_dtype(t[0].dtype())?)?.matmul(&t[2])
        },
        &mut rng,
        TOL,
    );
}

/// Degenerate shapes: no queries, or values of width 0, give empty outputs and
/// zero gradients instead of a panic.
#[test]
fn empty_queries_and_zero_width_values() {
    let mut rng = Rng::new(6);
    for (nq, dv) in [(0usize, 4usize), (3, 0)] {
        let [q, k, v] = qkv(&mut rng, 2, 2, nq, 5, 4, dv);
        let y = attention(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(y.dims(), &[2, 2, nq, dv]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        for var in [&q, &k, &v] {
            let g = grads.get(var).unwrap();
            assert_eq!(g.dims(), var.dims());
            if g.elem_count() > 0 {
                assert_eq!(common::max_abs(g), 0.0);
            }
        }
    }
}
