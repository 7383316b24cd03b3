//! [`ChatTemplate`]: a Hugging Face `chat_template` rendered as transformers renders it.
//!
//! transformers compiles templates in an `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)` with the `loopcontrols` extension, its own `tojson`, `raise_exception`
//! and `strftime_now`, and renders them with `messages`, `tools`, `documents`,
//! `add_generation_prompt`, the tokenizer's special tokens (`bos_token`, `eos_token`, …) and any
//! extra keyword arguments. This module sets minijinja up the same way, with Python's string
//! methods (`.strip()`, `.startswith()`, …) from `minijinja-contrib`'s pycompat and Python's way
//! of printing values.

use std::cell::Cell;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Once;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};

use super::ChatError;
use super::clock::{strftime, unix_now};
use super::message::{ChatMessage, TemplateValue};
use super::python::{python_formatter, string_filter, tojson_filter};

/// The name of the compiled template inside its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// The special tokens transformers passes to templates (its `special_tokens_map`).
pub const SPECIAL_TOKEN_NAMES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A compiled chat template together with what it is rendered with: special tokens, tools and
/// extra variables.
///
/// ```
/// use mosaic_prompt::{ChatMessage, ChatTemplate};
///
/// let template = ChatTemplate::new(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}{{ eos_token }}{% endfor %}\
///      {% if add_generation_prompt %}<|assistant|>{% endif %}",
/// )?
/// .with_special_token("eos_token", "</s>");
/// let chat = [ChatMessage::user(" Hi "), ChatMessage::assistant("Hello!")];
/// assert_eq!(template.render(&chat[..1], true)?, "<|user|>Hi</s><|assistant|>");
///
/// // What the trainer counts in the loss: the assistant's part, end-of-turn token included.
/// let rendered = template.render_for_training(&chat)?;
/// assert_eq!(rendered.response_texts(), vec!["Hello!</s>"]);
/// # Ok::<(), mosaic_prompt::ChatError>(())
/// ```
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    origin: String,
    special_tokens: Vec<(String, String)>,
    variables: Vec<(String, TemplateValue)>,
    tools: Option<Vec<TemplateValue>>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("source", &self.source)
            .field("special_tokens", &self.special_tokens)
            .field("variables", &self.variables)
            .field("tools", &self.tools)
            .finish()
    }
}

/// A marker on errors raised by the template's own `raise_exception(message)`, whose message is
/// shown as written.
#[derive(Debug)]
struct RaisedByTemplate;

impl fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for RaisedByTemplate {}

impl ChatTemplate {
    /// Compiles a template. Syntax errors name the line.
    pub fn new(source: impl Into<String>) -> Result<Self, ChatError> {
        Self::with_origin(source, "chat template")
    }

    /// Compiles a template, naming where it came from (a file path) in errors.
    pub fn with_origin(
        source: impl Into<String>,
        origin: impl Into<String>,
    ) -> Result<Self, ChatError> {
        let source = source.into();
        let origin = origin.into();
        let mut env = Environment::new();
        env.set_debug(false);
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| syntax_error(&origin, &e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson_filter);
        env.add_filter("string", string_filter);
        env.add_function("raise_exception", raise_exception);
        let mut template = Self {
            env,
            source: String::new(),
            origin,
            special_tokens: Vec::new(),
            variables: Vec::new(),
            tools: None,
        };
        template.set_clock(None);
        template
            .env
            .add_template_owned(TEMPLATE_NAME, without_generation_tags(&source))
            .map_err(|e| syntax_error(&template.origin, &e))?;
        template.source = source;
        Ok(template)
    }

