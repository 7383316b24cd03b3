//! Collation into padded batches, and resumable seeded batch order.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::encoded::{EncodedDataset, EncodedExample, IGNORE_INDEX, Target};
use crate::error::{DataError, Result};
use crate::seed::mix;

/// A padded batch in plain vectors, ready to become tensors.
///
/// `input_ids`, `attention_mask` and `token_type_ids` are `batch_size ×
/// seq_len`, row-major. `labels` has `batch_size` entries for sequence
/// classification, and `batch_size × seq_len` for token classification (with
/// [`IGNORE_INDEX`] on padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Token ids, padded with the pad id.
    pub input_ids: Vec<u32>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
    /// Token type ids, padded with the pad type id.
    pub token_type_ids: Vec<u32>,
    /// Class ids (`batch_size`) or token labels (`batch_size × seq_len`).
    pub labels: Vec<i64>,
    /// Number of rows.
    pub batch_size: usize,
    /// Length of every row (the longest example, maybe rounded up).
    pub seq_len: usize,
}

/// Pads examples into a [`Batch`] (on the right). The default pads with 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collator {
    /// Id used for padding `input_ids`.
    pub pad_id: u32,
    /// Id used for padding `token_type_ids`.
    pub pad_type_id: u32,
    /// Round `seq_len` up to a multiple of this, if set.
    pub pad_to_multiple_of: Option<usize>,
}

impl Collator {
    /// A collator padding with `pad_id`.
    pub fn new(pad_id: u32) -> Self {
        Self {
            pad_id,
            ..Self::default()
        }
    }

    /// Pads `examples` to the longest of them.
    ///
    /// Fails for no examples, or a mix of sequence- and token-level targets.
    pub fn collate<'a>(
        &self,
        examples: impl IntoIterator<Item = &'a EncodedExample>,
    ) -> Result<Batch> {
        let examples: Vec<&EncodedExample> = examples.into_iter().collect();
        let Some(first) = examples.first() else {
            return Err(DataError::Batch("no examples to collate".into()));
        };
        let token_level = matches!(first.target, Target::Tokens(_));
        let batch_size = examples.len();
        let mut seq_len = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        if let Some(m) = self.pad_to_multiple_of.filter(|&m| m > 1) {
            seq_len = seq_len.div_ceil(m) * m;
        }
        let cells = batch_size * seq_len;
        let mut input_ids = Vec::with_capacity(cells);
        let mut attention_mask = Vec::with_capacity(cells);
        let mut token_type_ids = Vec::with_capacity(cells);
        let mut labels = Vec::with_capacity(if token_level { cells } else { batch_size });
        for e in &examples {
            let n = e.input_ids.len();
            let pad = seq_len - n;
            input_ids.extend_from_slice(&e.input_ids);
            input_ids.extend(std::iter::repeat_n(self.pad_id, pad));
            attention_mask.extend(std::iter::repeat_n(1, n));
            attention_mask.extend(std::iter::repeat_n(0, pad));
            token_type_ids.extend(
                e.token_type_ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(self.pad_type_id))
                    .take(seq_len),
            );
            match (&e.target, token_level) {
                (Target::Class(c), false) => labels.push(*c),
                (Target::Tokens(t), true) => labels.extend(
                    t.iter()
                        .copied()
                        .chain(std::iter::repeat(IGNORE_INDEX))
                        .take(seq_len),
                ),
                _ => {
                    return Err(DataError::Batch(
                        "cannot mix sequence- and token-level labels in one batch".into(),
                    ));
                }
            }
        }
        Ok(Batch {
            input_ids,
            attention_mask,
            token_type_ids,
            labels,
            batch_size,
            seq_len,
        })
    }
}

/// Where a [`BatchSampler`] stands: epoch and batch index within the epoch,
/// both from 0. Save it with a checkpoint to resume exactly.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    /// The epoch.
    pub epoch: usize,
    /// The batch within the epoch.
    pub index: usize,
}

/// Seeded batch order over `len` examples, endless across epochs.
///
/// Each epoch's order is a permutation that depends only on the seed and the
/// epoch number, so a sampler created with the same settings and moved to a
/// saved [`Position`] yields exactly the batches that would have followed.
///
/// ```
/// use mosaic_data::BatchSampler;
/// let mut a = BatchSampler::new(10, 4, 7)?;
/// let first: Vec<_> = a.by_ref().take(3).collect();
/// let saved = a.position(); // epoch 1, batch 0 (3 batches per epoch)
/// let next = a.next().unwrap();
/// let mut b = BatchSampler::new(10, 4, 7)?.with_position(saved)?;
/// assert_eq!(b.next().unwrap(), next);
/// assert_eq!(first[0].0.epoch, 0);
/// # Ok::<(), mosaic_data::DataError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchSampler {
    len: usize,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
    position: Position,
    order: Option<(usize, Vec<usize>)>,
}

