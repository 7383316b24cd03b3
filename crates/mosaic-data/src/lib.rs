//! Data sets, tokenization and collation for fine-tuning encoders.
//!
//! This crate does not depend on any tensor library: batches are plain
//! vectors ([`Batch`]).
//!
//! * Loading: [`TextDataset`] (text + string label) and [`TokenDataset`]
//!   (words + BIO tags) from JSONL, CSV or TSV with configurable field names
//!   ([`TextConfig`], [`TokenConfig`]). Errors name the file and the 1-based
//!   line. Labels come from an explicit list, or are the labels found in the
//!   data, **sorted**, so class ids do not depend on record order.
//! * Splitting: seeded shuffling and train/valid/test splits when only one
//!   file is given ([`Dataset::split`], [`TextDataset::load_splits`]).
//! * Tokenization: [`Encoder`] wraps a `tokenizers::Tokenizer`, encodes in
//!   parallel with special tokens, truncates to `max_len` and counts truncated
//!   examples; word tags are aligned to subwords with [`align_labels`]
//!   (non-first subwords and special tokens get [`IGNORE_INDEX`]).
//!   [`mask_position`] finds the mask token for prompt-based training and
//!   [`word_token_ids`] tells whether a verbalizer word is one token.
//! * Batching: [`Collator`] pads to the longest example with attention masks;
//!   [`BatchSampler`] / [`BatchIterator`] give a seeded order per epoch that
//!   can resume from a saved [`Position`].
//! * Augmentation: [`Augmentation`] masks, deletes and swaps words at random.
//! * Detection: [`CocoDataset`] reads COCO detection JSON and maps category ids to contiguous labels.
//!
//! ```
//! use mosaic_data::{BatchSampler, Collator, EncodedExample, Target};
//!
//! let examples = vec![
//!     EncodedExample { input_ids: vec![101, 7, 102], token_type_ids: vec![0; 3], target: Target::Class(1) },
//!     EncodedExample { input_ids: vec![101, 102], token_type_ids: vec![0; 2], target: Target::Class(0) },
//! ];
//! let batch = Collator::new(0).collate(&examples)?;
//! assert_eq!((batch.batch_size, batch.seq_len), (2, 3));
//! assert_eq!(batch.input_ids, [101, 7, 102, 101, 102, 0]);
//! assert_eq!(batch.attention_mask, [1, 1, 1, 1, 1, 0]);
//! assert_eq!(batch.labels, [1, 0]);
//!
//! // Seeded order, resumable from a position.
//! let mut sampler = BatchSampler::new(examples.len(), 1, 42)?;
//! let (position, indices) = sampler.next_batch();
//! assert_eq!((position.epoch, position.index, indices.len()), (0, 0, 1));
//! # Ok::<(), mosaic_data::DataError>(())
//! ```

#![warn(missing_docs)]

mod augment;
mod batch;
mod coco;
mod dataset;
mod encoded;
mod error;
pub mod image;
mod labels;
mod reader;
mod seed;
mod tokenize;

pub use augment::Augmentation;
pub use batch::{Batch, BatchIterator, BatchSampler, Collator, Position, PositionedBatch};
pub use coco::{BOX_TOLERANCE, CocoAnnotation, CocoCategory, CocoDataset, CocoImage};
pub use dataset::{
    Dataset, SplitFiles, SplitFractions, Splits, TextConfig, TextDataset, TextExample, TokenConfig,
    TokenDataset, TokenExample,
};
pub use encoded::{EncodedDataset, EncodedExample, IGNORE_INDEX, Target};
pub use error::{DataError, Result};
pub use labels::LabelSet;
pub use reader::Format;
pub use tokenize::{Encoder, align_labels, mask_position, mask_positions, pad_id, word_token_ids};
pub use tokenizers::{Encoding, Tokenizer};
