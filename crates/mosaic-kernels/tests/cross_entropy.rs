//! Fused softmax cross-entropy against the composed reference.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{Rng, assert_close, compare_with_reference};
use mosaic_kernels::{IGNORE_INDEX, cross_entropy, cross_entropy_sum, reference};
use proptest::prelude::*;

const TOL: f32 = 1e-4;

fn labels(rng: &mut Rng, n: usize, classes: usize, p_ignore: f32) -> Vec<i64> {
    (0..n)
        .map(|_| {
            if rng.bool(p_ignore) {
                IGNORE_INDEX
            } else {
                (rng.next_u64() % classes as u64) as i64
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    #[test]
    fn cross_entropy_matches_reference(
        rows in 1usize..=12, classes in 1usize..=300, rank3 in any::<bool>(),
        smoothing in prop::sample::select(vec![0.0f64, 0.1, 0.5, 1.0]),
        label_dtype in 0usize..3, seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let n = if rank3 { 2 * rows } else { rows };
        let mut ys = labels(&mut rng, n, classes, 0.3);
        ys[0] = (classes - 1) as i64; // at least one counted row
        let shape: Vec<usize> = if rank3 { vec![2, rows, classes] } else { vec![rows, classes] };
        let label_shape: Vec<usize> = shape[..shape.len() - 1].to_vec();
        let dtype = [DType::I64, DType::U32, DType::U8][label_dtype];
        let ys: Vec<i64> = if dtype == DType::I64 {
            ys
        } else {
            // unsigned labels cannot say -100
            ys.into_iter().map(|y| if y < 0 { 0 } else { y.min(255) % classes as i64 }).collect()
        };
        let y = Tensor::from_vec(ys, label_shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let x = rng.var(shape, -6.0, 6.0);
        compare_with_reference(
            "cross_entropy",
            &[x],
            |t| cross_entropy(&t[0], &y, smoothing),
            |t| reference::cross_entropy(&t[0], &y, smoothing),
            &mut rng,
            TOL,
        );
    }
}

#[test]
fn large_vocabulary_matches_reference() {
    let mut rng = Rng::new(7);
    let (n, c) = (9, 30_522);
    let x = rng.var((n, c), -10.0, 10.0);
    let y = Tensor::new(labels(&mut rng, n, c, 0.2).as_slice(), &Device::Cpu).unwrap();
    compare_with_reference(
        "cross_entropy 30522",
        &[x],
        |t| cross_entropy(&t[0], &y, 0.1),
        |t| reference::cross_entropy(&t[0], &y, 0.1),
        &mut rng,
        TOL,
    );
}

#[test]
fn sum_and_count_and_all_ignored() {
    let dev = Device::Cpu;
    let x = Var::new(&[[1f32, 2.0], [3.0, -1.0], [0.0, 0.0]], &dev).unwrap();
    let y = Tensor::new(&[1i64, IGNORE_INDEX, 0], &dev).unwrap();
    let (sum, count) = cross_entropy_sum(x.as_tensor(), &y, 0.0).unwrap();
    assert_eq!(count, 2);
    let mean = cross_entropy(x.as_tensor(), &y, 0.0).unwrap();
    assert_close(
        "sum = mean * count",
        &sum,
        &(mean * count as f64).unwrap(),
        1e-6,
    );
    // Every row ignored: the sum is 0 with no gradient, the mean is NaN (PyTorch).
    let none = Tensor::new(&[IGNORE_INDEX; 3], &dev).unwrap();
    let (sum, count) = cross_entropy_sum(x.as_tensor(), &none, 0.2).unwrap();
    assert_eq!((sum.to_scalar::<f32>().unwrap(), count), (0.0, 0));
    let g = sum.backward().unwrap();
    assert_eq!(common::max_abs(g.get(&x).unwrap()), 0.0);
    let mean = cross_entropy(x.as_tensor(), &none, 0.0).unwrap();
    assert!(mean.to_scalar::<f32>().unwrap().is_nan());
}

#[test]
fn rejects_bad_arguments() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    let msg = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
    let out_of_range = Tensor::new(&[0i64, 3], &dev).unwrap();
    assert!(msg(cross_entropy(&x, &out_of_range, 0.0)).contains("label 3 at position 1"));
    let negative = Tensor::new(&[-1i64, 0], &dev).unwrap();
    assert!(msg(cross_entropy(&x, &negative, 0.0)).contains("label -1"));
    let wrong_shape = Tensor::new(&[0i64, 1, 2], &dev).unwrap();
    assert!(msg(cross_entropy(&x, &wrong_shape, 0.0)).contains("must have shape"));
    let ok = Tensor::new(&[0i64, 1], &dev).unwrap();
    assert!(msg(cross_entropy(&x, &ok, 1.5)).contains("label_smoothing"));
    let f64x = x.to_dtype(DType::F64).unwrap();
    assert!(msg(cross_entropy(&f64x, &ok, 0.0)).contains("must be f32"));
    let float_labels = ok.to_dtype(DType::F32).unwrap();
    assert!(msg(cross_entropy(&x, &float_labels, 0.0)).contains("i64, u32 or u8"));
}