    /// The template of a model: `chat_template` of `tokenizer_config.json` (a string, or the
    /// `default` of a list of named templates), or `chat_template.jinja` beside it, which wins as
    /// in transformers. The special tokens come from `tokenizer_config.json`.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self, ChatError> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let jinja_path = dir.join("chat_template.jinja");
        let config = if config_path.is_file() {
            Some(read_json(&config_path)?)
        } else {
            None
        };
        let (source, origin) = if jinja_path.is_file() {
            let text =
                std::fs::read_to_string(&jinja_path).map_err(|e| config_error(&jinja_path, e))?;
            (text, jinja_path.display().to_string())
        } else if let Some(config) = &config {
            let origin = config_path.display().to_string();
            (template_from_config(config, &origin, None)?, origin)
        } else {
            return Err(ChatError::Config {
                path: dir.display().to_string(),
                message: "no chat template: neither chat_template.jinja nor tokenizer_config.json is there".into(),
            });
        };
        let mut template = Self::with_origin(source, origin)?;
        if let Some(config) = &config {
            template.special_tokens = special_tokens_from_config(config);
        }
        Ok(template)
    }

    /// The template of a `tokenizer_config.json` text (its special tokens included). `name`
    /// picks one of a list of named templates; `None` takes the single one or `default`.
    pub fn from_tokenizer_config(json: &str, name: Option<&str>) -> Result<Self, ChatError> {
        let origin = "tokenizer_config.json";
        let config: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ChatError::Config {
                path: origin.into(),
                message: format!("not JSON: {e}"),
            })?;
        let source = template_from_config(&config, origin, name)?;
        let mut template = Self::with_origin(source, origin)?;
        template.special_tokens = special_tokens_from_config(&config);
        Ok(template)
    }

    /// Sets a special token variable (`bos_token`, `eos_token`, …).
    pub fn with_special_token(mut self, name: impl Into<String>, token: impl Into<String>) -> Self {
        set_pair(&mut self.special_tokens, name.into(), token.into());
        self
    }

    /// Takes the special tokens of a `tokenizer_config.json` in a model folder, if it has one
    /// (for the built-in formats, which have no file of their own).
    pub fn with_special_tokens_from_dir(
        mut self,
        dir: impl AsRef<Path>,
    ) -> Result<Self, ChatError> {
        let path = dir.as_ref().join("tokenizer_config.json");
        if path.is_file() {
            for (name, token) in special_tokens_from_config(&read_json(&path)?) {
                set_pair(&mut self.special_tokens, name, token);
            }
        }
        Ok(self)
    }

    /// Sets an extra template variable, like a keyword argument of `apply_chat_template`
    /// (`enable_thinking`, `date_string`, …). It overrides a special token of the same name.
    pub fn with_variable(
        mut self,
        name: impl Into<String>,
        value: impl Into<TemplateValue>,
    ) -> Self {
        set_pair(&mut self.variables, name.into(), value.into());
        self
    }

    /// Sets the tool schemas (`tools`; without this, `tools` is `none` as in transformers).
    pub fn with_tools(mut self, tools: Vec<TemplateValue>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Makes `strftime_now` print this Unix time (UTC) instead of the current time, for
    /// reproducible prompts.
    pub fn with_fixed_time(mut self, unix_seconds: i64) -> Self {
        self.set_clock(Some(unix_seconds));
        self
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from, as errors name it.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A special token's text, if set.
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }

    /// `eos_token`, if set.
    pub fn eos_token(&self) -> Option<&str> {
        self.special_token("eos_token")
    }

    /// `bos_token`, if set.
    pub fn bos_token(&self) -> Option<&str> {
        self.special_token("bos_token")
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the assistant's
    /// reply should begin. Errors name the template line and the first message whose inclusion
    /// makes rendering fail.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_raw(messages, add_generation_prompt)
            .map_err(|error| {
                // Find the message that breaks it: the shortest failing prefix.
                let message_index = (1..=messages.len())
                    .find(|&n| self.render_raw(&messages[..n], false).is_err())
                    .map(|n| n - 1);
                self.render_error(&error, message_index)
            })
    }

    /// Renders without error decoration.
    pub(crate) fn render_raw(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let template = self.env.get_template(TEMPLATE_NAME)?;
        let mut context: Vec<(String, Value)> =
            Vec::with_capacity(self.special_tokens.len() + self.variables.len() + 4);
        for (name, token) in &self.special_tokens {
            context.push((name.clone(), Value::from(token.as_str())));
        }
        for (name, value) in &self.variables {
            set_pair(&mut context, name.clone(), value.clone());
        }
        let messages: Vec<Value> = messages
            .iter()
            .map(ChatMessage::to_template_value)
            .collect();
        let tools = match &self.tools {
            Some(tools) => Value::from(tools.clone()),
            None => Value::from(()),
        };
        set_pair(&mut context, "messages".into(), Value::from(messages));
        set_pair(&mut context, "tools".into(), tools);
        set_pair(&mut context, "documents".into(), Value::from(()));
        set_pair(
            &mut context,
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        render_guarded(|| template.render(Value::from_pairs(context)))
    }

    /// A render error as a [`ChatError`], with the template's line and the message index.
    pub(crate) fn render_error(&self, error: &Error, message_index: Option<usize>) -> ChatError {
        ChatError::Render {
            origin: self.origin.clone(),
            line: error.line().filter(|&line| line > 0),
            message_index,
            message: error_message(error),
        }
    }

    fn set_clock(&mut self, fixed: Option<i64>) {
        self.env.add_function("strftime_now", move |format: &str| {
            strftime(format, fixed.unwrap_or_else(unix_now))
        });
    }
}

thread_local! {
    /// Whether this thread is inside [`render_guarded`], so the panic hook knows a minijinja panic is handled.
    static RENDERING: Cell<bool> = const { Cell::new(false) };
}

/// Runs a minijinja render, turning a panic raised inside minijinja into an error.
///
/// minijinja 3.0.5 panics (an index past the end in `value::ops::range_step_backwards`) when a template slices
/// an empty string or list with a negative step: `''[::-1]`, or `messages[::-1]` over no messages, which
/// Qwen-style templates do (found by the `chat_template` fuzz target). A user's template must give an error,
/// not a crash. While rendering, the panic hook stays silent for panics located in minijinja's own source, so
/// no panic text reaches the user; any other panic is reported by the previous hook as before.
fn render_guarded(render: impl FnOnce() -> Result<String, Error>) -> Result<String, Error> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_engine = RENDERING.with(Cell::get)
                && info
                    .location()
                    .is_some_and(|at| at.file().contains("minijinja"));
            if !in_engine {
                previous(info);
            }
        }));
    });
    let was_rendering = RENDERING.with(|r| r.replace(true));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(render));
    RENDERING.with(|r| r.set(was_rendering));
    outcome.unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".to_owned());
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the template engine failed: {reason}"),
        ))
    })
}

