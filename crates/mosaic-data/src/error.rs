//! The error type of the crate.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while loading, tokenizing and batching data.
///
/// Errors about a data file name the file and the 1-based line number.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The format of a file could not be told from its extension.
    #[error(
        "{}: unknown data format (use a .jsonl, .ndjson, .json, .csv or .tsv file, or set the format)",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A JSONL line is not valid JSON.
    #[error("{}:{line}: not valid JSON: {message}", path.display())]
    InvalidJson {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A JSONL line is valid JSON but not an object.
    #[error("{}:{line}: expected a JSON object, found {found}", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What was found ("an array", "a string", ...).
        found: &'static str,
    },
    /// A CSV file could not be parsed (for instance a row with the wrong
    /// number of fields).
    #[error("{}:{}: invalid CSV: {message}", path.display(), OptLine(*line))]
    Csv {
        /// The file.
        path: PathBuf,
        /// The 1-based line, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A record lacks a field (for CSV: the header lacks the column).
    #[error("{}:{line}: missing field `{field}`", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The field.
        field: String,
    },
    /// A field has the wrong type.
    #[error("{}:{line}: field `{field}` should be {expected}, found {found}", path.display())]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The field.
        field: String,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// A label, a token list or a tag list is empty.
    #[error("{}:{line}: field `{field}` is empty", path.display())]
    EmptyValue {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The field.
        field: String,
    },
    /// Token and tag lists of a token-classification record differ in length.
    #[error(
        "{}:{line}: `{tokens_field}` has {tokens} entries but `{tags_field}` has {tags}",
        path.display()
    )]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The tokens field.
        tokens_field: String,
        /// The tags field.
        tags_field: String,
        /// Number of tokens.
        tokens: usize,
        /// Number of tags.
        tags: usize,
    },
    /// A file holds no examples.
    #[error("{}: no examples (empty data set)", path.display())]
    EmptyDataset {
        /// The file.
        path: PathBuf,
    },
    /// A label is not in the explicit label set.
    #[error("{}:{line}: unknown label `{label}` (known: {})", path.display(), known.join(", "))]
    UnknownLabel {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The label.
        label: String,
        /// The labels of the set.
        known: Vec<String>,
    },
    /// An explicit label set is unusable (empty, duplicate or empty label).
    #[error("invalid label set: {0}")]
    InvalidLabels(String),
    /// Split fractions are unusable, or leave no training examples.
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    /// A tokenizer file could not be loaded.
    #[error("{}: cannot load tokenizer: {message}", path.display())]
    TokenizerLoad {
        /// The tokenizer file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The tokenizer failed on some input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A token is not in the tokenizer's vocabulary.
    #[error("token `{0}` is not in the tokenizer's vocabulary")]
    UnknownToken(String),
    /// A word encodes to no token at all.
    #[error("word `{0}` encodes to no token")]
    EmptyEncoding(String),
    /// The maximum length cannot even hold the special tokens.
    #[error("max_len {max_len} leaves no room for text after {special} special tokens")]
    InvalidMaxLen {
        /// The requested maximum length.
        max_len: usize,
        /// The number of special tokens added by the tokenizer.
        special: usize,
    },
    /// The mask token is not in the token ids (for instance truncated away).
    #[error("mask token (id {mask_id}) not found in the {len} token ids (was it truncated away?)")]
    MaskNotFound {
        /// The mask token id.
        mask_id: u32,
        /// The number of token ids searched.
        len: usize,
    },
    /// The mask token appears more than once.
    #[error("mask token (id {mask_id}) appears {} times, at {positions:?}", positions.len())]
    MultipleMasks {
        /// The mask token id.
        mask_id: u32,
        /// Where it appears.
        positions: Vec<usize>,
    },
    /// Batching was asked for something impossible (empty batch, mixed
    /// sequence- and token-level labels, zero batch size, bad position...).
    #[error("batching: {0}")]
    Batch(String),
    /// An augmentation setting is out of range.
    #[error("augmentation: {0}")]
    Augmentation(String),
    /// A COCO detection file is malformed or inconsistent (an unknown image or category, a duplicate id, a
    /// degenerate box, a box outside its image, a value of the wrong type).
    #[error("{}: {entry}: {message}", path.display())]
    Coco {
        /// The file.
        path: PathBuf,
        /// The entry at fault: `annotation 17 (index 3)`, or a JSON path such as `annotations[3].bbox`.
        entry: String,
        /// What is wrong with it.
        message: String,
    },
}

struct OptLine(Option<usize>);

impl fmt::Display for OptLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, "{l}"),
            None => f.write_str("?"),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
