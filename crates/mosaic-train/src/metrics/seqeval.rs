//! Entity-level scores for IOB/IOBES tags with seqeval's default semantics
//! (`seqeval.metrics.classification_report`, non-strict mode).
//!
//! Entities are extracted conlleval-style: a tag is `<prefix>-<type>` with
//! prefix `B`, `I`, `E`, `S` (or `O`); an entity ends and a new one begins
//! whenever the type changes, so an `I-` tag after `O` or after a tag of
//! another type starts a new entity.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde::ser::SerializeMap;

use super::{MetricsError, Scores, check_len, divide, write_header, write_row};

/// One entity: its type and its first and last (inclusive) token positions.
/// For [`get_entities_nested`], positions are in the concatenation of the
/// sequences, each followed by one `O`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entity {
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

/// Splits a tag like seqeval: the prefix is the first character, the type
/// what follows the first `-` after it (the rest when there is no `-`),
/// `_` when empty.
fn split_tag(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let Some(prefix) = chars.next() else {
        return ('O', "_");
    };
    let rest = chars.as_str();
    let kind = match rest.split_once('-') {
        Some((_, after)) => after,
        None => rest,
    };
    (prefix, if kind.is_empty() { "_" } else { kind })
}

fn end_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(prev_tag, 'E' | 'S')
        || (matches!(prev_tag, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag != 'O' && prev_tag != '.' && prev_type != kind)
}

fn start_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev_tag, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != kind)
}

fn entities_of<'a>(tags: impl Iterator<Item = &'a str>) -> Vec<Entity> {
    let mut chunks = Vec::new();
    let mut prev_tag = 'O';
    let mut prev_type = String::new();
    let mut begin = 0usize;
    for (i, tag) in tags.chain(std::iter::once("O")).enumerate() {
        let (t, kind) = split_tag(tag);
        if end_of_chunk(prev_tag, t, &prev_type, kind) {
            chunks.push(Entity {
                kind: prev_type.clone(),
                start: begin,
                end: i - 1,
            });
        }
        if start_of_chunk(prev_tag, t, &prev_type, kind) {
            begin = i;
        }
        prev_tag = t;
        prev_type.clear();
        prev_type.push_str(kind);
    }
    chunks
}

/// The entities of one tag sequence (seqeval's `get_entities`).
pub fn get_entities<S: AsRef<str>>(seq: &[S]) -> Vec<Entity> {
    entities_of(seq.iter().map(|s| s.as_ref()))
}

/// The entities of several sequences, concatenated with an `O` after each
/// (seqeval's `get_entities` on a list of lists).
pub fn get_entities_nested<S: AsRef<str>>(seqs: &[Vec<S>]) -> Vec<Entity> {
    entities_of(
        seqs.iter()
            .flat_map(|s| s.iter().map(|t| t.as_ref()).chain(std::iter::once("O"))),
    )
}

/// Entity-level precision / recall / F1 per entity type and averaged, as
/// `seqeval.metrics.classification_report(y_true, y_pred)` (default mode,
/// zero division gives 0).
///
/// An entity counts as correct when its type, start and end all match.
/// F1 = 2PR / (P + R). Micro: over the summed counts; macro: the mean over
/// types (NaN when there are no entities at all, like numpy); weighted: the
/// mean weighted by support (0 when all supports are 0).
#[derive(Clone, Debug, PartialEq)]
pub struct EntityReport {
    /// Entity types seen in `y_true` or `y_pred`, sorted.
    pub types: Vec<String>,
    /// Scores per type, in `types` order.
    pub per_type: Vec<Scores>,
    pub micro_avg: Scores,
    pub macro_avg: Scores,
    pub weighted_avg: Scores,
}

fn seqeval_scores(tp: usize, true_sum: usize, pred_sum: usize) -> Scores {
    let precision = divide(tp as f64, pred_sum as f64);
    let recall = divide(tp as f64, true_sum as f64);
    let denom = precision + recall;
    let f1 = 2.0 * precision * recall / if denom == 0.0 { 1.0 } else { denom };
    Scores {
        precision,
        recall,
        f1,
        support: true_sum,
    }
}

type Spans = BTreeMap<
    String,
    (
        HashSet<(usize, usize, usize)>,
        HashSet<(usize, usize, usize)>,
    ),
>;

/// Entities of one sentence in seqeval's strict mode with the IOB2 scheme:
/// an entity is a `B-X` followed by `I-X`s; `I-` tags that do not continue
/// an entity of the same type are not entities. Positions: start inclusive,
/// end exclusive.
fn strict_iob2_entities<S: AsRef<str>>(
    seq: &[S],
) -> Result<Vec<(String, usize, usize)>, MetricsError> {
    let mut toks: Vec<(char, &str)> = Vec::with_capacity(seq.len() + 1);
    for tag in seq {
        let tag = tag.as_ref();
        let mut chars = tag.chars();
        let prefix = chars.next().unwrap_or('O');
        if !matches!(prefix, 'B' | 'I' | 'O') {
            return Err(MetricsError::InvalidTag {
                scheme: "IOB2",
                tag: tag.to_string(),
            });
        }
        let kind = chars.as_str().trim_matches('-');
        toks.push((prefix, if kind.is_empty() { "_" } else { kind }));
    }
    toks.push(('O', "_"));
    let inside = |t: (char, &str), prev: (char, &str)| {
        t.0 == 'I' && matches!(prev.0, 'B' | 'I') && t.1 == prev.1
    };
    let is_end = |t: (char, &str), prev: (char, &str)| {
        matches!(prev.0, 'B' | 'I') && (matches!(t.0, 'O' | 'B') || (t.0 == 'I' && t.1 != prev.1))
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let tok = toks[i];
        if tok.0 != 'B' {
            i += 1;
            continue;
        }
        let mut prev = tok;
        let mut end = toks.len() - 1;
        for (j, &t) in toks.iter().enumerate().skip(i + 1) {
            if inside(t, prev) {
                prev = t;
            } else {
                end = j;
                break;
            }
        }
        if is_end(toks[end], toks[end - 1]) {
            out.push((tok.1.to_string(), i, end));
        }
        i = end;
    }
    Ok(out)
}

