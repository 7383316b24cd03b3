//! The error type of the crate.

use std::fmt;

/// Everything that can go wrong while parsing templates, building verbalizers,
/// label descriptions or demonstrations, and rendering prompts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// The template text could not be parsed.
    #[error("invalid template {template:?} at byte {position}: {message}")]
    Parse {
        /// The template text as given.
        template: String,
        /// Byte offset of the problem within the template.
        position: usize,
        /// What is wrong.
        message: String,
    },
    /// A slot of the template got no value when rendering.
    #[error("template slot `{{{slot}}}` has no value ({})", Available(available))]
    MissingSlot {
        /// The slot that had no value.
        slot: String,
        /// The names that were available.
        available: Vec<String>,
    },
    /// A slot of the template is not among the fields that will be available
    /// (see [`Template::check_slots`](crate::Template::check_slots)).
    #[error("template slot `{{{slot}}}` is unknown ({})", Available(available))]
    UnknownSlot {
        /// The unknown slot.
        slot: String,
        /// The names that are available.
        available: Vec<String>,
    },
    /// A label has no verbalizer words.
    #[error("label `{label}` has no words")]
    LabelWithoutWords {
        /// The label.
        label: String,
    },
    /// A label has no description.
    #[error("label `{label}` has no description")]
    LabelWithoutDescription {
        /// The label.
        label: String,
    },
    /// A verbalizer word is empty or only whitespace.
    #[error("label `{label}` has an empty word")]
    EmptyWord {
        /// The label.
        label: String,
    },
    /// The same word verbalizes two labels, so a prediction would be ambiguous.
    #[error("word `{word}` is used by both label `{first}` and label `{second}`")]
    DuplicateWord {
        /// The word.
        word: String,
        /// The first label using it.
        first: String,
        /// The second label using it.
        second: String,
    },
    /// A label appears twice.
    #[error("label `{label}` is given twice")]
    DuplicateLabel {
        /// The label.
        label: String,
    },
    /// A label description is empty or only whitespace.
    #[error("label `{label}` has an empty description")]
    EmptyDescription {
        /// The label.
        label: String,
    },
    /// A verbalizer or a set of label descriptions has no labels at all.
    #[error("{what} has no labels")]
    NoLabels {
        /// "verbalizer" or "label descriptions".
        what: &'static str,
    },
    /// A label is not known to a verbalizer or a set of descriptions.
    #[error("unknown label `{label}` ({})", Available(available))]
    UnknownLabel {
        /// The label.
        label: String,
        /// The labels that are known.
        available: Vec<String>,
    },
    /// An example index is out of range.
    #[error("example index {index} is out of range for {len} examples")]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// The number of examples.
        len: usize,
    },
}

/// Formats a list of available names for error messages.
struct Available<'a>(&'a [String]);

impl fmt::Display for Available<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none available");
        }
        f.write_str("available: ")?;
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}
