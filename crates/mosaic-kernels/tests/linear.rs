//! The fused linear op against `x Wᵀ + b` composed from candle ops, and its skipping of untracked gradients.

mod common;

use candle_core::{Device, Tensor};
use common::{Rng, assert_close, compare_with_reference};
use mosaic_kernels::{LinearLayout, linear, reference};
use proptest::prelude::*;

const TOL: f32 = 1e-4;

fn layout(in_out: bool) -> LinearLayout {
    if in_out {
        LinearLayout::InOut
    } else {
        LinearLayout::OutIn
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    #[test]
    fn linear_matches_reference(
        batch in 1usize..=3, rows in 1usize..=9, d_in in 1usize..=40, d_out in 1usize..=40,
        rank3 in any::<bool>(), in_out in any::<bool>(), with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let x_shape = if rank3 { vec![batch, rows, d_in] } else { vec![batch * rows, d_in] };
        let x = rng.var(x_shape, -2.0, 2.0);
        let lay = layout(in_out);
        let w_shape = match lay {
            LinearLayout::OutIn => (d_out, d_in),
            LinearLayout::InOut => (d_in, d_out),
        };
        let w = rng.var(w_shape, -1.0, 1.0);
        let mut vars = vec![x, w];
        if with_bias {
            vars.push(rng.var(d_out, -1.0, 1.0));
        }
        compare_with_reference(
            "linear",
            &vars,
            |t| linear(&t[0], &t[1], t.get(2), lay),
            |t| reference::linear(&t[0], &t[1], t.get(2), lay),
            &mut rng,
            TOL,
        );
    }
}

#[test]
fn a_frozen_weight_gets_no_gradient_and_the_rest_are_unchanged() {
    let mut rng = Rng::new(7);
    let x = rng.var((4, 5, 16), -1.0, 1.0);
    let w = rng.var((8, 16), -1.0, 1.0);
    let b = rng.var(8, -1.0, 1.0);
    let lay = LinearLayout::OutIn;
    let all = linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), lay)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let frozen_w = w.as_tensor().detach();
    let some = linear(x.as_tensor(), &frozen_w, Some(b.as_tensor()), lay)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(some.get(&frozen_w).is_none());
    assert!(some.get(w.as_tensor()).is_none());
    assert_close("dx", some.get(&x).unwrap(), all.get(&x).unwrap(), 0.0);
    assert_close("db", some.get(&b).unwrap(), all.get(&b).unwrap(), 0.0);
}

#[test]
fn an_untracked_input_gets_no_gradient_but_the_weight_does() {
    let mut rng = Rng::new(8);
    let x = rng.tensor((6, 4), -1.0, 1.0);
    let w = rng.var((4, 3), -1.0, 1.0);
    let y = linear(&x, w.as_tensor(), None, LinearLayout::InOut).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    // d/dW of sum(x W) = xᵀ · 1: each row of dW is the column sum of x.
    let want = x
        .t()
        .unwrap()
        .matmul(&Tensor::ones((6, 3), candle_core::DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_close("dW", grads.get(&w).unwrap(), &want, 1e-5);
}

#[test]
fn wrong_widths_and_dtypes_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
    let w = Tensor::zeros((4, 5), candle_core::DType::F32, &dev).unwrap();
    let err = linear(&x, &w, None, LinearLayout::OutIn).unwrap_err();
    assert!(err.to_string().contains("3 features"), "{err}");
    let b = Tensor::zeros(7, candle_core::DType::F32, &dev).unwrap();
    let w = Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap();
    let err = linear(&x, &w, Some(&b), LinearLayout::OutIn).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    let x64 = x.to_dtype(candle_core::DType::F64).unwrap();
    assert!(linear(&x64, &w, None, LinearLayout::OutIn).is_err());
}
