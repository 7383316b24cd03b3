//! Optimizers, schedules, clipping and accumulation against hand-computed
//! PyTorch-semantics values.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use mosaic_train::gradients::{GradAccumulator, Reduction, clip_grad_norm, grad_norm};
use mosaic_train::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig, default_no_decay};
use mosaic_train::schedule::{LrSchedule, ScheduleKind, Warmup};

fn var(v: &[f64]) -> Var {
    Var::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
}

fn vals(v: &Var) -> Vec<f64> {
    v.as_tensor().to_vec1::<f64>().unwrap()
}

fn grads(pairs: &[(&Var, &[f64])]) -> GradStore {
    let mut g = GradStore::default();
    for (v, x) in pairs {
        g.insert(v.as_tensor(), Tensor::new(*x, &Device::Cpu).unwrap());
    }
    g
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

/// torch.optim.AdamW (single-tensor path), written out on scalars.
struct RefAdamW {
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    step: i32,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl RefAdamW {
    fn new(n: usize, lr: f64, wd: f64) -> Self {
        Self {
            lr,
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            wd,
            step: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
    fn step(&mut self, p: &mut [f64], g: &[f64]) {
        self.step += 1;
        let bc1 = 1.0 - self.b1.powi(self.step);
        let bc2 = 1.0 - self.b2.powi(self.step);
        for i in 0..p.len() {
            p[i] *= 1.0 - self.lr * self.wd;
            self.m[i] = self.b1 * self.m[i] + (1.0 - self.b1) * g[i];
            self.v[i] = self.b2 * self.v[i] + (1.0 - self.b2) * g[i] * g[i];
            let denom = self.v[i].sqrt() / bc2.sqrt() + self.eps;
            p[i] -= self.lr / bc1 * self.m[i] / denom;
        }
    }
}

#[test]
fn adamw_first_step_hand_value() {
    let w = var(&[1.0]);
    let cfg = AdamWConfig {
        lr: 0.1,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt = AdamW::new(vec![("w".into(), w.clone())], cfg).unwrap();
    opt.step(&grads(&[(&w, &[0.5])])).unwrap();
    // p * (1 - lr wd) - lr * g / (|g| + eps)
    let expected = 1.0 * (1.0 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8);
    close(&vals(&w), &[expected], 1e-15);
    assert!((vals(&w)[0] - 0.899000002).abs() < 1e-12);
}

#[test]
fn adamw_matches_reference_over_steps_and_groups() {
    let w = var(&[1.0, -2.0, 0.5]);
    let b = var(&[0.1, -0.3]);
    let ln = var(&[1.0, 1.0]);
    let params = vec![
        ("encoder.layer.0.dense.weight".to_string(), w.clone()),
        ("encoder.layer.0.dense.bias".to_string(), b.clone()),
        ("encoder.layer.0.LayerNorm.weight".to_string(), ln.clone()),
    ];
    let cfg = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = AdamW::new(params, cfg).unwrap();
    let decays = opt.weight_decays();
    assert_eq!(decays[0], ("encoder.layer.0.dense.weight", 0.1));
    assert!(decays[1..].iter().all(|(_, d)| *d == 0.0));

    let mut rw = RefAdamW::new(3, 1e-2, 0.1);
    let mut rb = RefAdamW::new(2, 1e-2, 0.0);
    let mut rl = RefAdamW::new(2, 1e-2, 0.0);
    let (mut pw, mut pb, mut pl) = (vals(&w), vals(&b), vals(&ln));
    let gs: [(&[f64], &[f64], &[f64]); 3] = [
        (&[0.3, -0.1, 2.0], &[1.0, 0.5], &[-0.2, 0.2]),
        (&[-0.4, 0.2, 1.5], &[0.9, -0.5], &[0.1, 0.0]),
        (&[0.05, 0.0, -1.0], &[0.0, 0.25], &[0.3, -0.7]),
    ];
    for (i, (gw, gb, gl)) in gs.iter().enumerate() {
        if i == 2 {
            opt.set_lr(5e-3);
            for r in [&mut rw, &mut rb, &mut rl] {
                r.lr = 5e-3;
            }
        }
        opt.step(&grads(&[(&w, gw), (&b, gb), (&ln, gl)])).unwrap();
        rw.step(&mut pw, gw);
        rb.step(&mut pb, gb);
        rl.step(&mut pl, gl);
        close(&vals(&w), &pw, 1e-12);
        close(&vals(&b), &pb, 1e-12);
        close(&vals(&ln), &pl, 1e-12);
    }
    assert_eq!(opt.lr(), 5e-3);
}

#[test]
fn frozen_params_are_skipped_and_keep_their_step() {
    let a = var(&[1.0, 2.0]);
    let frozen = var(&[3.0]);
    let mut opt = AdamW::new(
        vec![("a".into(), a.clone()), ("frozen".into(), frozen.clone())],
        AdamWConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&grads(&[(&a, &[1.0, 1.0])])).unwrap();
    opt.step(&grads(&[(&a, &[1.0, 1.0])])).unwrap();
    assert_eq!(vals(&frozen), vec![3.0]);
    assert_eq!(opt.param_step("a"), Some(2));
    assert_eq!(opt.param_step("frozen"), Some(0));
    // Unfreezing later starts its bias correction at step 1, like PyTorch.
    opt.step(&grads(&[(&a, &[1.0, 1.0]), (&frozen, &[0.5])]))
        .unwrap();
    assert_eq!(opt.param_step("frozen"), Some(1));
    let expected = 3.0 * (1.0 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8);
    close(&vals(&frozen), &[expected], 1e-15);
}

#[test]
fn adamw_state_round_trip_resumes_exactly() {
    let make = || {
        let w = var(&[1.0, -2.0, 0.5]);
        let b = var(&[0.1]);
        let opt = AdamW::new(
            vec![("w".into(), w.clone()), ("b.bias".into(), b.clone())],
            AdamWConfig {
                lr: 0.05,
                ..Default::default()
            },
        )
        .unwrap();
        (w, b, opt)
    };
    let g1: &[f64] = &[0.3, -0.1, 2.0];
    let g2: &[f64] = &[-0.4, 0.2, 1.5];
    let (w, b, mut opt) = make();
    opt.step(&grads(&[(&w, g1), (&b, &[1.0])])).unwrap();
    opt.step(&grads(&[(&w, g2)])).unwrap();
    let state = opt.state().unwrap();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "w.exp_avg",
            "w.exp_avg_sq",
            "w.step",
            "b.bias.exp_avg",
            "b.bias.exp_avg_sq",
            "b.bias.step"
        ]
    );

    let (w2, b2, mut opt2) = make();
    w2.set(w.as_tensor()).unwrap();
    b2.set(b.as_tensor()).unwrap();
    opt2.load_state(&state).unwrap();
    assert_eq!(opt2.param_step("w"), Some(2));
    assert_eq!(opt2.param_step("b.bias"), Some(1));
    for _ in 0..2 {
        opt.step(&grads(&[(&w, g1), (&b, &[0.5])])).unwrap();
        opt2.step(&grads(&[(&w2, g1), (&b2, &[0.5])])).unwrap();
    }
    assert_eq!(vals(&w), vals(&w2));
    assert_eq!(vals(&b), vals(&b2));

    // Bad state is rejected with the offending name.
    let mut bad = state.clone();
    bad.push((
        "nope.exp_avg".into(),
        Tensor::new(&[0.0f64], &Device::Cpu).unwrap(),
    ));
    let err = opt2.load_state(&bad).unwrap_err().to_string();
    assert!(err.contains("unknown parameter `nope`"), "{err}");
    let missing: Vec<_> = state
        .iter()
        .filter(|(n, _)| n != "w.step")
        .cloned()
        .collect();
    let err = opt2.load_state(&missing).unwrap_err().to_string();
    assert!(err.contains("missing `w.step`"), "{err}");
}

#[test]
fn sgd_momentum_weight_decay_hand_values() {
    let p = var(&[1.0]);
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], cfg).unwrap();
    opt.step(&grads(&[(&p, &[0.5])])).unwrap();
    // d = 0.5 + 0.1 * 1 = 0.6; buf = 0.6; p = 1 - 0.06
    close(&vals(&p), &[0.94], 1e-15);
    opt.step(&grads(&[(&p, &[0.5])])).unwrap();
    // d = 0.5 + 0.094 = 0.594; buf = 0.9 * 0.6 + 0.594 = 1.134; p = 0.94 - 0.1134
    close(&vals(&p), &[0.8266], 1e-15);

    // State round trip.
    let state = opt.state().unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].0, "p.momentum_buffer");
    close(&state[0].1.to_vec1::<f64>().unwrap(), &[1.134], 1e-15);
    let q = var(&[0.8266]);
    let mut opt2 = Sgd::new(vec![("p".into(), q.clone())], cfg).unwrap();
    opt2.load_state(&state).unwrap();
    opt.step(&grads(&[(&p, &[0.2])])).unwrap();
    opt2.step(&grads(&[(&q, &[0.2])])).unwrap();
    assert_eq!(vals(&p), vals(&q));
}

