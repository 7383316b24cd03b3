//! Prompt templates, verbalizers, label descriptions and k-shot
//! demonstrations for prompt-based fine-tuning and zero-shot classification.
//!
//! The crate stands alone (it depends on `serde`, `thiserror` and, for chat
//! templates, `minijinja`) and knows nothing about tokenizers: finding the mask position in token ids and
//! checking that a verbalizer word is a single token is done by
//! `mosaic-data` (`mask_position`, `word_token_ids`).
//!
//! * [`Template`]: `"Review: {text} It was {mask}."` — named slots, `{{`/`}}`
//!   for literal braces, and `{mask}` rendered as a configurable mask token.
//! * [`Verbalizer`]: label → one or more words.
//! * [`LabelDescriptions`]: label → description sentence (for sentence
//!   encoders).
//! * [`FewShot`]: k demonstrations per label from a training set, chosen with
//!   a seed and prepended to the query.
//! * [`ChatTemplate`] / [`InstructionFormat`]: Hugging Face chat templates
//!   rendered as transformers renders them, Alpaca and ChatML, conversation rows,
//!   and the [`ResponseSpan`]s of assistant turns for a response-only loss.
//!
//! ```
//! use std::collections::HashMap;
//! use mosaic_prompt::{Answer, FewShot, PromptError, Template, Verbalizer};
//!
//! let template = Template::parse("Review: {text} It was {mask}.")?;
//! assert_eq!(template.slots(), vec!["text"]);
//! assert!(template.has_mask());
//!
//! let query = HashMap::from([("text", "A delight from start to finish.")]);
//! assert_eq!(
//!     template.render(&query)?,
//!     "Review: A delight from start to finish. It was [MASK]."
//! );
//!
//! // A missing slot names the slot and what was available.
//! let err = template.render(&HashMap::from([("txt", "oops")])).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "template slot `{text}` has no value (available: txt)"
//! );
//!
//! // Verbalizers, e.g. from TOML `positive = ["great", "good"]`.
//! let verbalizer = Verbalizer::new([
//!     ("positive", vec!["great", "good"]),
//!     ("negative", vec!["terrible"]),
//! ])?;
//! assert_eq!(verbalizer.labels(), vec!["negative", "positive"]);
//!
//! // One demonstration per label, chosen deterministically by the seed.
//! let train_text = ["Loved it.", "Awful.", "Boring.", "Superb."];
//! let train_labels = ["positive", "negative", "negative", "positive"];
//! let few_shot = FewShot::new(1, 42).with_separator(" ");
//! let chosen = few_shot.select(&train_labels, None)?;
//! assert_eq!(chosen.len(), 2);
//! let demos: Vec<_> = chosen
//!     .iter()
//!     .map(|&i| (HashMap::from([("text", train_text[i])]), train_labels[i]))
//!     .collect();
//! let prompt = few_shot.prompt(&template, &query, &demos, Answer::Verbalizer(&verbalizer))?;
//! assert!(prompt.ends_with("Review: A delight from start to finish. It was [MASK]."));
//! assert!(prompt.contains("It was great.") && prompt.contains("It was terrible."));
//! # Ok::<(), PromptError>(())
//! ```

#![warn(missing_docs)]

mod chat;
mod error;
mod fewshot;
mod template;
mod verbalizer;

pub use chat::{
    ALPACA_TEMPLATE, ASSISTANT_ROLE, CHATML_TEMPLATE, ChatError, ChatMessage, ChatTemplate,
    InstructionFormat, RenderedConversation, ResponseSpan, SPECIAL_TOKEN_NAMES, TemplateValue,
    conversation_from_json, conversation_from_row, instruction_message,
};
pub use error::PromptError;
pub use fewshot::{Answer, FewShot, render_demonstration};
pub use template::{DEFAULT_MASK_TOKEN, FnValues, MASK_SLOT, SlotValues, Template};
pub use verbalizer::{LabelDescriptions, OneOrMany, Verbalizer};
