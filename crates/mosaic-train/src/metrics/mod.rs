//! Evaluation metrics.
//!
//! - [`ClassificationReport`]: per-class precision / recall / F1 / support
//!   and averages, identical to scikit-learn's
//!   `classification_report(..., zero_division=0, output_dict=True)`.
//! - [`EntityReport`]: entity-level scores for BIO(ES) tags with seqeval's
//!   default (non-strict, conlleval-style) semantics, or its strict IOB2 mode.
//! - [`accuracy`], [`exact_match`], [`token_accuracy`].
//! - [`exact_match::ExactMatch`]: exact match of generated text (whitespace-trimmed), overall and per group.
//! - [`retrieval::RetrievalRecall`]: image → text and text → image recall@k from a similarity matrix.
//! - [`bleu::corpus_bleu`]: corpus BLEU-4 as sacrebleu 2.x computes it with its defaults (13a tokenizer, exp
//!   smoothing).
//! - [`cider::cider_d`]: CIDEr-D as pycocoevalcap computes it, and [`cider::ptb_tokenize`], its PTB tokenizer for
//!   plain English captions.
//! - [`coco_map::evaluate`]: COCO box mAP and AR (the twelve `stats`) as pycocotools' `COCOeval` computes them,
//!   from a results file ([`coco_map::load_results`]) or in-memory detections.
//! - [`vqa::VqaAccuracy`]: exact match of answers after the official VQA evaluation's normalisation
//!   ([`vqa::normalize_vqa_answer`]), overall and per question type.

pub mod bleu;
pub mod cider;
mod classification;
pub mod coco_map;
pub mod exact_match;
pub mod retrieval;
mod seqeval;
pub mod vqa;

pub use classification::ClassificationReport;
pub use seqeval::{Entity, EntityReport, get_entities, get_entities_nested};

use serde::Serialize;
use serde::ser::SerializeMap;

/// Errors from computing metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("{what}: y_true has {y_true} items but y_pred has {y_pred}")]
    LengthMismatch {
        what: &'static str,
        y_true: usize,
        y_pred: usize,
    },
    #[error("tag `{tag}` is not valid in the {scheme} scheme")]
    InvalidTag { scheme: &'static str, tag: String },
    #[error("{what}: there is nothing to score (no {items})")]
    Empty {
        what: &'static str,
        items: &'static str,
    },
    #[error(
        "{what}: {hypotheses} hypotheses but {references} reference lists (one list per hypothesis)"
    )]
    ReferenceCountMismatch {
        what: &'static str,
        hypotheses: usize,
        references: usize,
    },
    #[error("{what}: hypothesis {index} has no reference (each needs at least one)")]
    NoReference { what: &'static str, index: usize },
    /// A COCO results file is not COCO's format or does not fit its ground truth.
    #[error("{}: {entry}: {message}", path.display())]
    CocoResults {
        path: std::path::PathBuf,
        entry: String,
        message: String,
    },
    /// An in-memory detection does not fit the COCO ground truth.
    #[error("detection {index}: {message}")]
    CocoDetection { index: usize, message: String },
}

/// Checks a caption corpus: some hypotheses, one reference list per hypothesis, none of them empty.
pub(crate) fn check_corpus<R>(
    what: &'static str,
    hypotheses: usize,
    references: &[Vec<R>],
) -> Result<(), MetricsError> {
    if hypotheses == 0 {
        return Err(MetricsError::Empty {
            what,
            items: "hypotheses",
        });
    }
    if references.len() != hypotheses {
        return Err(MetricsError::ReferenceCountMismatch {
            what,
            hypotheses,
            references: references.len(),
        });
    }
    match references.iter().position(Vec::is_empty) {
        Some(index) => Err(MetricsError::NoReference { what, index }),
        None => Ok(()),
    }
}

/// Python's `str.isspace` for one character: Unicode `White_Space` plus the four information separators
/// U+001C..U+001F, so that `split()` and `strip()` here cut where the reference Python code cuts.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()`: the runs of non-whitespace of `s`.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

pub(crate) fn check_len(
    what: &'static str,
    y_true: usize,
    y_pred: usize,
) -> Result<(), MetricsError> {
    if y_true != y_pred {
        return Err(MetricsError::LengthMismatch {
            what,
            y_true,
            y_pred,
        });
    }
    Ok(())
}

/// Precision, recall, F1 and support of one class or one average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

impl Serialize for Scores {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("precision", &self.precision)?;
        m.serialize_entry("recall", &self.recall)?;
        m.serialize_entry("f1-score", &self.f1)?;
        m.serialize_entry("support", &self.support)?;
        m.end()
    }
}

/// `num / den`, or 0 when `den` is 0 (`zero_division=0`).
pub(crate) fn divide(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

/// Writes one row of a scikit-learn style text table.
pub(crate) fn write_row(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    s: &Scores,
    width: usize,
    digits: usize,
) -> std::fmt::Result {
    writeln!(
        f,
        "{name:>width$}  {:>9.digits$} {:>9.digits$} {:>9.digits$} {:>9}",
        s.precision, s.recall, s.f1, s.support
    )
}

pub(crate) fn write_header(f: &mut std::fmt::Formatter<'_>, width: usize) -> std::fmt::Result {
    write!(
        f,
        "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n\n",
        "", "precision", "recall", "f1-score", "support"
    )
}

/// The fraction of positions where `y_true` and `y_pred` agree (0 when empty).
pub fn accuracy<T: PartialEq>(y_true: &[T], y_pred: &[T]) -> Result<f64, MetricsError> {
    check_len("accuracy", y_true.len(), y_pred.len())?;
    let correct = y_true.iter().zip(y_pred).filter(|(a, b)| a == b).count();
    Ok(divide(correct as f64, y_true.len() as f64))
}

/// The fraction of sequences predicted entirely right (0 when empty).
pub fn exact_match<T: PartialEq>(
    y_true: &[Vec<T>],
    y_pred: &[Vec<T>],
) -> Result<f64, MetricsError> {
    check_len("exact match", y_true.len(), y_pred.len())?;
    let correct = y_true.iter().zip(y_pred).filter(|(a, b)| a == b).count();
    Ok(divide(correct as f64, y_true.len() as f64))
}

/// Token-level accuracy over all sequences (seqeval's `accuracy_score`).
pub fn token_accuracy<T: PartialEq>(
    y_true: &[Vec<T>],
    y_pred: &[Vec<T>],
) -> Result<f64, MetricsError> {
    check_len("token accuracy", y_true.len(), y_pred.len())?;
    let mut total = 0usize;
    let mut correct = 0usize;
    for (t, p) in y_true.iter().zip(y_pred) {
        check_len("token accuracy (a sequence)", t.len(), p.len())?;
        total += t.len();
        correct += t.iter().zip(p).filter(|(a, b)| a == b).count();
    }
    Ok(divide(correct as f64, total as f64))
}
