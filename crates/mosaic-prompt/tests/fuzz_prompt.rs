//! Always-on fuzz tests (the libFuzzer targets `prompt_template` and `chat_template` of `fuzz/` run the same entry
//! points for longer): random and structured input to the prompt-template parser, the chat-template compiler and
//! renderer, and the conversation-row parser must give a value or an error, never a panic. Inputs the fuzzer
//! found crashing are kept below as regression tests.

use mosaic_prompt::{ChatError, ChatMessage, ChatTemplate, Template, conversation_from_json};
use proptest::prelude::*;

/// A few dozen cases: enough for CI to exercise every entry point in well under a second.
const CASES: u32 = 48;

/// Parses and renders a prompt template the way the `prompt_template` fuzz target does.
fn exercise_template(source: &str, values: &[String]) {
    let Ok(template) = Template::parse(source) else {
        return;
    };
    let again = Template::parse(template.source()).expect("a template's own source parses");
    assert_eq!(again, template);
    let pairs: Vec<(String, String)> = template
        .slots()
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let value = values.get(i).cloned().unwrap_or_default();
            ((*slot).to_owned(), value)
        })
        .collect();
    template
        .render(&pairs)
        .expect("rendering with every slot given succeeds");
    template
        .render_filled(&pairs, "fill")
        .expect("render_filled with every slot given succeeds");
    let _ = template.render(&Vec::<(String, String)>::new());
    let _ = template.check_slots(values);
}

/// Compiles and renders a chat template the way the `chat_template` fuzz target does.
fn exercise_chat_template(source: &str, messages: &[ChatMessage]) {
    let Ok(template) = ChatTemplate::new(source) else {
        return;
    };
    let template = template
        .with_special_token("eos_token", "</s>")
        .with_fixed_time(0);
    let _ = template.render(messages, true);
    if let Ok(rendered) = template.render_for_training(messages) {
        let _ = rendered.response_texts();
        assert_eq!(rendered.response_byte_mask().len(), rendered.text.len());
    }
}

/// Pieces of Jinja that chat templates are made of, so random sequences of them reach the parser's and
/// renderer's deeper paths (random bytes mostly stop at the first unclosed tag).
const JINJA_PIECES: &[&str] = &[
    "{% for m in messages %}",
    "{% endfor %}",
    "{% if add_generation_prompt %}",
    "{% if loop.first %}",
    "{% elif m.role == 'user' %}",
    "{% else %}",
    "{% endif %}",
    "{% generation %}",
    "{% endgeneration %}",
    "{%- set ns = namespace(x=1) -%}",
    "{{ m.role }}",
    "{{ m.content }}",
    "{{ m['content'] | trim }}",
    "{{ m.content.strip() }}",
    "{{ messages[0].content[1:] }}",
    "{{ messages[-1].content.split(' ')[0] }}",
    "{{ eos_token }}",
    "{{ bos_token + m.role }}",
    "{{ messages | tojson }}",
    "{{ m.content | length }}",
    "{{ raise_exception('bad role') }}",
    "{{ strftime_now('%d %b %Y') }}",
    "{{ loop.index0 % 2 }}",
    "{{ (m.content * 3)[:5] }}",
    "<|im_start|>",
    "\n",
    " ",
    "{{",
    "}}",
    "{%",
    "%}",
    "é",
];

fn jinja_source() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(JINJA_PIECES), 0..12).prop_map(|p| p.concat())
}

fn messages() -> impl Strategy<Value = Vec<ChatMessage>> {
    let role = prop::sample::select(&["user", "assistant", "system", "tool", ""][..]);
    prop::collection::vec((role, "[a-zé {}%\n]{0,12}"), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(role, content)| ChatMessage::new(role, content))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn template_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        exercise_template(&String::from_utf8_lossy(&bytes), &[]);
    }

    #[test]
    fn template_parser_never_panics_on_braces(
        source in "[{}a-z._\\- é]{0,40}",
        values in prop::collection::vec("[a-z{}]{0,6}", 0..4),
    ) {
        exercise_template(&source, &values);
    }

    #[test]
    fn chat_template_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        exercise_chat_template(&String::from_utf8_lossy(&bytes), &[ChatMessage::user("hi")]);
    }

    #[test]
    fn chat_template_never_panics_on_jinja(source in jinja_source(), messages in messages()) {
        exercise_chat_template(&source, &messages);
    }

    #[test]
    fn conversation_rows_never_panic(row in "[{}\\[\\]\":, a-z]{0,60}") {
        let _ = conversation_from_json(&row);
    }
}

