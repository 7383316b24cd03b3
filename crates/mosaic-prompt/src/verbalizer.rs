//! Verbalizers (label → words) and label descriptions (label → sentence).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PromptError;

/// A string or a list of strings, as accepted per label when deserializing a
/// [`Verbalizer`].
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single word.
    One(String),
    /// Several words.
    Many(Vec<String>),
}

impl From<OneOrMany> for Vec<String> {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Maps each label to one or more words that stand for it at the mask
/// position (`positive → ["great", "good"]`).
///
/// Labels are kept sorted by name, which is also the order that
/// `mosaic-data` gives collected labels. Every label has at least one word, no
/// word is empty, and no word stands for two labels.
///
/// Deserializes from a map whose values are a string or a list of strings,
/// for instance this TOML:
///
/// ```toml
/// [verbalizer]
/// positive = ["great", "good"]
/// negative = "terrible"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, OneOrMany>",
    into = "BTreeMap<String, Vec<String>>"
)]
pub struct Verbalizer {
    entries: BTreeMap<String, Vec<String>>,
}

impl Verbalizer {
    /// Builds a verbalizer from `(label, words)` pairs.
    ///
    /// Fails when there are no labels, a label is given twice, a label has no
    /// words, a word is empty, or one word is used by two labels.
    pub fn new<L, W>(entries: impl IntoIterator<Item = (L, Vec<W>)>) -> Result<Self, PromptError>
    where
        L: Into<String>,
        W: Into<String>,
    {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for (label, words) in entries {
            let label = label.into();
            if map.contains_key(&label) {
                return Err(PromptError::DuplicateLabel { label });
            }
            let words: Vec<String> = words.into_iter().map(Into::into).collect();
            if words.is_empty() {
                return Err(PromptError::LabelWithoutWords { label });
            }
            let mut kept: Vec<String> = Vec::with_capacity(words.len());
            for word in words {
                if word.trim().is_empty() {
                    return Err(PromptError::EmptyWord { label });
                }
                if let Some(first) = owner.get(&word) {
                    if *first == label {
                        continue; // the same word twice for one label: keep once
                    }
                    return Err(PromptError::DuplicateWord {
                        word,
                        first: first.clone(),
                        second: label,
                    });
                }
                owner.insert(word.clone(), label.clone());
                kept.push(word);
            }
            map.insert(label, kept);
        }
        if map.is_empty() {
            return Err(PromptError::NoLabels { what: "verbalizer" });
        }
        Ok(Self { entries: map })
    }

    /// The labels, sorted.
    pub fn labels(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a verbalizer has at least one label.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The words of `label`, or `None` for an unknown label.
    pub fn words(&self, label: &str) -> Option<&[String]> {
        self.entries.get(label).map(Vec::as_slice)
    }

    /// The words of `label`, or an error naming the label and the known ones.
    pub fn try_words(&self, label: &str) -> Result<&[String], PromptError> {
        self.words(label).ok_or_else(|| PromptError::UnknownLabel {
            label: label.to_owned(),
            available: self.entries.keys().cloned().collect(),
        })
    }

    /// The first word of `label` (the one used in demonstrations).
    pub fn first_word(&self, label: &str) -> Result<&str, PromptError> {
        Ok(self.try_words(label)?[0].as_str())
    }

    /// The label that `word` stands for, if any.
    pub fn label_of(&self, word: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, words)| words.iter().any(|w| w == word))
            .map(|(label, _)| label.as_str())
    }

    /// Iterates over `(label, words)` in label order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries.iter().map(|(l, w)| (l.as_str(), w.as_slice()))
    }

    /// The words of each label of `labels`, in that order (for instance the
    /// label set of a data set, whose order gives class ids).
    ///
    /// Fails with [`PromptError::LabelWithoutWords`] for a label that the
    /// verbalizer does not cover, and with [`PromptError::UnknownLabel`] for a
    /// verbalizer label that is not in `labels`.
    pub fn aligned<S: AsRef<str>>(&self, labels: &[S]) -> Result<Vec<&[String]>, PromptError> {
        for label in self.entries.keys() {
            if !labels.iter().any(|l| l.as_ref() == label) {
                return Err(PromptError::UnknownLabel {
                    label: label.clone(),
                    available: labels.iter().map(|l| l.as_ref().to_owned()).collect(),
                });
            }
        }
        labels
            .iter()
            .map(|l| {
                self.words(l.as_ref())
                    .ok_or_else(|| PromptError::LabelWithoutWords {
                        label: l.as_ref().to_owned(),
                    })
            })
            .collect()
    }
}

