//! Chat messages, and the data-row formats that become conversations.
//!
//! Rows come in three shapes, each turned into a list of [`ChatMessage`]s:
//!
//! * `{"messages": [{"role": "user", "content": "..."}, ...]}` (transformers / TRL),
//! * `{"instruction": "...", "input": "...", "output": "..."}` (Alpaca; `input` optional),
//! * `{"conversations": [{"from": "human", "value": "..."}, ...]}` (ShareGPT / LLaVA).

use std::fmt;

use minijinja::Value;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ChatError;

/// A value a template can read: strings, numbers, booleans, none, lists and maps, keeping the order
/// of map keys (`tojson` prints them in that order). Build one from JSON with
/// `serde_json::from_str::<TemplateValue>(text)`, or with `TemplateValue::from(...)`.
pub type TemplateValue = Value;

/// The role of a message that holds a response to learn from.
pub const ASSISTANT_ROLE: &str = "assistant";

/// One message of a conversation, as transformers' chat templates see it: a dict with `role`,
/// `content` and any other keys (`tool_calls`, `name`, `reasoning_content`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, … (templates decide which they accept).
    pub role: String,
    /// The text of the message. A JSON `null` content reads as the empty string.
    pub content: String,
    /// Other keys of the message, in order.
    pub extra: Vec<(String, TemplateValue)>,
}

impl ChatMessage {
    /// A message with a role and content and nothing else.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: Vec::new(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(ASSISTANT_ROLE, content)
    }

    /// Adds (or replaces) another key of the message.
    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<TemplateValue>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.extra.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.extra.push((key, value)),
        }
        self
    }

    /// Another key of the message, if present.
    pub fn field(&self, key: &str) -> Option<&TemplateValue> {
        self.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether this message is a response to learn from.
    pub fn is_assistant(&self) -> bool {
        self.role == ASSISTANT_ROLE
    }

    /// The message as the template sees it. Like transformers, a message with reasoning under
    /// `reasoning_content`, `thinking` or `reasoning` also gets it under `thinking` and
    /// `reasoning_content`, the names templates read.
    pub(crate) fn to_template_value(&self) -> Value {
        let reasoning = ["reasoning_content", "thinking", "reasoning"]
            .iter()
            .find_map(|key| {
                self.field(key)
                    .filter(|v| !v.is_none() && !v.is_undefined())
            })
            .cloned();
        let mut pairs: Vec<(String, Value)> = Vec::with_capacity(self.extra.len() + 4);
        if let Some(reasoning) = &reasoning {
            pairs.push(("thinking".into(), reasoning.clone()));
        }
        let mut set = |key: &str, value: Value| match pairs.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => pairs.push((key.to_owned(), value)),
        };
        set("role", Value::from(self.role.as_str()));
        set("content", Value::from(self.content.as_str()));
        for (key, value) in &self.extra {
            set(key, value.clone());
        }
        if let Some(reasoning) = reasoning {
            set("reasoning_content", reasoning);
        }
        Value::from_pairs(pairs)
    }
}

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2 + self.extra.len()))?;
        map.serialize_entry("role", &self.role)?;
        map.serialize_entry("content", &self.content)?;
        for (key, value) in &self.extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = ChatMessage;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object with `role` and `content`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatMessage, A::Error> {
        let mut role = None;
        let mut content = None;
        let mut extra = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "role" => role = Some(map.next_value::<String>()?),
                "content" => {
                    content = Some(map.next_value::<Option<String>>()?.unwrap_or_default())
                }
                _ => extra.push((key, map.next_value::<Value>()?)),
            }
        }
        let role = role.ok_or_else(|| de::Error::missing_field("role"))?;
        let content = content.ok_or_else(|| de::Error::missing_field("content"))?;
        Ok(ChatMessage {
            role,
            content,
            extra,
        })
    }
}

/// A conversation from one data row (see the module docs for the accepted shapes), parsed from
/// its JSON text so that the order of keys inside messages is kept.
pub fn conversation_from_json(row: &str) -> Result<Vec<ChatMessage>, ChatError> {
    let value: Value = serde_json::from_str(row).map_err(|e| ChatError::InvalidRow {
        message: format!("not JSON: {e}"),
    })?;
    conversation_from_value(&value)
}

