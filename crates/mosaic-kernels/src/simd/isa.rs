//! Which instruction set a kernel runs with: run-time detection, the
//! `MOSAIC_KERNELS_ISA` override, and [`dispatch`] into code compiled for it.

use std::sync::OnceLock;

use super::vector::{Portable, SimdFn};
#[cfg(target_arch = "x86_64")]
use super::x86;

/// Instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// x86-64 AVX-512F + DQ (16 f32 lanes, 32 registers).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// x86-64 AVX2 + FMA (8 f32 lanes, 16 registers).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust on 8-lane arrays (the compiler vectorises it as it can).
    Portable,
}

impl Isa {
    /// The best instruction set of this CPU, detected once. The environment
    /// variable `MOSAIC_KERNELS_ISA` (`avx512`, `avx2`, `portable`) lowers it,
    /// e.g. to measure or test the fallbacks; a request for an instruction set
    /// the CPU lacks is ignored.
    pub(crate) fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let wanted = std::env::var("MOSAIC_KERNELS_ISA").unwrap_or_default();
            let supported = Isa::supported();
            supported
                .iter()
                .copied()
                .find(|isa| isa.name() == wanted.trim().to_ascii_lowercase())
                .unwrap_or(supported[0])
        })
    }

    /// Every instruction set this CPU can run, best first (never empty).
    pub(crate) fn supported() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                out.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Isa::Avx2);
            }
        }
        out.push(Isa::Portable);
        out
    }

    /// Lower-case name, as accepted by `MOSAIC_KERNELS_ISA`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// The instruction set kernels use by default (see [`Isa::best`]), by name.
pub fn active_isa() -> &'static str {
    Isa::best().name()
}

/// Runs `f` compiled for `isa`, which must be one of [`Isa::supported`].
pub(crate) fn dispatch<F: SimdFn>(isa: Isa, f: F) -> F::Output {
    match isa {
        // SAFETY: `Isa::Avx512` / `Isa::Avx2` are only produced by
        // `Isa::supported`, after run-time detection of those features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::run_avx2(f) },
        Isa::Portable => f.call::<Portable>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dropout::dropout_keep;
    use crate::simd::vector::Simd;

    struct Dropout<'a>(&'a mut [f32], u64, u64, f32);
    impl SimdFn for Dropout<'_> {
        type Output = ();
        #[inline(always)]
        fn call<S: Simd>(self) {
            let scale = 1.0 / (1.0 - self.3);
            unsafe { S::dropout(self.0, self.1, self.2, self.3, scale) }
        }
    }

    #[test]
    fn vector_dropout_matches_the_scalar_rng_on_every_isa() {
        for &(n, seed, first, p) in &[
            (1usize, 0u64, 0u64, 0.5f32),
            (37, 42, 1_000_003, 0.1),
            (100, u64::MAX, u64::MAX - 50, 0.9),
            (64, 7, 3, 1e-7),
        ] {
            let scale = 1.0 / (1.0 - p);
            let want: Vec<f32> = (0..n)
                .map(|j| {
                    let x = j as f32 + 1.0;
                    if dropout_keep(seed, first.wrapping_add(j as u64), p) {
                        x * scale
                    } else {
                        0.0
                    }
                })
                .collect();
            for isa in Isa::supported() {
                let mut x: Vec<f32> = (0..n).map(|j| j as f32 + 1.0).collect();
                dispatch(isa, Dropout(&mut x, seed, first, p));
                assert_eq!(x, want, "{} n={n} p={p}", isa.name());
            }
        }
    }
}
