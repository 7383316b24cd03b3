//! Every instruction set agrees on the forward and backward passes.

use super::backward::{BwdInputs, backward};
use super::config::{FlashConfig, Padding, Segments};
use super::forward::forward;
use crate::simd::Isa;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut st = seed;
    (0..n)
        .map(|_| {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert!(x.is_finite() && y.is_finite(), "non-finite value");
            (x - y).abs()
        })
        .fold(0.0, f32::max)
}

/// Every instruction set gives the same answer (up to rounding) on shapes
/// spanning several query and key blocks, with partial tiles, padding,
/// causal masking (including rows with no visible key), segments and
/// dropout.
#[test]
fn every_isa_agrees() {
    let isas = Isa::supported();
    for &(b, h, nq, nk, d, dv, causal, dropout) in &[
        (1, 2, 100, 300, 20, 9, true, 0.0),
        (2, 1, 130, 70, 64, 64, true, 0.2),
        (1, 1, 49, 513, 3, 17, false, 0.1),
        (2, 1, 260, 260, 16, 8, true, 0.1),
    ] {
        // Self-attention shapes also get contiguous segments, long at the start
        // and single tokens at the end.
        let segments = (nq == nk).then(|| {
            let raw: Vec<i64> = (0..b * nk)
                .map(|x| (((x % nk) as i64 + 13 * (x / nk) as i64).pow(2) / 150) % 1000)
                .collect();
            Segments::new(b, nk, &raw)
        });
        let padding = Padding::new(b, nk, |bi, j| (j * 7 + bi) % 5 != 0 && !(bi == 1 && j < 40));
        let mut cfg = FlashConfig {
            b,
            h,
            nq,
            nk,
            d,
            dv,
            scale: 0.3,
            causal,
            dropout,
            seed: 11,
            padding: Some(padding),
            segments,
            isa: isas[0],
        };
        let q = data(b * h * nq * d, 1);
        let k = data(b * h * nk * d, 2);
        let v = data(b * h * nk * dv, 3);
        let dout = data(b * h * nq * dv, 4);
        let run = |cfg: &FlashConfig| {
            let f = forward(cfg, &q, &k, &v);
            let g = backward(
                cfg,
                &BwdInputs {
                    q: &q,
                    k: &k,
                    v: &v,
                    out: &f.out,
                    dout: &dout,
                    lse: &f.lse,
                },
            );
            (f, g)
        };
        let (f0, g0) = run(&cfg);
        for &isa in &isas[1..] {
            cfg.isa = isa;
            let (f, g) = run(&cfg);
            let what = isa.name();
            assert!(max_diff(&f.out, &f0.out) < 1e-5, "{what}: out");
            assert!(max_diff(&g.dq, &g0.dq) < 1e-4, "{what}: dq");
            assert!(max_diff(&g.dk, &g0.dk) < 1e-4, "{what}: dk");
            assert!(max_diff(&g.dv, &g0.dv) < 1e-4, "{what}: dv");
            let live: Vec<(f32, f32)> = f
                .lse
                .iter()
                .zip(&f0.lse)
                .filter(|(a, _)| a.is_finite())
                .map(|(&a, &b)| (a, b))
                .collect();
            assert!(
                live.iter().all(|(a, b)| (a - b).abs() < 1e-5),
                "{what}: lse"
            );
        }
    }
}
