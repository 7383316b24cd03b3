//! Assertions for tests of models and layers, shared by this crate's tests and the crates built on it, so floats
//! are compared and gradients checked one way everywhere. They panic with a message naming what failed.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// The largest `|actual - expected|`; the shapes must be equal.
pub fn max_abs_diff(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    actual
        .sub(expected)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .unwrap_or_else(|e| panic!("cannot compare tensors: {e}"))
}

/// Fails unless every element of `actual` is within `tol` of `expected`.
pub fn assert_close(actual: &Tensor, expected: &Tensor, tol: f32) {
    let err = max_abs_diff(actual, expected);
    assert!(err <= tol, "max abs difference {err} > {tol}");
}

/// Fails unless each named parameter got a gradient that is finite everywhere and non-zero somewhere.
pub fn assert_gradients_reach<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a Var)>,
    grads: &GradStore,
) {
    let mut count = 0;
    for (name, var) in params {
        count += 1;
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached `{name}`"));
        let v: Vec<f32> = g
            .flatten_all()
            .and_then(|g| g.to_vec1())
            .unwrap_or_else(|e| panic!("gradient of `{name}`: {e}"));
        assert!(
            v.iter().all(|x| x.is_finite()),
            "non-finite gradient in `{name}`"
        );
        assert!(v.iter().any(|x| *x != 0.0), "all-zero gradient in `{name}`");
    }
    assert!(count > 0, "no parameters to check");
}
