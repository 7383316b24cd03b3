//! Word-level text augmentation: random masking, deletion and swaps.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, TextExample, TokenExample};
use crate::error::{DataError, Result};
use crate::seed::mix;

/// Random word-level changes, each word independently:
///
/// 1. deleted with probability `delete_prob` (never all words of a text);
/// 2. otherwise replaced by `mask_token` with probability `mask_prob`;
/// 3. then, left to right, each pair of neighbours is swapped with
///    probability `swap_prob` (a swapped word is not swapped again).
///
/// Randomness comes from `seed` and a per-call *stream* number (for instance
/// derived from the epoch and the example index), so results do not depend on
/// the order or the thread in which examples are processed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augmentation {
    /// Probability of replacing a word by `mask_token`.
    pub mask_prob: f64,
    /// Probability of deleting a word.
    pub delete_prob: f64,
    /// Probability of swapping a word with the next one.
    pub swap_prob: f64,
    /// The word that replaces masked words (use the tokenizer's mask token).
    pub mask_token: String,
    /// The seed.
    pub seed: u64,
}

impl Default for Augmentation {
    fn default() -> Self {
        Self {
            mask_prob: 0.0,
            delete_prob: 0.0,
            swap_prob: 0.0,
            mask_token: "[MASK]".into(),
            seed: 0,
        }
    }
}

impl Augmentation {
    /// Checks that the probabilities are in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("mask_prob", self.mask_prob),
            ("delete_prob", self.delete_prob),
            ("swap_prob", self.swap_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(DataError::Augmentation(format!(
                    "{name} = {p} is not a probability in [0, 1]"
                )));
            }
        }
        Ok(())
    }

    /// Whether every probability is 0 (augmentation changes nothing).
    pub fn is_noop(&self) -> bool {
        self.mask_prob == 0.0 && self.delete_prob == 0.0 && self.swap_prob == 0.0
    }

    fn rng(&self, stream: u64) -> StdRng {
        StdRng::seed_from_u64(mix(self.seed, stream))
    }

    /// Augments a list of words.
    pub fn words<S: AsRef<str>>(&self, words: &[S], stream: u64) -> Vec<String> {
        let n = words.len();
        let (words, _) = self.apply(
            words.iter().map(|w| (w.as_ref().to_owned(), ())).collect(),
            |_| true,
            stream,
        );
        debug_assert!(n == 0 || !words.is_empty());
        words
    }

    /// Augments a text split on whitespace; words are joined with one space.
    pub fn text(&self, text: &str, stream: u64) -> String {
        let words: Vec<&str> = text.split_whitespace().collect();
        self.words(&words, stream).join(" ")
    }

    /// Augments words with their tags. Masking keeps the tag; only words
    /// tagged `outside` (the `O` tag) are deleted or swapped, and only with
    /// each other, so entity spans stay intact. Without `outside`, only
    /// masking applies.
    pub fn tagged(
        &self,
        words: &[String],
        tags: &[usize],
        outside: Option<usize>,
        stream: u64,
    ) -> (Vec<String>, Vec<usize>) {
        let items = words.iter().cloned().zip(tags.iter().copied()).collect();
        self.apply(items, |&tag| Some(tag) == outside, stream)
    }

    fn apply<T: Clone>(
        &self,
        items: Vec<(String, T)>,
        movable: impl Fn(&T) -> bool,
        stream: u64,
    ) -> (Vec<String>, Vec<T>) {
        let mut rng = self.rng(stream);
        let mut out: Vec<(String, T)> = Vec::with_capacity(items.len());
        let mut first_deleted = None;
        for (word, tag) in items {
            if self.delete_prob > 0.0 && movable(&tag) && rng.random_bool(self.delete_prob) {
                if first_deleted.is_none() {
                    first_deleted = Some((word, tag));
                }
                continue;
            }
            if self.mask_prob > 0.0 && rng.random_bool(self.mask_prob) {
                out.push((self.mask_token.clone(), tag));
            } else {
                out.push((word, tag));
            }
        }
        if out.is_empty()
            && let Some(kept) = first_deleted
        {
            out.push(kept);
        }
        if self.swap_prob > 0.0 {
            let mut i = 0;
            while i + 1 < out.len() {
                if movable(&out[i].1) && movable(&out[i + 1].1) && rng.random_bool(self.swap_prob) {
                    out.swap(i, i + 1);
                    i += 2;
                } else {
                    i += 1;
                }
            }
        }
        out.into_iter().unzip()
    }
}

/// The stream number of example `index` in `epoch`.
fn stream(epoch: usize, index: usize) -> u64 {
    mix(epoch as u64, index as u64)
}

impl Dataset<TextExample> {
    /// A copy with every text augmented (in parallel); the result depends
    /// only on the augmentation settings, `epoch` and each example's index.
    pub fn augmented(&self, aug: &Augmentation, epoch: usize) -> Result<Self> {
        aug.validate()?;
        let examples = self
            .examples
            .par_iter()
            .enumerate()
            .map(|(i, e)| TextExample {
                text: aug.text(&e.text, stream(epoch, i)),
                label: e.label,
            })
            .collect();
        Ok(Dataset::new(examples, self.labels.clone()))
    }
}

impl Dataset<TokenExample> {
    /// A copy with every example augmented with [`Augmentation::tagged`]
    /// (the outside tag is `O` when the tag set has it).
    pub fn augmented(&self, aug: &Augmentation, epoch: usize) -> Result<Self> {
        aug.validate()?;
        let outside = self.outside_id();
        let examples = self
            .examples
            .par_iter()
            .enumerate()
            .map(|(i, e)| {
                let (tokens, tags) = aug.tagged(&e.tokens, &e.tags, outside, stream(epoch, i));
                TokenExample { tokens, tags }
            })
            .collect();
        Ok(Dataset::new(examples, self.labels.clone()))
    }
}
