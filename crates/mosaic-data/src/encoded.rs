//! Tokenized examples and data sets: what the tokenizer produces and the
//! collator pads.

use serde::{Deserialize, Serialize};

/// The label of positions that must not count in the loss (special tokens,
/// non-first subwords, padding), as in PyTorch's `ignore_index`.
pub const IGNORE_INDEX: i64 = -100;

/// The target of an encoded example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// One class for the whole sequence.
    Class(i64),
    /// One label per token ([`IGNORE_INDEX`] where it must not count).
    Tokens(Vec<i64>),
}

/// One tokenized example, not padded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedExample {
    /// Token ids, special tokens included.
    pub input_ids: Vec<u32>,
    /// Token type (segment) ids, as long as `input_ids`.
    pub token_type_ids: Vec<u32>,
    /// What to predict.
    pub target: Target,
}

/// A tokenized data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedDataset {
    /// The examples, in the order of the source data set.
    pub examples: Vec<EncodedExample>,
    /// How many examples were longer than `max_len` and were cut.
    pub truncated: usize,
    /// The maximum length used (special tokens included).
    pub max_len: usize,
}

impl EncodedDataset {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The length of each example, in tokens.
    pub fn lengths(&self) -> Vec<usize> {
        self.examples.iter().map(|e| e.input_ids.len()).collect()
    }
}
