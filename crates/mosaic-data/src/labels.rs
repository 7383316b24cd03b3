//! Label sets: names ↔ class ids.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// An ordered set of label names; a label's class id is its position.
///
/// When a data set is loaded without an explicit list, the labels found in the
/// data are **sorted** (byte order of their names), so that class ids do not
/// depend on the order of the records. An explicit list keeps its order.
///
/// Serializes as a list of names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct LabelSet {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl LabelSet {
    /// A label set in the given order.
    ///
    /// Fails when it is empty or holds an empty or duplicate name.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Result<Self> {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            return Err(DataError::InvalidLabels("no labels".into()));
        }
        let mut index = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(DataError::InvalidLabels("empty label name".into()));
            }
            if index.insert(name.clone(), i).is_some() {
                return Err(DataError::InvalidLabels(format!(
                    "label `{name}` is given twice"
                )));
            }
        }
        Ok(Self { names, index })
    }

    /// The distinct names of `names`, sorted. Fails when there are none.
    pub fn collect_sorted<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut v: Vec<String> = names.into_iter().map(|s| s.as_ref().to_owned()).collect();
        v.sort();
        v.dedup();
        Self::new(v)
    }

    /// The class id of `name`.
    pub fn id(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The name of class `id`.
    pub fn name(&self, id: usize) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// All names, in class-id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a label set has at least one label.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

impl TryFrom<Vec<String>> for LabelSet {
    type Error = DataError;

    fn try_from(v: Vec<String>) -> Result<Self> {
        Self::new(v)
    }
}

impl From<LabelSet> for Vec<String> {
    fn from(l: LabelSet) -> Self {
        l.names
    }
}
