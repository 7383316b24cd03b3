//! Causal-LM training examples: JSONL rows rendered with an instruction format (labels on the response tokens
//! only) or plain text (every token counts), tokenized with the model's tokenizer, optionally packed several to a
//! sequence ([`pack_examples`]), and right-padded batches.

use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_data::Encoder;
use mosaic_data::IGNORE_INDEX;
use mosaic_models::gpt2::TokenLayout;
use mosaic_prompt::{ChatTemplate, conversation_from_row};

use crate::error::{Result, TrainError};

/// One tokenized sequence: `labels[t]` is the token id where position `t` counts in the loss, else −100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmExample {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    /// Set when the sequence holds several packed samples ([`pack_examples`]).
    pub packing: Option<PackedLayout>,
}

/// Where the samples of a packed sequence lie: token `t` belongs to sample `segment_ids[t]` (0, 1, … in order)
/// and sits at position `position_ids[t]` of it (0 at each sample's first token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedLayout {
    pub segment_ids: Vec<u32>,
    pub position_ids: Vec<u32>,
}

impl LmExample {
    /// A single (unpacked) sample.
    pub fn new(input_ids: Vec<u32>, labels: Vec<i64>) -> Self {
        Self {
            input_ids,
            labels,
            packing: None,
        }
    }

    /// Tokens the shifted loss counts (the first position predicts nothing).
    pub fn counted(&self) -> usize {
        counted_labels(&self.labels)
    }
}

/// The labels the shifted causal-LM loss counts: all but −100, the first position excepted (it predicts nothing).
pub fn counted_labels(labels: &[i64]) -> usize {
    labels
        .iter()
        .skip(1)
        .filter(|&&l| l != IGNORE_INDEX)
        .count()
}

/// How rows become text and labels.
pub enum RowFormat {
    /// `{"messages": [...]}` or `{"instruction", "input", "output"}` rows through a chat template; the loss counts
    /// the assistant responses (end-of-turn included) and the final EOS.
    Instruction {
        // Boxed: a compiled template is large next to the `Text` variant.
        template: Box<ChatTemplate>,
        messages_field: String,
    },
    /// `{"<text_field>": "..."}` rows; every token counts, and an EOS closes each text.
    Text { text_field: String },
}

/// Tokenizes rows into [`LmExample`]s.
pub struct LmEncoder {
    pub encoder: Encoder,
    pub format: RowFormat,
    pub eos_id: u32,
    pub max_length: usize,
}

/// What loading a file found besides the examples.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    /// Examples cut to `max_length` (from the left: their response and EOS are kept).
    pub truncated: usize,
    /// Examples dropped because truncation left no counted token.
    pub dropped: usize,
}

impl LmEncoder {
    /// Text and the byte ranges of it whose tokens count in the loss.
    fn render(
        &self,
        row: &serde_json::Value,
    ) -> std::result::Result<(String, Vec<(usize, usize)>), String> {
        match &self.format {
            RowFormat::Instruction {
                template,
                messages_field,
            } => {
                // `conversation_from_row` reads `messages`; a custom column is moved there first.
                let row = match row.get(messages_field.as_str()) {
                    Some(messages) if messages_field != "messages" => {
                        serde_json::json!({ "messages": messages })
                    }
                    _ => row.clone(),
                };
                let messages = conversation_from_row(&row).map_err(|e| e.to_string())?;
                let rendered = template
                    .render_for_training(&messages)
                    .map_err(|e| e.to_string())?;
                let spans = rendered
                    .responses
                    .iter()
                    .map(|s| (s.start, s.end))
                    .collect();
                Ok((rendered.text, spans))
            }
            RowFormat::Text { text_field } => {
                let text = row
                    .get(text_field.as_str())
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| format!("no string field `{text_field}`"))?;
                Ok((text.to_string(), vec![(0, text.len())]))
            }
        }
    }

    /// Encodes one row; `Ok(None)` when truncation left nothing to learn. The bool says whether it was truncated.
    pub fn encode_row(
        &self,
        row: &serde_json::Value,
    ) -> std::result::Result<Option<(LmExample, bool)>, String> {
        let (text, spans) = self.render(row)?;
        let encoding = self
            .encoder
            .tokenizer()
            .encode(text.as_str(), false)
            .map_err(|e| format!("cannot tokenize: {e}"))?;
        let mut input_ids = encoding.get_ids().to_vec();
        // A token counts when its bytes overlap a response span (byte offsets, the tokenizers default).
        let mut labels: Vec<i64> = input_ids
            .iter()
            .zip(encoding.get_offsets())
            .map(|(&id, &(start, end))| {
                let inside = spans.iter().any(|&(s, e)| start < e && end > s);
                if inside { id as i64 } else { IGNORE_INDEX }
            })
            .collect();
        // The model must learn to stop: EOS always counts, even when it doubles as padding. Templates that end
        // the response with EOS already have it; otherwise it is appended.
        if input_ids.last() != Some(&self.eos_id) {
            input_ids.push(self.eos_id);
            labels.push(self.eos_id as i64);
        } else if let Some(last) = labels.last_mut() {
            *last = self.eos_id as i64;
        }
        // Too long: the start is cut (from the left), because the loss lives at the end — the response and its
        // EOS — and a cut prompt still teaches more than a cut answer.
        let truncated = input_ids.len() > self.max_length;
        if truncated {
            let cut = input_ids.len() - self.max_length;
            input_ids.drain(..cut);
            labels.drain(..cut);
        }
        let example = LmExample::new(input_ids, labels);
        Ok((example.counted() > 0).then_some((example, truncated)))
    }

    /// Reads a JSONL file; a bad row is an error naming `file:line`.
    pub fn load(&self, path: &Path) -> Result<(Vec<LmExample>, LoadStats)> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        let mut examples = Vec::new();
        let mut stats = LoadStats::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |message: String| {
                TrainError::Invalid(format!("{}:{}: {message}", path.display(), i + 1))
            };
            let row: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
            match self.encode_row(&row).map_err(at)? {
                Some((example, truncated)) => {
                    stats.truncated += usize::from(truncated);
                    examples.push(example);
                }
                None => stats.dropped += 1,
            }
        }
        if examples.is_empty() {
            return Err(TrainError::file(path, "no usable examples"));
        }
        Ok((examples, stats))
    }
}

