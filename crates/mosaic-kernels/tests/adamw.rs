//! The fused in-place AdamW step against the composed one: equal element for element over several steps, with
//! and without weight decay, on one thread and on the parallel path; and its bad-input errors.

mod common;

use candle_core::{Device, Tensor, Var};
use common::Rng;
use mosaic_kernels::{AdamWStep, adamw_step, reference};

fn run_both(n: usize, weight_decay: f64, steps: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let start = rng.tensor(n, -1.0, 1.0);
    let fused = Var::from_tensor(&start).unwrap();
    let mut composed = start.clone();
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut m_ref = Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut v_ref = m_ref.clone();
    for step in 1..=steps {
        let g = rng.tensor(n, -3.0, 3.0);
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step,
        };
        adamw_step(fused.as_tensor(), &g, &mut m, &mut v, h).unwrap();
        (composed, m_ref, v_ref) =
            reference::adamw_step(&composed, &g, &m_ref, &v_ref, &h).unwrap();
    }
    let eq = |what: &str, got: &[f32], want: &Tensor| {
        let want = want.to_vec1::<f32>().unwrap();
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "{what}: {diff} of {n} elements differ (n={n}, wd={weight_decay})"
        );
    };
    eq(
        "param",
        &fused.as_tensor().to_vec1::<f32>().unwrap(),
        &composed,
    );
    eq("exp_avg", &m, &m_ref);
    eq("exp_avg_sq", &v, &v_ref);
}

#[test]
fn fused_adamw_equals_composed_exactly() {
    for (n, wd) in [
        (1, 0.0),
        (37, 0.01),
        (1000, 0.1),
        (100_003, 0.01),
        (70_000, 0.0),
    ] {
        run_both(n, wd, 5, n as u64);
    }
}

#[test]
fn fused_adamw_rejects_mismatched_inputs() {
    let p = Var::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
    let h = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let g3 = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = adamw_step(p.as_tensor(), &g3, &mut [0.0; 4], &mut [0.0; 4], h).unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
    let g4 = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = adamw_step(p.as_tensor(), &g4, &mut [0.0; 3], &mut [0.0; 4], h).unwrap_err();
    assert!(err.to_string().contains("exp_avg 3"), "{err}");
    let p64 = Var::zeros(4, candle_core::DType::F64, &Device::Cpu).unwrap();
    let g64 = Tensor::zeros(4, candle_core::DType::F64, &Device::Cpu).unwrap();
    let err = adamw_step(p64.as_tensor(), &g64, &mut [0.0; 4], &mut [0.0; 4], h).unwrap_err();
    assert!(err.to_string().contains("f32"), "{err}");
}