/// `raise_exception(message)`: fails the render with the template's message.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message).with_source(RaisedByTemplate))
}

/// The message of a minijinja error, without its location (reported separately). A chain of
/// errors (a failing macro or filter) is joined with ": ".
fn error_message(error: &Error) -> String {
    let mut parts = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if err.is::<RaisedByTemplate>() {
            break;
        }
        match err.downcast_ref::<Error>() {
            Some(e) => {
                let raised =
                    std::error::Error::source(e).is_some_and(|s| s.is::<RaisedByTemplate>());
                match (e.detail(), raised) {
                    (Some(detail), true) => parts.push(detail.to_owned()),
                    (Some(detail), false) => parts.push(format!("{}: {detail}", e.kind())),
                    (None, _) => parts.push(e.kind().to_string()),
                }
            }
            None => parts.push(err.to_string()),
        }
        current = err.source();
    }
    parts.join(": ")
}

fn syntax_error(origin: &str, error: &Error) -> ChatError {
    ChatError::TemplateSyntax {
        origin: origin.to_owned(),
        line: error.line().unwrap_or(1),
        message: error_message(error),
    }
}

/// transformers' `{% generation %}…{% endgeneration %}` tags (which mark assistant text for its
/// assistant masks) are not Jinja. They become `{% if true %}…{% endif %}`, block tags with the
/// same whitespace handling, so templates that carry them render the same text.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{%") {
        out.push_str(&rest[..open]);
        let tag = &rest[open..];
        // The closing `%}` comes after the opening `{%`: in `{%}` the two overlap.
        let Some(close) = tag[2..].find("%}").map(|i| i + 2) else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..close];
        let body = inner
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+']);
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(keyword) => {
                let lead = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
                let trail = &inner[inner.trim_end_matches(['-', '+']).len()..];
                out.push_str(&format!("{{%{lead} {keyword} {trail}%}}"));
            }
            None => out.push_str(&tag[..close + 2]),
        }
        rest = &tag[close + 2..];
    }
    out.push_str(rest);
    out
}