#[test]
fn sgd_plain_and_nesterov() {
    let p = var(&[1.0, 2.0]);
    let mut opt = Sgd::new(
        vec![("p".into(), p.clone())],
        SgdConfig {
            lr: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&grads(&[(&p, &[1.0, -1.0])])).unwrap();
    close(&vals(&p), &[0.5, 2.5], 1e-15);
    assert!(opt.state().unwrap().is_empty());

    let p = var(&[1.0]);
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], cfg).unwrap();
    opt.step(&grads(&[(&p, &[1.0])])).unwrap();
    // buf = 1; d = 1 + 0.9 = 1.9
    close(&vals(&p), &[1.0 - 0.19], 1e-15);
    opt.step(&grads(&[(&p, &[1.0])])).unwrap();
    // buf = 1.9; d = 1 + 1.71 = 2.71
    close(&vals(&p), &[1.0 - 0.19 - 0.271], 1e-15);
}

#[test]
fn sgd_no_decay_for_bias() {
    let b = var(&[1.0]);
    let cfg = SgdConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![("classifier.bias".into(), b.clone())], cfg).unwrap();
    opt.step(&grads(&[(&b, &[0.0])])).unwrap();
    assert_eq!(vals(&b), vec![1.0]);
}

#[test]
fn works_with_backward_and_f32() {
    let w = Var::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu).unwrap();
    let x = Tensor::new(&[3.0f32, -1.0], &Device::Cpu).unwrap();
    let loss = (w.as_tensor() * &x).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let mut opt = Sgd::new(
        vec![("w".into(), w.clone())],
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&g).unwrap();
    let v = w.as_tensor().to_vec1::<f32>().unwrap();
    assert!(
        (v[0] - 0.7).abs() < 1e-6 && (v[1] - 2.1).abs() < 1e-6,
        "{v:?}"
    );
}