/// A conversation from one data row already parsed as JSON.
pub fn conversation_from_row(row: &serde_json::Value) -> Result<Vec<ChatMessage>, ChatError> {
    // serde_json::Value is a plain data tree: converting it through serde cannot fail.
    let value = Value::deserialize(row).map_err(|e| ChatError::InvalidRow {
        message: e.to_string(),
    })?;
    conversation_from_value(&value)
}

fn conversation_from_value(row: &Value) -> Result<Vec<ChatMessage>, ChatError> {
    let invalid = |message: String| ChatError::InvalidRow { message };
    if row.kind() != minijinja::value::ValueKind::Map {
        return Err(invalid(format!(
            "expected a JSON object, found {}",
            row.kind()
        )));
    }
    let field = |key: &str| row.get_attr(key).ok().filter(|v| !v.is_undefined());
    if let Some(messages) = field("messages") {
        return list(&messages, "messages")?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                ChatMessage::deserialize(m).map_err(|e| {
                    invalid(format!(
                        "`messages[{i}]`: {}",
                        e.detail().map_or_else(|| e.to_string(), str::to_owned)
                    ))
                })
            })
            .collect();
    }
    if let Some(turns) = field("conversations") {
        return list(&turns, "conversations")?
            .iter()
            .enumerate()
            .map(|(i, turn)| sharegpt_turn(turn, i))
            .collect();
    }
    if field("instruction").is_some() || field("output").is_some() {
        let text = |key: &str, required: bool| -> Result<String, ChatError> {
            match field(key) {
                Some(v) if v.is_none() => Ok(String::new()),
                Some(v) => v.as_str().map(str::to_owned).ok_or_else(|| {
                    invalid(format!("`{key}` must be a string, found {}", v.kind()))
                }),
                None if required => Err(invalid(format!("missing `{key}`"))),
                None => Ok(String::new()),
            }
        };
        let instruction = text("instruction", true)?;
        let input = text("input", false)?;
        let output = text("output", true)?;
        let mut messages = Vec::with_capacity(3);
        let system = text("system", false)?;
        if !system.is_empty() {
            messages.push(ChatMessage::system(system));
        }
        messages.push(instruction_message(&instruction, &input));
        messages.push(ChatMessage::assistant(output));
        return Ok(messages);
    }
    let keys: Vec<String> = row
        .try_iter()
        .map(|it| it.map(|k| k.to_string()).collect())
        .unwrap_or_default();
    Err(invalid(format!(
        "expected `messages`, `conversations` or `instruction`/`output` (found keys: {})",
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(", ")
        }
    )))
}

/// The user message of an Alpaca-style row: the instruction, then a blank line and the input if
/// there is one. The two parts are also kept as `instruction`/`input` keys, which the Alpaca
/// format reads to lay them out in its own sections (other templates ignore them).
pub fn instruction_message(instruction: &str, input: &str) -> ChatMessage {
    let content = if input.trim().is_empty() {
        instruction.to_owned()
    } else {
        format!("{instruction}\n\n{input}")
    };
    ChatMessage::user(content)
        .with_field("instruction", instruction)
        .with_field("input", input)
}

fn list(value: &Value, key: &str) -> Result<Vec<Value>, ChatError> {
    if value.kind() != minijinja::value::ValueKind::Seq {
        return Err(ChatError::InvalidRow {
            message: format!("`{key}` must be a list, found {}", value.kind()),
        });
    }
    Ok(value.try_iter().map(|it| it.collect()).unwrap_or_default())
}

/// One ShareGPT turn: `from` (human/user, gpt/assistant/model, system, tool…) and `value`.
fn sharegpt_turn(turn: &Value, index: usize) -> Result<ChatMessage, ChatError> {
    let invalid = |message: String| ChatError::InvalidRow {
        message: format!("`conversations[{index}]`: {message}"),
    };
    let get = |key: &str| turn.get_attr(key).ok().filter(|v| !v.is_undefined());
    let from = get("from").ok_or_else(|| invalid("missing `from`".into()))?;
    let from = from
        .as_str()
        .ok_or_else(|| invalid("`from` must be a string".into()))?;
    let value = get("value").ok_or_else(|| invalid("missing `value`".into()))?;
    let value = value
        .as_str()
        .ok_or_else(|| invalid("`value` must be a string".into()))?;
    let role = match from {
        "human" | "user" => "user",
        "gpt" | "assistant" | "model" | "bot" => ASSISTANT_ROLE,
        "system" => "system",
        other => other,
    };
    Ok(ChatMessage::new(role, value))
}