/// Packs `examples` into sequences of at most `max_length` tokens, first fit in input order: each example goes
/// into the first sequence that still has room for it, or opens a new one. Every sample keeps its own positions
/// (restarting at 0) and segment, so with [`LmBatch`] it sees only its own tokens and its loss and gradients are
/// exactly those of the sample alone. Labels are the sample's own, except that each sample's first token gets −100:
/// under the causal shift that label is what the previous sample's last token would predict, and unpacked it
/// counts for nothing either. An example longer than `max_length` is an error naming its index.
pub fn pack_examples(examples: Vec<LmExample>, max_length: usize) -> Result<Vec<LmExample>> {
    if max_length == 0 {
        return Err(TrainError::Invalid(
            "packing: the packing length must be at least 1 token".into(),
        ));
    }
    for (index, e) in examples.iter().enumerate() {
        let len = e.input_ids.len();
        if len > max_length {
            return Err(TrainError::Invalid(format!(
                "packing: example {index} (0-based, in load order) has {len} tokens, more than the packing \
                 length of {max_length}"
            )));
        }
        if e.packing.is_some() {
            return Err(TrainError::Invalid(format!(
                "packing: example {index} is already packed"
            )));
        }
        if e.labels.len() != len {
            return Err(TrainError::Invalid(format!(
                "packing: example {index} has {len} tokens but {} labels",
                e.labels.len()
            )));
        }
    }
    let mut bins = FirstFit::new(examples.len(), max_length);
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (index, e) in examples.iter().enumerate() {
        if e.input_ids.is_empty() {
            continue; // nothing to learn, nothing to pack
        }
        let bin = bins.place(e.input_ids.len());
        if bin == members.len() {
            members.push(Vec::new());
        }
        members[bin].push(index);
    }
    Ok(members
        .into_iter()
        .map(|indices| {
            let total = indices.iter().map(|&i| examples[i].input_ids.len()).sum();
            let mut packed = LmExample {
                input_ids: Vec::with_capacity(total),
                labels: Vec::with_capacity(total),
                packing: Some(PackedLayout {
                    segment_ids: Vec::with_capacity(total),
                    position_ids: Vec::with_capacity(total),
                }),
            };
            for (segment, &i) in indices.iter().enumerate() {
                let e = &examples[i];
                packed.input_ids.extend_from_slice(&e.input_ids);
                packed.labels.push(IGNORE_INDEX);
                packed.labels.extend_from_slice(&e.labels[1..]);
                if let Some(layout) = packed.packing.as_mut() {
                    let n = e.input_ids.len() as u32;
                    layout
                        .segment_ids
                        .extend(std::iter::repeat_n(segment as u32, n as usize));
                    layout.position_ids.extend(0..n);
                }
            }
            packed
        })
        .collect())
}