#[test]
fn bf16_params_keep_f32_state() {
    let w = Var::from_vec(vec![1.0f32, -1.0], 2, &Device::Cpu)
        .unwrap()
        .as_tensor()
        .to_dtype(DType::BF16)
        .unwrap();
    let w = Var::from_tensor(&w).unwrap();
    let mut opt = AdamW::new(
        vec![("w".into(), w.clone())],
        AdamWConfig {
            lr: 0.25,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut g = GradStore::default();
    g.insert(
        w.as_tensor(),
        Tensor::new(&[1.0f32, -1.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap(),
    );
    opt.step(&g).unwrap();
    assert_eq!(w.dtype(), DType::BF16);
    let v = w
        .as_tensor()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(v, vec![0.75, -0.75]);
    assert!(
        opt.state()
            .unwrap()
            .iter()
            .filter(|(n, _)| !n.ends_with(".step"))
            .all(|(_, t)| t.dtype() == DType::F32)
    );
}

#[test]
fn default_no_decay_names() {
    for n in [
        "bert.encoder.layer.0.attention.output.dense.bias",
        "bert.embeddings.LayerNorm.weight",
        "distilbert.transformer.layer.0.sa_layer_norm.weight",
        "encoder.block.0.layer.0.layer_norm.weight",
        "model.norm.weight",
        "layers.0.attn_norm.weight",
        "h.0.ln_1.weight",
        "transformer.ln_f.weight",
        "model.layers.0.input_RMSNorm.weight",
    ] {
        assert!(default_no_decay(n), "{n} should not decay");
    }
    for n in [
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.embeddings.word_embeddings.weight",
        "classifier.weight",
        "normalizer.weight",
        "kiln_x.weight",
    ] {
        assert!(!default_no_decay(n), "{n} should decay");
    }
}

// --- schedules -------------------------------------------------------------

#[test]
fn linear_schedule_matches_hf() {
    let s = LrSchedule::new(ScheduleKind::Linear, 1.0, Warmup::Steps(10), 110);
    // HF: step / warmup, then (total - step) / (total - warmup).
    let cases = [
        (0, 0.0),
        (1, 0.1),
        (5, 0.5),
        (10, 1.0),
        (60, 0.5),
        (109, 0.01),
        (110, 0.0),
        (200, 0.0),
    ];
    for (step, m) in cases {
        assert!(
            (s.multiplier(step) - m).abs() < 1e-12,
            "step {step}: {}",
            s.multiplier(step)
        );
    }
    assert!((s.lr_at(5) - 0.5).abs() < 1e-12);
    let s = LrSchedule::new(ScheduleKind::Linear, 2e-5, Warmup::Steps(0), 4);
    assert_eq!(s.lr_at(0), 2e-5);
    assert!((s.lr_at(1) - 1.5e-5).abs() < 1e-18);
}

#[test]
fn cosine_schedule_matches_hf() {
    let s = LrSchedule::new(ScheduleKind::Cosine, 1.0, Warmup::Steps(4), 104);
    assert_eq!(s.multiplier(2), 0.5);
    assert_eq!(s.multiplier(4), 1.0);
    let progress = 0.25;
    let expect = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    assert!((s.multiplier(29) - expect).abs() < 1e-12);
    assert!((s.multiplier(54) - 0.5).abs() < 1e-12);
    assert!(s.multiplier(104).abs() < 1e-12);
}

#[test]
fn constant_schedule_and_warmup_ratio() {
    let s = LrSchedule::new(ScheduleKind::Constant, 3.0, Warmup::Ratio(0.1), 95);
    // ceil(9.5) = 10 warmup steps
    assert_eq!(s.warmup_steps, 10);
    assert!((s.lr_at(3) - 0.9).abs() < 1e-12);
    assert_eq!(s.lr_at(10), 3.0);
    assert_eq!(s.lr_at(94), 3.0);
    assert_eq!(Warmup::Ratio(0.0).steps(100), 0);
    assert_eq!(Warmup::Steps(7).steps(100), 7);
}

// --- clipping and accumulation ----------------------------------------------

#[test]
fn clip_grad_norm_like_torch() {
    let a = var(&[0.0, 0.0]);
    let b = var(&[0.0]);
    let c = var(&[0.0]);
    let named = vec![
        ("a".to_string(), a.clone()),
        ("b".to_string(), b.clone()),
        ("c".to_string(), c.clone()),
    ];
    let mut g = grads(&[(&a, &[3.0, 4.0]), (&b, &[12.0])]);
    let r = clip_grad_norm(&named, &mut g, 1.0).unwrap();
    assert!((r.total_norm - 13.0).abs() < 1e-9);
    assert!(r.clipped);
    assert_eq!(r.non_finite, None);
    let coef = 1.0 / (13.0 + 1e-6);
    close(
        &g.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        &[3.0 * coef, 4.0 * coef],
        1e-7,
    );
    close(
        &g.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        &[12.0 * coef],
        1e-7,
    );
    assert!(g.get(c.as_tensor()).is_none());

    // Below the threshold: untouched.
    let mut g = grads(&[(&a, &[0.3, 0.4])]);
    let r = clip_grad_norm(&named, &mut g, 1.0).unwrap();
    assert!(!r.clipped);
    assert!((r.total_norm - 0.5).abs() < 1e-7);
    assert_eq!(
        g.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        vec![0.3, 0.4]
    );
}

#[test]
fn clip_reports_first_non_finite() {
    let a = var(&[0.0]);
    let b = var(&[0.0, 0.0]);
    let c = var(&[0.0]);
    let named = vec![
        ("a".to_string(), a.clone()),
        ("b".to_string(), b.clone()),
        ("c".to_string(), c.clone()),
    ];
    let mut g = grads(&[
        (&a, &[100.0]),
        (&b, &[1.0, f64::NAN]),
        (&c, &[f64::INFINITY]),
    ]);
    let r = clip_grad_norm(&named, &mut g, 1.0).unwrap();
    assert_eq!(r.non_finite.as_deref(), Some("b"));
    assert!(!r.clipped);
    assert!(!r.total_norm.is_finite());
    assert_eq!(
        g.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        vec![100.0]
    );
    let (n, bad) = grad_norm(&named[..1], &g).unwrap();
    assert!((n - 100.0).abs() < 1e-9);
    assert_eq!(bad, None);
}

#[test]
fn accumulate_sum_and_mean() {
    let a = var(&[0.0, 0.0]);
    let b = var(&[0.0]);
    let other = var(&[0.0]);
    let mut acc = GradAccumulator::new([a.clone(), b.clone()]);
    assert!(acc.is_empty());
    acc.add(&grads(&[(&a, &[1.0, 2.0]), (&other, &[9.0])]))
        .unwrap();
    acc.add(&grads(&[(&a, &[3.0, 4.0]), (&b, &[5.0])])).unwrap();
    assert_eq!(acc.micro_batches(), 2);
    let g = acc.take(Reduction::Mean(2.0)).unwrap();
    assert_eq!(
        g.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        vec![2.0, 3.0]
    );
    assert_eq!(
        g.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        vec![2.5]
    );
    assert!(g.get(other.as_tensor()).is_none());
    assert!(acc.is_empty());

    acc.add(&grads(&[(&b, &[1.0])])).unwrap();
    acc.add(&grads(&[(&b, &[2.0])])).unwrap();
    let g = acc.take(Reduction::Sum).unwrap();
    assert_eq!(
        g.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
        vec![3.0]
    );
    assert!(g.get(a.as_tensor()).is_none());
}
