//! The chat-template renderer: `ChatTemplate::new` (a Hugging Face `chat_template`, Jinja) and rendering fuzzed
//! conversations with it (`render`, `render_for_training`), plus the conversation-row parser
//! (`conversation_from_json`).
//!
//! Input: the template, then either one conversation row as JSON (`{"messages": [...]}`) or NUL-separated
//! role/content pairs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_prompt::{ChatMessage, ChatTemplate, conversation_from_json};

/// Templates are bounded so the fuzzer explores syntax rather than long loops over long texts; real templates
/// are a few KiB at most.
const MAX_TEMPLATE_BYTES: usize = 2048;
/// Conversations of a few turns reach every per-message path of the renderer.
const MAX_MESSAGES: usize = 6;

fuzz_target!(|data: &[u8]| {
    let text = mosaic_fuzz::text(data);
    let (source, rest) = mosaic_fuzz::pieces(&text);
    if source.len() > MAX_TEMPLATE_BYTES {
        return;
    }
    let messages: Vec<ChatMessage> = match rest.first() {
        Some(row) if row.trim_start().starts_with('{') => {
            conversation_from_json(row).unwrap_or_default()
        }
        _ => rest
            .chunks(2)
            .map(|pair| ChatMessage::new(pair[0], pair.get(1).copied().unwrap_or_default()))
            .collect(),
    };
    let messages = &messages[..messages.len().min(MAX_MESSAGES)];

    let Ok(template) = ChatTemplate::new(source) else {
        return;
    };
    let template = template
        .with_special_token("bos_token", "<s>")
        .with_special_token("eos_token", "</s>")
        .with_fixed_time(1_721_986_205);
    let _ = template.render(messages, true);
    let _ = template.render(messages, false);
    if let Ok(rendered) = template.render_for_training(messages) {
        // The spans index the rendered text: slicing by them must be valid.
        let _ = rendered.response_texts();
        let mask = rendered.response_byte_mask();
        assert_eq!(mask.len(), rendered.text.len());
    }
});
