//! Shared helpers for the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Shape, Tensor, Var};

/// Tiny deterministic RNG (SplitMix64) for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn bool(&mut self, p_true: f32) -> bool {
        self.uniform(0.0, 1.0) < p_true
    }

    pub fn tensor(&mut self, shape: impl Into<Shape>, lo: f32, hi: f32) -> Tensor {
        let shape = shape.into();
        let data: Vec<f32> = (0..shape.elem_count())
            .map(|_| self.uniform(lo, hi))
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    pub fn var(&mut self, shape: impl Into<Shape>, lo: f32, hi: f32) -> Var {
        Var::from_tensor(&self.tensor(shape, lo, hi)).unwrap()
    }
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `max |got - want| <= tol * max(1, max |want|)`.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape mismatch");
    if want.elem_count() == 0 {
        return;
    }
    let err = max_abs(&(got - want).unwrap());
    let scale = max_abs(want).max(1.0);
    assert!(
        err <= tol * scale,
        "{what}: max abs error {err} > {tol} * {scale}"
    );
}

/// Runs `fast` on the f32 variables and `reference` on f64 copies of them
/// (f64 evaluation of the composed reference is the ground truth, so the
/// tolerance measures the kernel's own error; an f32 evaluation of the
/// reference is itself off by ~1e-3 on ill-conditioned inputs such as layer
/// norm rows of length 2 with a tiny variance). Compares the outputs, then
/// backpropagates `sum(out * w)` for a random `w` through both and compares
/// the gradient of every variable. Returns the fast gradients.
pub fn compare_with_reference<F, R>(
    what: &str,
    vars: &[Var],
    fast: F,
    reference: R,
    rng: &mut Rng,
    tol: f32,
) -> Vec<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
    R: Fn(&[Tensor]) -> Result<Tensor>,
{
    let to_f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let vars64: Vec<Var> = vars
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap())
        .collect();
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let inputs64: Vec<Tensor> = vars64.iter().map(|v| v.as_tensor().clone()).collect();
    let y_fast = fast(&inputs).unwrap();
    let y_ref = reference(&inputs64).unwrap();
    assert_eq!(y_fast.dtype(), DType::F32, "{what}: fast output dtype");
    // The kernels poison their buffers with NaN in debug builds: an element
    // they forget to write shows up here.
    assert_all_finite(&format!("{what}: forward"), &y_fast);
    assert_close(&format!("{what}: forward"), &y_fast, &to_f32(&y_ref), tol);

    let w = rng.tensor(y_fast.shape(), -1.0, 1.0);
    let w64 = w.to_dtype(DType::F64).unwrap();
    let g_fast = (&y_fast * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g_ref = (&y_ref * &w64)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    vars.iter()
        .zip(&vars64)
        .enumerate()
        .map(|(i, (v, v64))| {
            let gf = g_fast
                .get(v)
                .unwrap_or_else(|| panic!("{what}: no fast gradient for input {i}"))
                .clone();
            let gr = g_ref
                .get(v64)
                .unwrap_or_else(|| panic!("{what}: no reference gradient for input {i}"));
            assert_all_finite(&format!("{what}: gradient of input {i}"), &gf);
            assert_close(
                &format!("{what}: gradient of input {i}"),
                &gf,
                &to_f32(gr),
                tol,
            );
            gf
        })
        .collect()
}

/// Asserts that every element is finite.
pub fn assert_all_finite(what: &str, t: &Tensor) {
    let v = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        panic!("{what}: element {i} is {} (unwritten?)", v[i]);
    }
}

/// Asserts that every element is finite and that the tensor is not all zero.
pub fn assert_finite_nonzero(what: &str, t: &Tensor) {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "{what}: non-finite values");
    assert!(v.iter().any(|&x| x != 0.0), "{what}: all zero");
}

/// Proptest cases per property: 24 (fast), or `MOSAIC_PROPTEST_CASES` when
/// set, for occasional longer soak runs.
pub fn proptest_cases() -> u32 {
    std::env::var("MOSAIC_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}
