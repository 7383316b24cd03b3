//! Seeded dropout and the train/eval switch shared by every layer of a model.
//!
//! candle's own dropout draws from an unseeded RNG; training here must be reproducible and resumable, so each
//! dropout call derives its mask from `(seed, call counter)`. Saving the counter is enough to resume exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Train/eval mode and the dropout random stream of one model.
#[derive(Debug, Default)]
pub struct Mode {
    training: AtomicBool,
    seed: AtomicU64,
    counter: AtomicU64,
}

impl Mode {
    /// A new shared mode, in eval mode.
    pub fn shared() -> Arc<Mode> {
        Arc::new(Mode::default())
    }
    /// A new shared mode, in eval mode, its dropout stream seeded with `seed`.
    pub fn seeded(seed: u64) -> Arc<Mode> {
        let mode = Self::shared();
        mode.set_seed(seed);
        mode
    }
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed)
    }
    /// Reseeds the dropout stream (and restarts its counter).
    pub fn set_seed(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.counter.store(0, Ordering::Relaxed);
    }
    /// `(seed, counter)`: the whole dropout state, for checkpoints.
    pub fn rng_state(&self) -> (u64, u64) {
        (
            self.seed.load(Ordering::Relaxed),
            self.counter.load(Ordering::Relaxed),
        )
    }
    pub fn set_rng_state(&self, seed: u64, counter: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.counter.store(counter, Ordering::Relaxed);
    }
    /// A fresh seed for one random draw; deterministic given the state.
    pub fn next_seed(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        splitmix64(self.seed.load(Ordering::Relaxed) ^ splitmix64(n))
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Inverted dropout: active only in training mode.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    mode: Arc<Mode>,
}

impl Dropout {
    pub fn new(p: f32, mode: Arc<Mode>) -> Self {
        Dropout { p, mode }
    }

    /// Whether [`forward`](Self::forward) changes its input (training mode and `p > 0`).
    pub fn is_active(&self) -> bool {
        self.mode.is_training() && self.p > 0.0
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.mode.is_training() || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let mut rng = StdRng::seed_from_u64(self.mode.next_seed());
        let scale = 1.0 / (1.0 - self.p);
        let keep: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if rng.random::<f32>() < self.p {
                    0.0
                } else {
                    scale
                }
            })
            .collect();
        let mask = Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}
