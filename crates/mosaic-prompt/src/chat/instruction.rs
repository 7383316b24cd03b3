//! [`InstructionFormat`]: how instruction/response pairs become text — Alpaca, ChatML, or the
//! model's own chat template. The first two are chat templates too, so they render, check and
//! locate responses exactly as a model's template does.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ChatError;
use super::template::ChatTemplate;

/// The Alpaca format (the alpaca-lora layout: `### Response:` followed by a newline), as a chat
/// template. A system message replaces the standard preamble; a user message with `instruction`
/// and `input` keys (see [`instruction_message`](crate::instruction_message)) gets an `### Input:`
/// section; `eos_token` closes each response.
pub const ALPACA_TEMPLATE: &str = concat!(
    "{%- set with_input = 'Below is an instruction that describes a task, paired with an input that provides ",
    "further context. Write a response that appropriately completes the request.' -%}\n",
    "{%- set without_input = 'Below is an instruction that describes a task. Write a response that ",
    "appropriately completes the request.' -%}\n",
    "{%- if messages and messages[0].role == 'system' -%}\n",
    "    {%- set preamble = messages[0].content -%}\n",
    "    {%- set loop_messages = messages[1:] -%}\n",
    "{%- else -%}\n",
    "    {%- set first_user = messages | selectattr('role', 'equalto', 'user') | first -%}\n",
    "    {%- set preamble = with_input if (first_user is defined and first_user.input) else without_input -%}\n",
    "    {%- set loop_messages = messages -%}\n",
    "{%- endif -%}\n",
    "{{- preamble + '\\n\\n' -}}\n",
    "{%- for message in loop_messages -%}\n",
    "    {%- if message.role == 'user' -%}\n",
    "        {%- if message.input is defined and message.input -%}\n",
    "            {%- set instruction = message.instruction if message.instruction is defined else message.content -%}\n",
    "            {{- '### Instruction:\\n' + instruction + '\\n\\n### Input:\\n' + message.input + '\\n\\n' -}}\n",
    "        {%- else -%}\n",
    "            {{- '### Instruction:\\n' + message.content + '\\n\\n' -}}\n",
    "        {%- endif -%}\n",
    "    {%- elif message.role == 'assistant' -%}\n",
    "        {{- '### Response:\\n' + message.content -}}\n",
    "        {%- if eos_token is defined -%}{{- eos_token -}}{%- endif -%}\n",
    "        {%- if not loop.last -%}{{- '\\n\\n' -}}{%- endif -%}\n",
    "    {%- else -%}\n",
    "        {{- raise_exception('the Alpaca format has no role ' ~ message.role) -}}\n",
    "    {%- endif -%}\n",
    "{%- endfor -%}\n",
    "{%- if add_generation_prompt -%}{{- '### Response:\\n' -}}{%- endif -%}\n",
);

/// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), exactly as OpenHermes-2.5 ships it.
pub const CHATML_TEMPLATE: &str = concat!(
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}",
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
);

impl ChatTemplate {
    /// The Alpaca format ([`ALPACA_TEMPLATE`]); set `eos_token` to end responses with it.
    pub fn alpaca() -> Self {
        Self::builtin(ALPACA_TEMPLATE, "alpaca format")
    }

    /// ChatML ([`CHATML_TEMPLATE`]); its end of turn is `<|im_end|>`.
    pub fn chatml() -> Self {
        Self::builtin(CHATML_TEMPLATE, "chatml format")
            .with_special_token("eos_token", "<|im_end|>")
    }

    fn builtin(source: &str, origin: &str) -> Self {
        match Self::with_origin(source, origin) {
            Ok(template) => template,
            // The built-in templates are constants covered by tests.
            Err(error) => unreachable!("built-in template does not compile: {error}"),
        }
    }
}

/// Which instruction format to train and prompt with (in recipes: `"alpaca"`, `"chatml"` or
/// `"chat_template"`, the model's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstructionFormat {
    /// [`ALPACA_TEMPLATE`].
    #[serde(rename = "alpaca")]
    Alpaca,
    /// [`CHATML_TEMPLATE`].
    #[serde(rename = "chatml")]
    ChatMl,
    /// The model's `chat_template` (tokenizer_config.json or chat_template.jinja).
    #[serde(rename = "chat_template")]
    ChatTemplate,
}

impl InstructionFormat {
    /// The template of this format. For Alpaca and ChatML, the special tokens of the model's
    /// `tokenizer_config.json` are taken when a model folder is given (so Alpaca ends responses
    /// with the model's EOS); the model's own template needs the folder.
    pub fn template(self, model_dir: Option<&Path>) -> Result<ChatTemplate, ChatError> {
        match (self, model_dir) {
            (Self::Alpaca, None) => Ok(ChatTemplate::alpaca()),
            (Self::ChatMl, None) => Ok(ChatTemplate::chatml()),
            (Self::Alpaca, Some(dir)) => ChatTemplate::alpaca().with_special_tokens_from_dir(dir),
            (Self::ChatMl, Some(dir)) => {
                // ChatML's end of turn stays the EOS whatever the tokenizer's is.
                Ok(ChatTemplate::chatml()
                    .with_special_tokens_from_dir(dir)?
                    .with_special_token("eos_token", "<|im_end|>"))
            }
            (Self::ChatTemplate, Some(dir)) => ChatTemplate::from_model_dir(dir),
            (Self::ChatTemplate, None) => Err(ChatError::Config {
                path: "chat_template".into(),
                message: "the model's chat template needs a model folder".into(),
            }),
        }
    }

    /// The recipe name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alpaca => "alpaca",
            Self::ChatMl => "chatml",
            Self::ChatTemplate => "chat_template",
        }
    }
}

impl fmt::Display for InstructionFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InstructionFormat {
    type Err = ChatError;

    fn from_str(name: &str) -> Result<Self, ChatError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "alpaca" => Ok(Self::Alpaca),
            "chatml" => Ok(Self::ChatMl),
            "chat_template" | "chat-template" | "model" => Ok(Self::ChatTemplate),
            _ => Err(ChatError::UnknownFormat {
                name: name.to_owned(),
            }),
        }
    }
}