/// First-fit bin placement in O(log n) per item: a max-tree over the remaining room of `n` bins (unopened bins
/// have all of it), so the leftmost bin with enough room is found by one descent.
struct FirstFit {
    /// Leaves at `size..size + n`; node `k` holds the max of `2k` and `2k + 1`.
    room: Vec<usize>,
    size: usize,
}

impl FirstFit {
    fn new(n: usize, capacity: usize) -> Self {
        let size = n.max(1).next_power_of_two();
        let mut room = vec![0; 2 * size];
        room[size..size + n].fill(capacity);
        for k in (1..size).rev() {
            room[k] = room[2 * k].max(room[2 * k + 1]);
        }
        Self { room, size }
    }

    /// Puts an item of `len` (at most the capacity; at most `n` items) into the first bin with room; its index.
    fn place(&mut self, len: usize) -> usize {
        let mut k = 1;
        while k < self.size {
            k = if self.room[2 * k] >= len {
                2 * k
            } else {
                2 * k + 1
            };
        }
        self.room[k] -= len;
        let bin = k - self.size;
        while k > 1 {
            k /= 2;
            self.room[k] = self.room[2 * k].max(self.room[2 * k + 1]);
        }
        bin
    }
}

/// A right-padded batch: `input_ids` (B, T) u32, `attention_mask` (B, T) u32, `labels` (B, T) i64; when any row
/// is packed, also `position_ids` and `segment_ids` (B, T) u32 (unpacked rows: positions `0..n`, one segment;
/// padding: a segment of its own).
pub struct LmBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Tensor,
    pub position_ids: Option<Tensor>,
    pub segment_ids: Option<Tensor>,
    /// Tokens the shifted loss counts.
    pub counted: usize,
}

impl LmBatch {
    /// What the model needs besides the ids.
    pub fn layout(&self) -> TokenLayout<'_> {
        TokenLayout {
            position_ids: self.position_ids.as_ref(),
            attention_mask: Some(&self.attention_mask),
            segment_ids: self.segment_ids.as_ref(),
        }
    }

    pub fn collate<'a>(
        examples: impl IntoIterator<Item = &'a LmExample>,
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        let examples: Vec<&LmExample> = examples.into_iter().collect();
        let b = examples.len();
        let t = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        let mut ids = vec![pad_id; b * t];
        let mut mask = vec![0u32; b * t];
        let mut labels = vec![IGNORE_INDEX; b * t];
        let packed = examples.iter().any(|e| e.packing.is_some());
        let (mut positions, mut segments) = if packed {
            (vec![0u32; b * t], vec![0u32; b * t])
        } else {
            (Vec::new(), Vec::new())
        };
        for (row, e) in examples.iter().enumerate() {
            let n = e.input_ids.len();
            if e.labels.len() != n {
                return Err(TrainError::Invalid(format!(
                    "batch row {row}: {n} tokens but {} labels",
                    e.labels.len()
                )));
            }
            ids[row * t..row * t + n].copy_from_slice(&e.input_ids);
            mask[row * t..row * t + n].fill(1);
            labels[row * t..row * t + n].copy_from_slice(&e.labels);
            if !packed {
                continue;
            }
            let (pos, seg) = (
                &mut positions[row * t..(row + 1) * t],
                &mut segments[row * t..(row + 1) * t],
            );
            match &e.packing {
                Some(layout) => {
                    if layout.segment_ids.len() != n || layout.position_ids.len() != n {
                        return Err(TrainError::Invalid(format!(
                            "batch row {row}: packing layout does not cover its {n} tokens"
                        )));
                    }
                    pos[..n].copy_from_slice(&layout.position_ids);
                    seg[..n].copy_from_slice(&layout.segment_ids);
                }
                None => pos[..n].iter_mut().zip(0u32..).for_each(|(p, i)| *p = i),
            }
            // Padding gets a segment of its own (it is masked out anyway).
            let pad_segment = seg[..n].iter().max().map_or(0, |&s| s + 1);
            seg[n..].fill(pad_segment);
        }
        let to_tensor = |v: Vec<u32>| Tensor::from_vec(v, (b, t), device);
        Ok(Self {
            input_ids: to_tensor(ids)?,
            attention_mask: to_tensor(mask)?,
            labels: Tensor::from_vec(labels, (b, t), device)?,
            position_ids: packed.then(|| to_tensor(positions)).transpose()?,
            segment_ids: packed.then(|| to_tensor(segments)).transpose()?,
            counted: examples.iter().map(|e| e.counted()).sum(),
        })
    }
}