impl BatchSampler {
    /// Batches of `batch_size` over `len` examples, shuffled each epoch with
    /// `seed`, keeping a smaller last batch.
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Batch("batch size must be at least 1".into()));
        }
        if len == 0 {
            return Err(DataError::Batch("no examples to batch".into()));
        }
        Ok(Self {
            len,
            batch_size,
            seed,
            shuffle: true,
            drop_last: false,
            position: Position::default(),
            order: None,
        })
    }

    /// Whether to shuffle each epoch (default true); without it, batches
    /// follow the data order.
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self.order = None;
        self
    }

    /// Whether to drop a last batch smaller than the batch size (default
    /// false). Fails when that would leave no batch at all.
    pub fn with_drop_last(mut self, drop_last: bool) -> Result<Self> {
        if drop_last && self.len < self.batch_size {
            return Err(DataError::Batch(format!(
                "dropping the last batch leaves no batch: {} examples, batch size {}",
                self.len, self.batch_size
            )));
        }
        self.drop_last = drop_last;
        Ok(self)
    }

    /// Moves to `position` (for instance one saved with a checkpoint). An
    /// index equal to the number of batches per epoch means the start of the
    /// next epoch.
    pub fn with_position(mut self, position: Position) -> Result<Self> {
        self.seek(position)?;
        Ok(self)
    }

    /// Moves to `position`; see [`with_position`](Self::with_position).
    pub fn seek(&mut self, position: Position) -> Result<()> {
        let per_epoch = self.batches_per_epoch();
        if position.index > per_epoch {
            return Err(DataError::Batch(format!(
                "batch index {} is beyond the {per_epoch} batches of an epoch",
                position.index
            )));
        }
        self.position = if position.index == per_epoch {
            Position {
                epoch: position.epoch + 1,
                index: 0,
            }
        } else {
            position
        };
        Ok(())
    }

    /// The position of the next batch.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a sampler has at least one example.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The number of batches in an epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        }
    }

    /// The order of the examples in `epoch`.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let mut rng = StdRng::seed_from_u64(mix(self.seed, epoch as u64));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The example indices of the batch at `position`.
    pub fn batch_at(&self, position: Position) -> Vec<usize> {
        let order = self.epoch_order(position.epoch);
        let start = (position.index * self.batch_size).min(self.len);
        let end = (start + self.batch_size).min(self.len);
        order[start..end].to_vec()
    }

    /// The next batch: its position and its example indices.
    pub fn next_batch(&mut self) -> (Position, Vec<usize>) {
        let pos = self.position;
        if self.order.as_ref().is_none_or(|(e, _)| *e != pos.epoch) {
            self.order = Some((pos.epoch, self.epoch_order(pos.epoch)));
        }
        let order = &self.order.as_ref().expect("order just set").1;
        let start = pos.index * self.batch_size;
        let end = (start + self.batch_size).min(self.len);
        let indices = order[start..end].to_vec();
        self.position = if pos.index + 1 >= self.batches_per_epoch() {
            Position {
                epoch: pos.epoch + 1,
                index: 0,
            }
        } else {
            Position {
                epoch: pos.epoch,
                index: pos.index + 1,
            }
        };
        (pos, indices)
    }
}

impl Iterator for BatchSampler {
    type Item = (Position, Vec<usize>);

    /// Never `None`: epochs follow each other; stop on
    /// [`Position::epoch`].
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_batch())
    }
}

/// A batch with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionedBatch {
    /// The position of this batch.
    pub position: Position,
    /// The example indices in the data set.
    pub indices: Vec<usize>,
    /// The padded batch.
    pub batch: Batch,
}

/// Padded batches of an [`EncodedDataset`] in the order of a
/// [`BatchSampler`], endless across epochs: check
/// [`position`](Self::position) or the batch's position to stop.
#[derive(Debug, Clone)]
pub struct BatchIterator<'a> {
    data: &'a EncodedDataset,
    collator: Collator,
    sampler: BatchSampler,
}

impl<'a> BatchIterator<'a> {
    /// Batches of `data` collated with `collator` in `sampler`'s order.
    /// Fails when the sampler is not over `data.len()` examples.
    pub fn new(
        data: &'a EncodedDataset,
        collator: Collator,
        sampler: BatchSampler,
    ) -> Result<Self> {
        if sampler.len() != data.len() {
            return Err(DataError::Batch(format!(
                "sampler is over {} examples but the data set has {}",
                sampler.len(),
                data.len()
            )));
        }
        Ok(Self {
            data,
            collator,
            sampler,
        })
    }

    /// The position of the next batch (save it to resume).
    pub fn position(&self) -> Position {
        self.sampler.position()
    }

    /// The sampler.
    pub fn sampler(&self) -> &BatchSampler {
        &self.sampler
    }

    /// Moves to `position`.
    pub fn seek(&mut self, position: Position) -> Result<()> {
        self.sampler.seek(position)
    }
}

impl Iterator for BatchIterator<'_> {
    type Item = Result<PositionedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let (position, indices) = self.sampler.next_batch();
        let batch = self
            .collator
            .collate(indices.iter().map(|&i| &self.data.examples[i]));
        Some(batch.map(|batch| PositionedBatch {
            position,
            indices,
            batch,
        }))
    }
}