impl EntityReport {
    /// `y_true[i]` and `y_pred[i]` are the tags of sentence `i`.
    pub fn compute<S: AsRef<str>>(
        y_true: &[Vec<S>],
        y_pred: &[Vec<S>],
    ) -> Result<Self, MetricsError> {
        check_len("entity report", y_true.len(), y_pred.len())?;
        let mut spans: Spans = BTreeMap::new();
        for e in get_entities_nested(y_true) {
            spans
                .entry(e.kind)
                .or_default()
                .0
                .insert((0, e.start, e.end));
        }
        for e in get_entities_nested(y_pred) {
            spans
                .entry(e.kind)
                .or_default()
                .1
                .insert((0, e.start, e.end));
        }
        Ok(Self::from_spans(spans))
    }

    /// seqeval's `classification_report(..., mode="strict", scheme=IOB2)`:
    /// only `B-X I-X*` runs are entities. Tags must have prefix `B`, `I` or `O`.
    pub fn compute_strict_iob2<S: AsRef<str>>(
        y_true: &[Vec<S>],
        y_pred: &[Vec<S>],
    ) -> Result<Self, MetricsError> {
        check_len("entity report", y_true.len(), y_pred.len())?;
        let mut spans: Spans = BTreeMap::new();
        for (sent, seq) in y_true.iter().enumerate() {
            for (kind, start, end) in strict_iob2_entities(seq)? {
                spans.entry(kind).or_default().0.insert((sent, start, end));
            }
        }
        for (sent, seq) in y_pred.iter().enumerate() {
            for (kind, start, end) in strict_iob2_entities(seq)? {
                spans.entry(kind).or_default().1.insert((sent, start, end));
            }
        }
        Ok(Self::from_spans(spans))
    }

    fn from_spans(spans: Spans) -> Self {
        let mut types = Vec::new();
        let mut per_type = Vec::new();
        let (mut tp_all, mut true_all, mut pred_all) = (0, 0, 0);
        for (kind, (t, p)) in spans {
            let tp = t.intersection(&p).count();
            per_type.push(seqeval_scores(tp, t.len(), p.len()));
            types.push(kind);
            tp_all += tp;
            true_all += t.len();
            pred_all += p.len();
        }
        let micro_avg = seqeval_scores(tp_all, true_all, pred_all);
        let n = per_type.len() as f64;
        let mean = |f: fn(&Scores) -> f64| per_type.iter().map(f).sum::<f64>() / n;
        let macro_avg = Scores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support: true_all,
        };
        let weighted_avg = if true_all == 0 {
            Scores {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                support: 0,
            }
        } else {
            let w = true_all as f64;
            let wmean = |f: fn(&Scores) -> f64| {
                per_type
                    .iter()
                    .map(|s| f(s) * s.support as f64)
                    .sum::<f64>()
                    / w
            };
            Scores {
                precision: wmean(|s| s.precision),
                recall: wmean(|s| s.recall),
                f1: wmean(|s| s.f1),
                support: true_all,
            }
        };
        Self {
            types,
            per_type,
            micro_avg,
            macro_avg,
            weighted_avg,
        }
    }

    /// The scores of entity type `kind`.
    pub fn get(&self, kind: &str) -> Option<&Scores> {
        self.types
            .iter()
            .position(|t| t == kind)
            .map(|i| &self.per_type[i])
    }

    /// The report in seqeval's `output_dict=True` shape, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report serialises")
    }
}

/// A text table with 4 decimals (like seqeval's text report).
impl fmt::Display for EntityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = 4;
        let name_width = self
            .types
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        let width = name_width.max("weighted avg".len()).max(digits);
        write_header(f, width)?;
        for (kind, s) in self.types.iter().zip(&self.per_type) {
            write_row(f, kind, s, width, digits)?;
        }
        writeln!(f)?;
        write_row(f, "micro avg", &self.micro_avg, width, digits)?;
        write_row(f, "macro avg", &self.macro_avg, width, digits)?;
        write_row(f, "weighted avg", &self.weighted_avg, width, digits)
    }
}

/// seqeval's `output_dict=True` shape: one entry per entity type, then
/// `micro avg`, `macro avg`, `weighted avg`.
impl Serialize for EntityReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.types.len() + 3))?;
        for (kind, sc) in self.types.iter().zip(&self.per_type) {
            m.serialize_entry(kind, sc)?;
        }
        m.serialize_entry("micro avg", &self.micro_avg)?;
        m.serialize_entry("macro avg", &self.macro_avg)?;
        m.serialize_entry("weighted avg", &self.weighted_avg)?;
        m.end()
    }
}
