//! Training-mode batch norm (fused, f32) against its composed version evaluated in f64: output, batch
//! statistics and the gradients of input, weight and bias; eval mode against the formula; argument errors.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{Rng, assert_close, assert_finite_nonzero, compare_with_reference, max_abs};
use mosaic_kernels::batch_norm::composed;
use mosaic_kernels::{batch_norm_eval, batch_norm_train};
use proptest::prelude::*;

const TOL: f32 = 1e-4;
const EPS: f64 = 1e-5;

/// Compares output and gradients (through `compare_with_reference`), then the batch statistics; returns the
/// relative errors (to `max(1, max |reference|)`) of the output and of the gradients of x, weight and bias.
fn check(what: &str, dims: &[usize], offset: f32, spread: f32, seed: u64) -> [f32; 4] {
    let mut rng = Rng::new(seed);
    let c = dims[1];
    let x =
        Var::from_tensor(&(rng.tensor(dims, -spread, spread) + offset as f64).unwrap()).unwrap();
    let w = rng.var(c, -1.5, 1.5);
    let b = rng.var(c, -1.0, 1.0);
    compare_with_reference(
        what,
        &[x.clone(), w.clone(), b.clone()],
        |t| Ok(batch_norm_train(&t[0], &t[1], &t[2], EPS)?.output),
        |t| Ok(composed::batch_norm_train(&t[0], &t[1], &t[2], EPS)?.output),
        &mut rng,
        TOL,
    );
    let fused = batch_norm_train(x.as_tensor(), w.as_tensor(), b.as_tensor(), EPS).unwrap();
    let x64 = x.as_tensor().to_dtype(DType::F64).unwrap();
    let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let reference =
        composed::batch_norm_train(&x64, &f64_of(w.as_tensor()), &f64_of(b.as_tensor()), EPS)
            .unwrap();
    let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    assert_close(
        &format!("{what}: mean"),
        &fused.mean,
        &f32_of(&reference.mean),
        TOL,
    );
    assert_close(
        &format!("{what}: var"),
        &fused.var,
        &f32_of(&reference.var),
        TOL,
    );
    assert_eq!(fused.count, reference.count);
    assert_eq!(fused.count, dims[0] * dims[2..].iter().product::<usize>());
    // The largest relative errors of the output and of the three gradients, for the report.
    let r = rng.tensor(fused.output.shape(), -1.0, 1.0);
    let g = (&fused.output * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let vars64: Vec<Var> = [&x, &w, &b]
        .iter()
        .map(|v| Var::from_tensor(&f64_of(v.as_tensor())).unwrap())
        .collect();
    let out64 = composed::batch_norm_train(
        vars64[0].as_tensor(),
        vars64[1].as_tensor(),
        vars64[2].as_tensor(),
        EPS,
    )
    .unwrap()
    .output;
    let g64 = (&out64 * &f64_of(&r))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let rel = |got: &Tensor, want: &Tensor| {
        let want = f32_of(want);
        max_abs(&(got - &want).unwrap()) / max_abs(&want).max(1.0)
    };
    let mut errors = [rel(&fused.output, &out64), 0.0, 0.0, 0.0];
    for (i, (v, v64)) in [&x, &w, &b].iter().zip(&vars64).enumerate() {
        errors[i + 1] = rel(g.get(v).unwrap(), g64.get(v64).unwrap());
    }
    errors
}

#[test]
fn seeded_shapes_match_the_composed_version_in_f64() {
    let mut worst = [0f32; 4];
    let mut take = |e: [f32; 4]| {
        for (w, e) in worst.iter_mut().zip(e) {
            *w = w.max(e);
        }
    };
    for (i, dims) in [
        vec![2, 3, 5, 5],
        vec![4, 8, 7, 6],
        vec![1, 2, 3, 1],
        vec![16, 5],         // (N, C): BatchNorm1d on features
        vec![3, 4, 10],      // (N, C, L)
        vec![8, 16, 16, 16], // above the parallel threshold
    ]
    .iter()
    .enumerate()
    {
        take(check(
            &format!("case {i} {dims:?}"),
            dims,
            0.5,
            2.0,
            100 + i as u64,
        ));
    }
    // A large offset with a small spread: the variance must not cancel.
    take(check("offset", &[4, 3, 6, 6], 50.0, 0.01, 7));
    println!(
        "batch_norm_train (f32 fused vs f64 composed), max relative error: output {:.3e}, dx {:.3e}, \
         dweight {:.3e}, dbias {:.3e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    #[test]
    fn random_shapes_match_the_composed_version(
        n in 1usize..=4, c in 1usize..=6, h in 1usize..=6, w in 1usize..=6,
        offset in -3.0f32..3.0, seed in any::<u64>(),
    ) {
        prop_assume!(n * h * w >= 2);
        check("proptest", &[n, c, h, w], offset, 2.0, seed);
    }
}

#[test]
fn non_contiguous_input_and_deterministic_results() {
    let mut rng = Rng::new(3);
    // (N, H, C, W) transposed to (N, C, H, W): not contiguous.
    let base = rng.tensor((3, 5, 4, 6), -2.0, 2.0);
    let x = base.transpose(1, 2).unwrap();
    assert!(!x.is_contiguous());
    let w = rng.tensor(4, 0.5, 1.5);
    let b = rng.tensor(4, -0.5, 0.5);
    let fused = batch_norm_train(&x, &w, &b, EPS).unwrap();
    let again = batch_norm_train(&x.contiguous().unwrap(), &w, &b, EPS).unwrap();
    let reference = composed::batch_norm_train(&x, &w, &b, EPS).unwrap();
    assert_close("non-contiguous", &fused.output, &reference.output, TOL);
    let a: Vec<f32> = fused.output.flatten_all().unwrap().to_vec1().unwrap();
    let b2: Vec<f32> = again.output.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a, b2, "same input, same bits");
}

#[test]
fn gradients_reach_every_argument_and_constants_get_none() {
    let mut rng = Rng::new(11);
    let x = rng.var((2, 3, 4, 4), -1.0, 1.0);
    let w = rng.var(3, 0.5, 1.5);
    let b = rng.var(3, -0.5, 0.5);
    let y = batch_norm_train(x.as_tensor(), w.as_tensor(), b.as_tensor(), EPS)
        .unwrap()
        .output;
    // Weighted, so the gradients are not trivially zero (Σ over a channel of x̂ is 0).
    let r = rng.tensor(y.shape(), -1.0, 1.0);
    let grads = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
        assert_finite_nonzero(name, grads.get(v).unwrap());
    }
    // Weight and bias as constants: only x gets a gradient.
    let wc = w.as_tensor().detach();
    let bc = b.as_tensor().detach();
    let y = batch_norm_train(x.as_tensor(), &wc, &bc, EPS)
        .unwrap()
        .output;
    let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_some() && grads.get(&wc).is_none() && grads.get(&bc).is_none());
}

