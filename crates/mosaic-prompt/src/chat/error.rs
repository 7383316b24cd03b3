//! The error type of chat templates and conversations.

use std::fmt;

/// Everything that can go wrong while loading or rendering a chat template, working out
/// response spans, or reading a conversation from a data row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The template does not parse.
    #[error("{origin}: line {line}: {message}")]
    TemplateSyntax {
        /// Where the template came from (a file, or "chat template").
        origin: String,
        /// 1-based line of the template.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The template failed while rendering a conversation (including `raise_exception`).
    #[error("{origin}{}{}: {message}", AtLine(*line), AtMessage(*message_index))]
    Render {
        /// Where the template came from.
        origin: String,
        /// 1-based line of the template, where known.
        line: Option<usize>,
        /// Index of the first message whose inclusion makes rendering fail, where known.
        message_index: Option<usize>,
        /// What went wrong (for `raise_exception`, the template's own message).
        message: String,
    },
    /// A conversation meant for training has no assistant message to learn from.
    #[error("conversation has no assistant turn (roles: {})", Roles(roles))]
    NoAssistantTurn {
        /// The roles the conversation has, in order.
        roles: Vec<String>,
    },
    /// The response of an assistant message cannot be located in the rendered conversation.
    #[error("{origin}: cannot locate the response of message {message_index}: {reason}")]
    ResponseSpan {
        /// Where the template came from.
        origin: String,
        /// Index of the assistant message.
        message_index: usize,
        /// Why.
        reason: String,
    },
    /// A model folder or configuration file could not be used.
    #[error("{path}: {message}")]
    Config {
        /// The file or folder at fault.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A data row is not a conversation in a known format.
    #[error("invalid conversation row: {message}")]
    InvalidRow {
        /// What is wrong, naming the key at fault.
        message: String,
    },
    /// An instruction format name is not known.
    #[error("unknown instruction format `{name}` (expected alpaca, chatml or chat_template)")]
    UnknownFormat {
        /// The name given.
        name: String,
    },
}

struct AtLine(Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ": line {line}"),
            None => Ok(()),
        }
    }
}

struct AtMessage(Option<usize>);

impl fmt::Display for AtMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(index) => write!(f, " (rendering message {index})"),
            None => f.write_str(" (after the last message)"),
        }
    }
}

struct Roles<'a>(&'a [String]);

impl fmt::Display for Roles<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.0.join(", "))
    }
}
