//! Instruction and chat formats: Hugging Face chat templates (rendered with minijinja as
//! transformers renders them), the Alpaca and ChatML formats, the data rows that become
//! conversations, and the response spans a response-only loss needs.
//!
//! * [`ChatTemplate`]: compile a template (from a string, `tokenizer_config.json` or a model
//!   folder), [`render`](ChatTemplate::render) a conversation, or
//!   [`render_for_training`](ChatTemplate::render_for_training) it to get the
//!   [`ResponseSpan`]s of the assistant messages.
//! * [`InstructionFormat`]: `alpaca`, `chatml` or the model's `chat_template`.
//! * [`conversation_from_json`] / [`conversation_from_row`]: `{"messages": [...]}`,
//!   `{"instruction", "input", "output"}` and ShareGPT rows as [`ChatMessage`]s.

mod clock;
mod error;
mod instruction;
mod message;
mod python;
mod spans;
mod template;

pub use error::ChatError;
pub use instruction::{ALPACA_TEMPLATE, CHATML_TEMPLATE, InstructionFormat};
pub use message::{
    ASSISTANT_ROLE, ChatMessage, TemplateValue, conversation_from_json, conversation_from_row,
    instruction_message,
};
pub use spans::{RenderedConversation, ResponseSpan};
pub use template::{ChatTemplate, SPECIAL_TOKEN_NAMES};