/// The inputs under `fuzz/regressions/<target>/`, each a file the fuzzer found crashing (kept as found).
fn regression_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).expect("read regression input");
            (name, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

/// Splits a fuzz input as the `chat_template` target does: the template, then a JSON row or role/content
/// pairs, separated by NUL.
fn chat_input(bytes: &[u8]) -> (String, Vec<ChatMessage>) {
    let text = String::from_utf8_lossy(bytes);
    let mut pieces = text.split('\0');
    let source = pieces.next().unwrap_or_default().to_owned();
    let rest: Vec<&str> = pieces.collect();
    let messages = match rest.first() {
        Some(row) if row.trim_start().starts_with('{') => {
            conversation_from_json(row).unwrap_or_default()
        }
        _ => rest
            .chunks(2)
            .map(|pair| ChatMessage::new(pair[0], pair.get(1).copied().unwrap_or_default()))
            .collect(),
    };
    (source, messages)
}

#[test]
fn chat_template_fuzz_regressions() {
    for (name, bytes) in regression_inputs("chat_template") {
        let (source, messages) = chat_input(&bytes);
        eprintln!("fuzz/regressions/chat_template/{name}");
        exercise_chat_template(&source, &messages);
    }
}

/// Found by the `chat_template` fuzz target: in `{%}` the `%}` that closes a block overlaps the `{%` that opens
/// it, and looking for `{% generation %}` tags sliced the template backwards (`begin > end`), a panic.
#[test]
fn overlapping_block_delimiters_are_a_syntax_error() {
    for source in ["{%}", "a{%}b", "{%}{% endif %}", "{%-}"] {
        let err = ChatTemplate::new(source).expect_err(source);
        assert!(
            matches!(err, ChatError::TemplateSyntax { line: 1, .. }),
            "{source}: {err}"
        );
    }
}

/// Found by the `chat_template` fuzz target: minijinja 3.0.5 panics when an empty string or list is sliced with
/// a negative step (`message.content.strip()[::-1]` of a blank message). Qwen-style templates walk
/// `messages[::-1]`, which is empty for the conversation before a first assistant turn. Each is an error now.
#[test]
fn reverse_slices_of_empty_values_are_errors() {
    let reversed_content =
        ChatTemplate::new("{% for m in messages %}{{ m.content[::-1] }}{% endfor %}")
            .expect("compiles");
    assert_eq!(
        reversed_content
            .render(&[ChatMessage::user("abc")], false)
            .expect("non-empty content reverses"),
        "cba"
    );
    let err = reversed_content
        .render(&[ChatMessage::user("")], false)
        .expect_err("an empty content sliced backwards");
    assert!(
        matches!(
            err,
            ChatError::Render {
                message_index: Some(0),
                ..
            }
        ),
        "{err}"
    );

    let reversed_messages = ChatTemplate::new(
        "{% for m in messages[::-1] %}{{ m.role }}{% endfor %}{% if add_generation_prompt %}>{% endif %}",
    )
    .expect("compiles");
    assert_eq!(
        reversed_messages
            .render(
                &[ChatMessage::user("a"), ChatMessage::assistant("b")],
                false
            )
            .expect("renders"),
        "assistantuser"
    );
    assert!(reversed_messages.render(&[], true).is_err());
    // The response of a first assistant turn is located by rendering the (empty) conversation before it.
    assert!(
        reversed_messages
            .render_for_training(&[ChatMessage::assistant("b")])
            .is_err()
    );
    assert!(
        ChatTemplate::new("{{ ''[::-1] }}")
            .expect("compiles")
            .render(&[], false)
            .is_err()
    );
}