fn set_pair<V>(pairs: &mut Vec<(String, V)>, name: String, value: V) {
    match pairs.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => pairs.push((name, value)),
    }
}

fn config_error(path: &Path, error: impl fmt::Display) -> ChatError {
    ChatError::Config {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, ChatError> {
    let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| config_error(path, format!("not JSON: {e}")))
}

/// `chat_template` of a tokenizer config: a string, or a list of `{"name", "template"}`.
fn template_from_config(
    config: &serde_json::Value,
    origin: &str,
    name: Option<&str>,
) -> Result<String, ChatError> {
    let error = |message: String| ChatError::Config {
        path: origin.to_owned(),
        message,
    };
    match config.get("chat_template") {
        Some(serde_json::Value::String(text)) if name.is_none_or(|n| n == "default") => {
            Ok(text.clone())
        }
        Some(serde_json::Value::String(_)) => Err(error(format!(
            "`chat_template` is a single template, not one named `{}`",
            name.unwrap_or_default()
        ))),
        Some(serde_json::Value::Array(named)) => {
            let templates: Vec<(&str, &str)> = named
                .iter()
                .filter_map(|t| Some((t.get("name")?.as_str()?, t.get("template")?.as_str()?)))
                .collect();
            let wanted = name.unwrap_or("default");
            templates
                .iter()
                .find(|(n, _)| *n == wanted)
                .or(if name.is_none() && templates.len() == 1 {
                    templates.first()
                } else {
                    None
                })
                .map(|(_, t)| (*t).to_owned())
                .ok_or_else(|| {
                    let names: Vec<&str> = templates.iter().map(|(n, _)| *n).collect();
                    error(format!(
                        "`chat_template` has no template named `{wanted}` (it has: {})",
                        names.join(", ")
                    ))
                })
        }
        Some(other) => Err(error(format!(
            "`chat_template` must be a string or a list, found {other}"
        ))),
        None => Err(error("no `chat_template`".into())),
    }
}

/// The named special tokens of a tokenizer config, given as strings or as AddedToken objects
/// (`{"content": "<s>", ...}`).
fn special_tokens_from_config(config: &serde_json::Value) -> Vec<(String, String)> {
    SPECIAL_TOKEN_NAMES
        .iter()
        .filter_map(|name| {
            let token = match config.get(*name)? {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Object(object) => object.get("content")?.as_str()?.to_owned(),
                _ => return None,
            };
            Some(((*name).to_owned(), token))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{ChatTemplate, without_generation_tags};

    #[test]
    fn templates_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            without_generation_tags(
                "a{% generation %}b{%- endgeneration -%}c{% if x %}{% endif %}"
            ),
            "a{% if true %}b{%- endif -%}c{% if x %}{% endif %}"
        );
        assert_eq!(
            without_generation_tags("{{ x }} {% unterminated"),
            "{{ x }} {% unterminated"
        );
    }
}
