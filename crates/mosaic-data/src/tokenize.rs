//! Tokenization: parallel batch encoding, truncation, label alignment,
//! mask positions and verbalizer-word checks.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::batch::Collator;
use crate::dataset::{TextDataset, TokenDataset};
use crate::encoded::{EncodedDataset, EncodedExample, IGNORE_INDEX, Target};
use crate::error::{DataError, Result};

/// Wraps a [`Tokenizer`] for encoding data sets.
///
/// Padding and truncation settings of the tokenizer itself are switched off:
/// truncation is set per call (`max_len`) so that truncated examples can be
/// counted, and padding is done per batch by the [`Collator`]. The pad id is
/// taken from the tokenizer's padding settings, else the id of `[PAD]`, else
/// of `<pad>`, else 0.
#[derive(Clone)]
pub struct Encoder {
    tokenizer: Tokenizer,
    pad_id: u32,
    pad_type_id: u32,
    special_tokens: usize,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("pad_id", &self.pad_id)
            .field("pad_type_id", &self.pad_type_id)
            .field("special_tokens", &self.special_tokens)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn tok_err(e: tokenizers::Error) -> DataError {
    DataError::Tokenizer(e.to_string())
}

/// The pad id of a tokenizer: from its padding settings, else the id of
/// `[PAD]`, else of `<pad>`, else 0.
pub fn pad_id(tokenizer: &Tokenizer) -> u32 {
    tokenizer
        .get_padding()
        .map(|p| p.pad_id)
        .or_else(|| tokenizer.token_to_id("[PAD]"))
        .or_else(|| tokenizer.token_to_id("<pad>"))
        .unwrap_or(0)
}

/// A copy of `tokenizer` without padding and truncation settings (borrowed
/// when it has none).
fn plain(tokenizer: &Tokenizer) -> Cow<'_, Tokenizer> {
    if tokenizer.get_padding().is_none() && tokenizer.get_truncation().is_none() {
        Cow::Borrowed(tokenizer)
    } else {
        let mut t = tokenizer.clone();
        t.with_padding(None);
        // Removing truncation cannot fail.
        let _ = t.with_truncation(None);
        Cow::Owned(t)
    }
}

impl Encoder {
    /// Loads a `tokenizer.json` file; errors name the path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let tokenizer = Tokenizer::from_file(path).map_err(|e| DataError::TokenizerLoad {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut enc = Self::new(tokenizer)?;
        enc.source = Some(path.to_owned());
        Ok(enc)
    }

    /// Wraps a tokenizer.
    pub fn new(tokenizer: Tokenizer) -> Result<Self> {
        let pad_id = pad_id(&tokenizer);
        let pad_type_id = tokenizer.get_padding().map_or(0, |p| p.pad_type_id);
        let tokenizer = plain(&tokenizer).into_owned();
        let special_tokens = tokenizer.encode("", true).map_err(tok_err)?.len();
        Ok(Self {
            tokenizer,
            pad_id,
            pad_type_id,
            special_tokens,
            source: None,
        })
    }

    /// The tokenizer (without padding and truncation settings).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The file the tokenizer was loaded from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The pad token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The number of special tokens added to a single sequence.
    pub fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    /// A collator padding with this tokenizer's pad id.
    pub fn collator(&self) -> Collator {
        Collator {
            pad_id: self.pad_id,
            pad_type_id: self.pad_type_id,
            pad_to_multiple_of: None,
        }
    }

    /// The id of the special token `token`, adding it (after every existing id) when the tokenizer lacks it —
    /// what `tokenizer.add_special_tokens` does in transformers, e.g. for LLaVA's `<image>`.
    pub fn add_special_token(&mut self, token: &str) -> Result<u32> {
        if let Some(id) = self.tokenizer.token_to_id(token) {
            return Ok(id);
        }
        self.tokenizer
            .add_special_tokens([tokenizers::AddedToken::from(token.to_owned(), true)])
            .map_err(tok_err)?;
        self.token_id(token)
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.tokenizer.to_string(false).map_err(tok_err)
    }

    /// The id of `token` (for instance `"[MASK]"`), or an error naming it.
    pub fn token_id(&self, token: &str) -> Result<u32> {
        self.tokenizer
            .token_to_id(token)
            .ok_or_else(|| DataError::UnknownToken(token.to_owned()))
    }

    /// The ids of `word` as it appears inside a sentence; see
    /// [`word_token_ids`].
    pub fn word_token_ids(&self, word: &str) -> Result<Vec<u32>> {
        word_token_ids(&self.tokenizer, word)
    }

    fn truncating(&self, max_len: usize) -> Result<Tokenizer> {
        if max_len <= self.special_tokens {
            return Err(DataError::InvalidMaxLen {
                max_len,
                special: self.special_tokens,
            });
        }
        let mut t = self.tokenizer.clone();
        t.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(tok_err)?;
        Ok(t)
    }

    /// Encodes texts in parallel with special tokens, cutting each to
    /// `max_len` tokens (special tokens included). Returns the encodings and
    /// how many texts were cut.
    pub fn encode_texts<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        max_len: usize,
    ) -> Result<(Vec<Encoding>, usize)> {
        let t = self.truncating(max_len)?;
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = t.encode_batch(inputs, true).map_err(tok_err)?;
        Ok(count_truncated(encodings))
    }

    /// Encodes pre-tokenized word lists in parallel with special tokens, cut
    /// to `max_len`. Each token's word index is in the encoding's
    /// `get_word_ids()`. Returns the encodings and how many were cut.
    pub fn encode_words<W: AsRef<[String]> + Sync>(
        &self,
        words: &[W],
        max_len: usize,
    ) -> Result<(Vec<Encoding>, usize)> {
        let t = self.truncating(max_len)?;
        let inputs: Vec<&[String]> = words.iter().map(AsRef::as_ref).collect();
        let encodings = t.encode_batch(inputs, true).map_err(tok_err)?;
        Ok(count_truncated(encodings))
    }

    /// Tokenizes a text-classification data set; the target of each example
    /// is its class id.
    pub fn encode_text_dataset(
        &self,
        data: &TextDataset,
        max_len: usize,
    ) -> Result<EncodedDataset> {
        let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
        let (encodings, truncated) = self.encode_texts(&texts, max_len)?;
        let examples = encodings
            .into_iter()
            .zip(&data.examples)
            .map(|(enc, ex)| EncodedExample {
                input_ids: enc.get_ids().to_vec(),
                token_type_ids: enc.get_type_ids().to_vec(),
                target: Target::Class(ex.label as i64),
            })
            .collect();
        Ok(EncodedDataset {
            examples,
            truncated,
            max_len,
        })
    }

    /// Tokenizes a token-classification data set; word tags are aligned to
    /// subword tokens with [`align_labels`] (first subword of each word gets
    /// the tag, other subwords and special tokens get [`IGNORE_INDEX`]).
    pub fn encode_token_dataset(
        &self,
        data: &TokenDataset,
        max_len: usize,
    ) -> Result<EncodedDataset> {
        let words: Vec<&[String]> = data.examples.iter().map(|e| e.tokens.as_slice()).collect();
        let (encodings, truncated) = self.encode_words(&words, max_len)?;
        let examples = encodings
            .into_iter()
            .zip(&data.examples)
            .map(|(enc, ex)| EncodedExample {
                target: Target::Tokens(align_labels(enc.get_word_ids(), &ex.tags)),
                input_ids: enc.get_ids().to_vec(),
                token_type_ids: enc.get_type_ids().to_vec(),
            })
            .collect();
        Ok(EncodedDataset {
            examples,
            truncated,
            max_len,
        })
    }
}

