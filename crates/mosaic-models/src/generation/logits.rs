//! Turning one row of next-token scores into a token, as transformers' logits processors do (in `generate`'s
//! order: repetition penalty, then for sampling temperature, top-k, top-p), then argmax or a seeded draw.
//!
//! Removed tokens get `-inf`, exactly like transformers' `filter_value`, so the processed scores can be compared
//! with theirs.

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::config::{Decoding, GenerationConfig};

/// Divides positive scores of the tokens in `history` by `penalty` and multiplies negative ones (each token once).
pub fn apply_repetition_penalty(scores: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; scores.len()];
    for &id in history {
        let id = id as usize;
        if id < scores.len() && !seen[id] {
            seen[id] = true;
            let s = scores[id];
            scores[id] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

pub fn apply_temperature(scores: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        scores.iter_mut().for_each(|s| *s /= temperature);
    }
}

/// Keeps the scores at least as high as the `k`-th highest (ties with it survive); the rest become `-inf`.
pub fn apply_top_k(scores: &mut [f32], k: usize) {
    if k == 0 || k >= scores.len() {
        return;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    scores
        .iter_mut()
        .filter(|s| **s < kth)
        .for_each(|s| *s = f32::NEG_INFINITY);
}

/// Nucleus filtering: keeps the smallest set of highest-probability tokens whose probability reaches `top_p`
/// (always at least the best one). transformers' rule: in ascending order, drop every token whose cumulative
/// probability is `<= 1 - top_p`.
pub fn apply_top_p(scores: &mut [f32], top_p: f32) {
    if top_p >= 1.0 || scores.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let probs = softmax(scores);
    let threshold = 1.0 - top_p;
    let mut cumulative = 0.0f32;
    let last = order.len() - 1;
    let mut remove = Vec::new();
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[i];
        if cumulative <= threshold && rank != last {
            remove.push(i);
        }
    }
    for i in remove {
        scores[i] = f32::NEG_INFINITY;
    }
}

/// Softmax in f32 (`-inf` scores get probability 0).
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![1.0 / scores.len().max(1) as f32; scores.len()];
    }
    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The index of the highest score (the first one on ties, as `torch.argmax`); NaN scores never win.
pub fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] || scores[best].is_nan() && !s.is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Picks the next token of one row: applies the processors of `config`, then argmax or a draw from its own
/// seeded stream.
#[derive(Debug, Clone)]
pub struct TokenPicker {
    decoding: Decoding,
    repetition_penalty: f32,
    rng: StdRng,
}

impl TokenPicker {
    /// The picker of batch row `row`.
    pub fn new(config: &GenerationConfig, row: usize) -> Self {
        let seed = match config.decoding {
            Decoding::Sample { seed, .. } => seed,
            Decoding::Greedy => 0,
        };
        // Row 0 uses `seed` itself, so a prompt samples the same alone as at the top of a batch.
        let row_seed = seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        TokenPicker {
            decoding: config.decoding.clone(),
            repetition_penalty: config.repetition_penalty,
            rng: StdRng::seed_from_u64(row_seed),
        }
    }

    /// Applies the processors in place: what the scores look like just before the choice.
    pub fn process(&self, scores: &mut [f32], history: &[u32]) {
        apply_repetition_penalty(scores, history, self.repetition_penalty);
        if let Decoding::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = self.decoding
        {
            apply_temperature(scores, temperature);
            if let Some(k) = top_k {
                apply_top_k(scores, k);
            }
            if let Some(p) = top_p {
                apply_top_p(scores, p);
            }
        }
    }

    /// The next token for `scores` (one row of logits), given the row's tokens so far.
    pub fn pick(&mut self, scores: &mut [f32], history: &[u32]) -> u32 {
        self.process(scores, history);
        match self.decoding {
            Decoding::Greedy => argmax(scores),
            Decoding::Sample { .. } => {
                let probs = softmax(scores);
                let u: f32 = self.rng.random();
                let mut cumulative = 0.0f32;
                let mut fallback = argmax(scores);
                for (i, p) in probs.iter().enumerate() {
                    if *p > 0.0 {
                        cumulative += p;
                        fallback = i as u32;
                        if u < cumulative {
                            return i as u32;
                        }
                    }
                }
                // Rounding left the total a hair under u: the last token with any probability.
                fallback
            }
        }
    }
}