impl TryFrom<BTreeMap<String, OneOrMany>> for Verbalizer {
    type Error = PromptError;

    fn try_from(map: BTreeMap<String, OneOrMany>) -> Result<Self, Self::Error> {
        Self::new(map.into_iter().map(|(l, w)| (l, Vec::<String>::from(w))))
    }
}

impl From<Verbalizer> for BTreeMap<String, Vec<String>> {
    fn from(v: Verbalizer) -> Self {
        v.entries
    }
}

/// Maps each label to a description sentence, for zero-shot classification
/// with sentence encoders (`positive → "This text expresses a positive
/// opinion."`).
///
/// Labels are kept sorted. Deserializes from a map of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct LabelDescriptions {
    entries: BTreeMap<String, String>,
}

impl LabelDescriptions {
    /// Builds descriptions from `(label, description)` pairs.
    ///
    /// Fails when there are no labels, a label is given twice or a description
    /// is empty.
    pub fn new<L, D>(entries: impl IntoIterator<Item = (L, D)>) -> Result<Self, PromptError>
    where
        L: Into<String>,
        D: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (label, description) in entries {
            let label = label.into();
            let description = description.into();
            if description.trim().is_empty() {
                return Err(PromptError::EmptyDescription { label });
            }
            if map.contains_key(&label) {
                return Err(PromptError::DuplicateLabel { label });
            }
            map.insert(label, description);
        }
        if map.is_empty() {
            return Err(PromptError::NoLabels {
                what: "label descriptions",
            });
        }
        Ok(Self { entries: map })
    }

    /// The labels, sorted.
    pub fn labels(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: there is at least one label.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The description of `label`, or `None` for an unknown label.
    pub fn description(&self, label: &str) -> Option<&str> {
        self.entries.get(label).map(String::as_str)
    }

    /// The description of `label`, or an error naming the known labels.
    pub fn try_description(&self, label: &str) -> Result<&str, PromptError> {
        self.description(label)
            .ok_or_else(|| PromptError::UnknownLabel {
                label: label.to_owned(),
                available: self.entries.keys().cloned().collect(),
            })
    }

    /// Iterates over `(label, description)` in label order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(l, d)| (l.as_str(), d.as_str()))
    }

    /// The description of each label of `labels`, in that order.
    ///
    /// Fails with [`PromptError::LabelWithoutDescription`] for a label without a
    /// description and with [`PromptError::UnknownLabel`] for a described
    /// label that is not in `labels`.
    pub fn aligned<S: AsRef<str>>(&self, labels: &[S]) -> Result<Vec<&str>, PromptError> {
        for label in self.entries.keys() {
            if !labels.iter().any(|l| l.as_ref() == label) {
                return Err(PromptError::UnknownLabel {
                    label: label.clone(),
                    available: labels.iter().map(|l| l.as_ref().to_owned()).collect(),
                });
            }
        }
        labels
            .iter()
            .map(|l| {
                self.description(l.as_ref())
                    .ok_or_else(|| PromptError::LabelWithoutDescription {
                        label: l.as_ref().to_owned(),
                    })
            })
            .collect()
    }
}

impl TryFrom<BTreeMap<String, String>> for LabelDescriptions {
    type Error = PromptError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::new(map)
    }
}

impl From<LabelDescriptions> for BTreeMap<String, String> {
    fn from(d: LabelDescriptions) -> Self {
        d.entries
    }
}
