//! Exact match of generated text against a reference answer, overall and per group (e.g. the task type of an
//! instruction).
//!
//! Normalisation is deliberately small: leading and trailing whitespace is trimmed from both sides and nothing
//! else — case, inner spaces and punctuation all count, so "Paris" ≠ "paris" and "14" ≠ "14.".

use std::collections::BTreeMap;

use serde::Serialize;

use super::{MetricsError, check_len, divide};

/// The text exact match compares: `text` without leading and trailing whitespace.
pub fn normalize(text: &str) -> &str {
    text.trim()
}

/// Whether `prediction` equals `reference` once both are [`normalize`]d.
pub fn is_match(prediction: &str, reference: &str) -> bool {
    normalize(prediction) == normalize(reference)
}

/// Exact match over a set, and per group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExactMatch {
    /// The fraction of predictions that match their reference (0 when there are none).
    pub exact_match: f64,
    /// How many predictions were scored.
    pub count: usize,
    /// Per group: the fraction that match and how many there were. Empty when no item has a group.
    pub by_group: BTreeMap<String, GroupScore>,
}

/// Exact match within one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GroupScore {
    pub exact_match: f64,
    pub count: usize,
}

impl ExactMatch {
    /// Scores `predictions` against `references`; `groups[i]` (if any) names the group of item `i`.
    pub fn compute<P: AsRef<str>, R: AsRef<str>>(
        predictions: &[P],
        references: &[R],
        groups: &[Option<String>],
    ) -> Result<Self, MetricsError> {
        check_len("exact match", references.len(), predictions.len())?;
        check_len("exact match groups", references.len(), groups.len())?;
        let mut hits = 0usize;
        let mut per_group: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for ((p, r), g) in predictions.iter().zip(references).zip(groups) {
            let hit = is_match(p.as_ref(), r.as_ref());
            hits += usize::from(hit);
            if let Some(g) = g {
                let entry = per_group.entry(g.clone()).or_default();
                entry.0 += usize::from(hit);
                entry.1 += 1;
            }
        }
        Ok(ExactMatch {
            exact_match: divide(hits as f64, references.len() as f64),
            count: references.len(),
            by_group: per_group
                .into_iter()
                .map(|(g, (hits, count))| {
                    let exact_match = divide(hits as f64, count as f64);
                    (g, GroupScore { exact_match, count })
                })
                .collect(),
        })
    }
}