fn count_truncated(mut encodings: Vec<Encoding>) -> (Vec<Encoding>, usize) {
    let mut truncated = 0;
    for e in &mut encodings {
        if !e.get_overflowing().is_empty() {
            truncated += 1;
            e.get_overflowing_mut().clear();
        }
    }
    (encodings, truncated)
}

/// Aligns word-level tags to tokens: the first token of each word gets the
/// word's tag, later tokens of the same word and tokens of no word (special
/// tokens, padding) get [`IGNORE_INDEX`].
///
/// `word_ids` is `Encoding::get_word_ids()` of a pre-tokenized encoding.
///
/// ```
/// use mosaic_data::{IGNORE_INDEX as X, align_labels};
/// // [CLS] New York ##er [SEP] with words 0 0 1 1
/// let word_ids = [None, Some(0), Some(1), Some(1), None];
/// assert_eq!(align_labels(&word_ids, &[3, 4]), vec![X, 3, 4, X, X]);
/// ```
pub fn align_labels(word_ids: &[Option<u32>], tags: &[usize]) -> Vec<i64> {
    let mut previous = None;
    word_ids
        .iter()
        .map(|w| {
            let label = match *w {
                Some(w) if Some(w) != previous => {
                    tags.get(w as usize).map_or(IGNORE_INDEX, |&t| t as i64)
                }
                _ => IGNORE_INDEX,
            };
            previous = *w;
            label
        })
        .collect()
}

/// The token ids of `word` as it appears inside a sentence, without special
/// tokens: the word is encoded with a leading space, so byte-level BPE
/// tokenizers give the `Ġword` form and SentencePiece ones the `▁word` form
/// (WordPiece and word-level tokenizers ignore the space).
///
/// More than one id means the tokenizer splits the word: a verbalizer can
/// then use the first piece or refuse the word.
pub fn word_token_ids(tokenizer: &Tokenizer, word: &str) -> Result<Vec<u32>> {
    let t = plain(tokenizer);
    let enc = t.encode(format!(" {word}"), false).map_err(tok_err)?;
    if enc.get_ids().is_empty() {
        return Err(DataError::EmptyEncoding(word.to_owned()));
    }
    Ok(enc.get_ids().to_vec())
}

/// All positions of `mask_id` in `ids`.
pub fn mask_positions(ids: &[u32], mask_id: u32) -> Vec<usize> {
    ids.iter()
        .enumerate()
        .filter(|&(_, &id)| id == mask_id)
        .map(|(i, _)| i)
        .collect()
}

/// The position of the single mask token in `ids` (for instance
/// `encoding.get_ids()` or [`EncodedExample::input_ids`]).
///
/// Fails when the mask is absent (for instance truncated away) or appears
/// more than once.
pub fn mask_position(ids: &[u32], mask_id: u32) -> Result<usize> {
    let positions = mask_positions(ids, mask_id);
    match positions.as_slice() {
        [] => Err(DataError::MaskNotFound {
            mask_id,
            len: ids.len(),
        }),
        [p] => Ok(*p),
        _ => Err(DataError::MultipleMasks { mask_id, positions }),
    }
}