#[test]
fn eval_mode_is_the_affine_map_of_the_running_statistics() {
    let mut rng = Rng::new(5);
    let x = rng.var((2, 3, 4, 5), -2.0, 2.0);
    let mean = rng.tensor(3, -0.5, 0.5);
    let var = rng.tensor(3, 0.5, 1.5);
    let w = rng.var(3, 0.5, 1.5);
    let b = rng.var(3, -0.5, 0.5);
    let y = batch_norm_eval(
        x.as_tensor(),
        &mean,
        &var,
        w.as_tensor(),
        b.as_tensor(),
        EPS,
    )
    .unwrap();
    let want = composed::batch_norm_eval_f64(
        x.as_tensor(),
        &mean,
        &var,
        w.as_tensor(),
        b.as_tensor(),
        EPS,
    )
    .unwrap();
    assert_close("eval", &y, &want, 1e-6);
    // By hand for one element.
    let (xv, m, v) = (
        x.as_tensor()
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .get(3)
            .unwrap()
            .get(4)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        mean.get(2).unwrap().to_scalar::<f32>().unwrap(),
        var.get(2).unwrap().to_scalar::<f32>().unwrap(),
    );
    let (wv, bv) = (
        w.as_tensor().get(2).unwrap().to_scalar::<f32>().unwrap(),
        b.as_tensor().get(2).unwrap().to_scalar::<f32>().unwrap(),
    );
    let one = y
        .get(1)
        .unwrap()
        .get(2)
        .unwrap()
        .get(3)
        .unwrap()
        .get(4)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((one - ((xv - m) / (v + EPS as f32).sqrt() * wv + bv)).abs() < 1e-5);
    // Gradients to x, weight and bias (the statistics are constants).
    let grads = y.sum_all().unwrap().backward().unwrap();
    for (name, t) in [("x", &x), ("weight", &w), ("bias", &b)] {
        assert_finite_nonzero(name, grads.get(t).unwrap());
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dev = Device::Cpu;
    let w = Tensor::ones(3, DType::F32, &dev).unwrap();
    let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
    let one_value = Tensor::zeros((1, 3, 1, 1), DType::F32, &dev).unwrap();
    let e = batch_norm_train(&one_value, &w, &b, EPS)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than 1 value per channel"), "{e}");
    let x = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
    let e = batch_norm_train(&x, &w, &b, EPS).unwrap_err().to_string();
    assert!(e.contains("`weight` must have shape (4,)"), "{e}");
    let x64 = Tensor::zeros((2, 3, 3, 3), DType::F64, &dev).unwrap();
    let e = batch_norm_train(&x64, &w, &b, EPS).unwrap_err().to_string();
    assert!(e.contains("`x` must be f32"), "{e}");
    let e = batch_norm_train(&Tensor::zeros(3, DType::F32, &dev).unwrap(), &w, &b, EPS)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(N, C, ...)"), "{e}");
    let x = Tensor::zeros((2, 3, 3, 3), DType::F32, &dev).unwrap();
    let e = batch_norm_eval(&x, &w, &b.unsqueeze(0).unwrap(), &w, &b, EPS)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`var` must have shape (3,)"), "{e}");
    let e = batch_norm_train(&x, &w, &b, -1.0).unwrap_err().to_string();
    assert!(e.contains("eps"), "{e}");
}
