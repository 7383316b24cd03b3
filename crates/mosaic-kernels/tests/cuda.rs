//! The CUDA path (feature `cuda`). Without a usable GPU these tests only check
//! that the probe fails cleanly, and say they skipped the rest.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{Device, Tensor};
use common::{Rng, compare_with_reference};
use mosaic_kernels::{AttentionOptions, attention, cuda, reference};

#[test]
fn probe_never_panics_and_explains_itself() {
    match cuda::status() {
        Ok(name) => {
            eprintln!("CUDA device: {name}");
            assert!(!name.is_empty());
        }
        Err(why) => {
            eprintln!("no CUDA: {why}");
            assert!(!why.is_empty());
            assert!(!cuda::is_available());
        }
    }
}

/// With a GPU, `attention` runs the CUDA kernels: compare them (forward and
/// every gradient) with the f64 composed reference on shapes with several
/// tiles, masks, `Nq > Nk` causal rows and dropout.
#[test]
fn cuda_attention_matches_reference() {
    if !cuda::is_available() {
        eprintln!(
            "skipping the CUDA comparison: {}",
            cuda::status()
                .err()
                .unwrap_or_else(|| "disabled by MOSAIC_KERNELS_DEVICE".into())
        );
        return;
    }
    let mut rng = Rng::new(17);
    for &(b, h, nq, nk, d, dv, causal, dropout) in &[
        (2, 3, 130, 257, 64, 64, false, 0.0),
        (1, 2, 300, 200, 32, 48, true, 0.1),
        (2, 1, 1, 513, 128, 128, true, 0.0),
    ] {
        let mask: Vec<f32> = (0..b * nk)
            .map(|i| f32::from(u8::from(i % nk == 0 || rng.bool(0.7))))
            .collect();
        let opts = AttentionOptions {
            scale: None,
            causal,
            key_padding_mask: Some(Tensor::from_vec(mask, (b, nk), &Device::Cpu).unwrap()),
            dropout,
            seed: 5,
            segment_ids: None,
        };
        let vars = [
            rng.var((b, h, nq, d), -2.0, 2.0),
            rng.var((b, h, nk, d), -2.0, 2.0),
            rng.var((b, h, nk, dv), -2.0, 2.0),
        ];
        compare_with_reference(
            "cuda attention",
            &vars,
            |t| attention(&t[0], &t[1], &t[2], &opts),
            |t| reference::attention(&t[0], &t[1], &t[2], &opts),
            &mut rng,
            1e-4,
        );
    }
}
