//! Layer norm, softmax and GELU against their composed references.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{Rng, assert_close, assert_finite_nonzero, compare_with_reference};
use mosaic_kernels::{gelu_erf, layer_norm, reference, softmax_last_dim};
use proptest::prelude::*;

const TOL: f32 = 1e-4;

fn shape(batch: usize, rows: usize, d: usize, rank3: bool) -> Vec<usize> {
    if rank3 {
        vec![batch, rows, d]
    } else {
        vec![batch * rows, d]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    #[test]
    fn layer_norm_matches_reference(
        batch in 1usize..=3, rows in 1usize..=8, d in 1usize..=40,
        rank3 in any::<bool>(), eps_idx in 0usize..3, seed in any::<u64>(),
    ) {
        let eps = [1e-5, 1e-6, 1e-3][eps_idx];
        let mut rng = Rng::new(seed);
        let offset = rng.uniform(-3.0, 3.0);
        let x = Var::from_tensor(
            &(rng.tensor(shape(batch, rows, d, rank3), -2.0, 2.0) + offset as f64).unwrap(),
        ).unwrap();
        let w = rng.var(d, -1.5, 1.5);
        let b = rng.var(d, -1.0, 1.0);
        compare_with_reference(
            "layer_norm",
            &[x, w, b],
            |t| layer_norm(&t[0], &t[1], &t[2], eps),
            |t| reference::layer_norm(&t[0], &t[1], &t[2], eps),
            &mut rng,
            TOL,
        );
    }

    #[test]
    fn softmax_matches_reference(
        batch in 1usize..=3, rows in 1usize..=8, d in 1usize..=40,
        rank3 in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let x = rng.var(shape(batch, rows, d, rank3), -8.0, 8.0);
        compare_with_reference(
            "softmax",
            &[x],
            |t| softmax_last_dim(&t[0]),
            |t| reference::softmax_last_dim(&t[0]),
            &mut rng,
            TOL,
        );
    }

    #[test]
    fn gelu_matches_reference(
        batch in 1usize..=3, rows in 1usize..=8, d in 1usize..=40,
        rank3 in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let x = rng.var(shape(batch, rows, d, rank3), -5.0, 5.0);
        compare_with_reference(
            "gelu",
            &[x],
            |t| gelu_erf(&t[0]),
            |t| reference::gelu_erf(&t[0]),
            &mut rng,
            TOL,
        );
    }
}

#[test]
fn gradients_are_finite_and_nonzero() {
    let mut rng = Rng::new(7);
    let x = rng.var((2, 3, 10), -2.0, 2.0);
    let w = rng.var(10, 0.5, 1.5);
    let b = rng.var(10, -1.0, 1.0);
    let grads = compare_with_reference(
        "layer_norm",
        &[x, w, b],
        |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
        |t| reference::layer_norm(&t[0], &t[1], &t[2], 1e-5),
        &mut rng,
        TOL,
    );
    for (g, name) in grads.iter().zip(["dx", "dweight", "dbias"]) {
        assert_finite_nonzero(&format!("layer_norm {name}"), g);
    }
    let x = rng.var((4, 17), -3.0, 3.0);
    let g = compare_with_reference(
        "softmax",
        std::slice::from_ref(&x),
        |t| softmax_last_dim(&t[0]),
        |t| reference::softmax_last_dim(&t[0]),
        &mut rng,
        TOL,
    );
    assert_finite_nonzero("softmax dx", &g[0]);
    let g = compare_with_reference(
        "gelu",
        &[x],
        |t| gelu_erf(&t[0]),
        |t| reference::gelu_erf(&t[0]),
        &mut rng,
        TOL,
    );
    assert_finite_nonzero("gelu dx", &g[0]);
}

/// Large enough to take the rayon paths; also checks run-to-run determinism.
#[test]
fn large_inputs_parallel_and_deterministic() {
    let mut rng = Rng::new(11);
    let x = rng.var((64, 768), -2.0, 2.0);
    let w = rng.var(768, 0.5, 1.5);
    let b = rng.var(768, -1.0, 1.0);
    let vars = [x, w, b];
    let run = |rng: &mut Rng| {
        compare_with_reference(
            "layer_norm large",
            &vars,
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
            |t| reference::layer_norm(&t[0], &t[1], &t[2], 1e-5),
            rng,
            TOL,
        )
    };
    let g1 = run(&mut Rng::new(3));
    let g2 = run(&mut Rng::new(3));
    for (a, b) in g1.iter().zip(&g2) {
        let diff = (a - b).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
    let x = rng.var((48, 1000), -6.0, 6.0);
    compare_with_reference(
        "softmax large",
        std::slice::from_ref(&x),
        |t| softmax_last_dim(&t[0]),
        |t| reference::softmax_last_dim(&t[0]),
        &mut rng,
        TOL,
    );
    compare_with_reference(
        "gelu large",
        &[x],
        |t| gelu_erf(&t[0]),
        |t| reference::gelu_erf(&t[0]),
        &mut rng,
        TOL,
    );
}

#[test]
fn non_contiguous_inputs() {
    let mut rng = Rng::new(5);
    let base = rng.var((6, 9), -2.0, 2.0);
    // Gradients must flow back through the transpose to the variable.
    let w = rng.var(6, 0.5, 1.5);
    let b = rng.var(6, -1.0, 1.0);
    compare_with_reference(
        "layer_norm transposed",
        &[base.clone(), w, b],
        |t| layer_norm(&t[0].t()?, &t[1], &t[2], 1e-5),
        |t| reference::layer_norm(&t[0].t()?, &t[1], &t[2], 1e-5),
        &mut rng,
        TOL,
    );
    compare_with_reference(
        "softmax transposed",
        std::slice::from_ref(&base),
        |t| softmax_last_dim(&t[0].t()?),
        |t| reference::softmax_last_dim(&t[0].t()?),
        &mut rng,
        TOL,
    );
    compare_with_reference(
        "gelu narrowed",
        &[base],
        |t| gelu_erf(&t[0].narrow(1, 2, 5)?),
        |t| reference::gelu_erf(&t[0].narrow(1, 2, 5)?),
        &mut rng,
        TOL,
    );
}

#[test]
fn rejects_non_f32() {
    let x = Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap();
    let w = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    for err in [
        softmax_last_dim(&x).unwrap_err(),
        gelu_erf(&x).unwrap_err(),
        layer_norm(&x, &w, &w, 1e-5).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(msg.contains("must be f32") && msg.contains("F64"), "{msg}");
    }
    let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
    let bad_w = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
    let msg = layer_norm(&x, &bad_w, &w, 1e-5).unwrap_err().to_string();
    assert!(msg.contains("weight"), "{msg}");
}

#[test]
fn softmax_all_neg_inf_row_is_zero() {
    let x = Tensor::new(
        &[[f32::NEG_INFINITY; 3], [0.0, f32::NEG_INFINITY, 0.0]],
        &Device::Cpu,
    )
    .unwrap();
    let y = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(y, vec![vec![0.0; 3], vec![0.5, 0.0, 0.5]]);
}

#[test]
fn gelu_known_values() {
    let x = Tensor::new(&[-3f32, -1.0, 0.0, 0.5, 2.0], &Device::Cpu).unwrap();
    let y = gelu_erf(&x).unwrap();
    // torch.nn.functional.gelu(x) (erf form)
    let want = Tensor::new(
        &[-0.004_049_7f32, -0.158_655_3, 0.0, 0.345_731_1, 1.954_499_7],
        &Device::Cpu,
    )
    .unwrap();
    assert_close("gelu values", &y, &want, 1e-6);
}
