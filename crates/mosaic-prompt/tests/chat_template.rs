//! Chat templates against transformers: fixtures/reference/chat_templates.json holds real
//! templates and the text transformers renders for them (xtask/scripts/make_chat_template_fixtures.py).

use std::path::PathBuf;

use mosaic_prompt::{ChatError, ChatMessage, ChatTemplate, RenderedConversation, TemplateValue};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    fixed_unix_time: i64,
    templates: Vec<TemplateFixture>,
}

#[derive(Deserialize)]
struct TemplateFixture {
    name: String,
    chat_template: String,
    special_tokens: pairs::Pairs<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<ChatMessage>,
    tools: Option<Vec<TemplateValue>>,
    kwargs: pairs::Pairs<TemplateValue>,
    add_generation_prompt: bool,
    rendered: Option<String>,
    error: Option<String>,
    assistant_char_spans: Option<Vec<(usize, usize)>>,
}

impl Case {
    fn label(&self, template: &TemplateFixture) -> String {
        format!(
            "{} / {} / add_generation_prompt={}",
            template.name, self.name, self.add_generation_prompt
        )
    }
}

/// JSON objects read as key/value lists, in order.
mod pairs {
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

    pub struct Pairs<V>(pub Vec<(String, V)>);

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct PairsVisitor<V>(std::marker::PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
                type Value = Pairs<V>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<V>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        out.push(entry);
                    }
                    Ok(Pairs(out))
                }
            }
            deserializer.deserialize_map(PairsVisitor(std::marker::PhantomData))
        }
    }
}

fn load_fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/reference/chat_templates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture parses")
}

fn template_for(fixture: &Fixture, template: &TemplateFixture, case: &Case) -> ChatTemplate {
    let mut chat = ChatTemplate::with_origin(template.chat_template.clone(), template.name.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", template.name))
        .with_fixed_time(fixture.fixed_unix_time);
    for (name, token) in &template.special_tokens.0 {
        chat = chat.with_special_token(name, token);
    }
    for (name, value) in &case.kwargs.0 {
        chat = chat.with_variable(name, value.clone());
    }
    if let Some(tools) = &case.tools {
        chat = chat.with_tools(tools.clone());
    }
    chat
}

#[test]
fn renders_like_transformers() {
    let fixture = load_fixture();
    assert!(fixture.templates.len() >= 8);
    let mut checked = 0;
    for template in &fixture.templates {
        for case in &template.cases {
            let chat = template_for(&fixture, template, case);
            let label = case.label(template);
            let result = chat.render(&case.messages, case.add_generation_prompt);
            match (&case.rendered, &case.error) {
                (Some(expected), _) => {
                    let got = result.unwrap_or_else(|e| panic!("{label}: {e}"));
                    assert_eq!(&got, expected, "{label}");
                }
                (None, Some(expected)) => {
                    let error = result.expect_err(&label);
                    assert!(
                        error.to_string().contains(expected.as_str()),
                        "{label}: {error}"
                    );
                }
                (None, None) => panic!("{label}: fixture case has neither `rendered` nor `error`"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 80, "only {checked} renderings checked");
}

/// `{% generation %}` templates give transformers' own assistant masks; the spans worked out
/// without the tags must be the same.
#[test]
fn response_spans_match_transformers_assistant_masks() {
    let fixture = load_fixture();
    let mut checked = 0;
    for template in fixture
        .templates
        .iter()
        .filter(|t| t.name.ends_with("+generation"))
    {
        for case in &template.cases {
            let Some(expected) = &case.assistant_char_spans else {
                continue;
            };
            if !case.messages.iter().any(ChatMessage::is_assistant) {
                continue;
            }
            let label = case.label(template);
            let chat = template_for(&fixture, template, case);
            let rendered = chat
                .render_for_training(&case.messages)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let spans: Vec<(usize, usize)> = rendered
                .responses
                .iter()
                .map(|span| {
                    let chars = span.char_range(&rendered.text);
                    (chars.start, chars.end)
                })
                .collect();
            assert_eq!(&spans, expected, "{label}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} span cases checked");
}

/// Every real template: the training rendering is the plain rendering, and each response holds
/// the assistant's text and what the template writes after it. (The synthetic python-compat
/// template prints a footer after the messages, so it is not prefix-stable.)
#[test]
fn response_spans_for_every_template() {
    let fixture = load_fixture();
    for template in fixture
        .templates
        .iter()
        .filter(|t| t.name != "python-compat")
    {
        for case in template
            .cases
            .iter()
            .filter(|c| !c.add_generation_prompt && c.rendered.is_some())
        {
            if !case.messages.iter().any(ChatMessage::is_assistant) {
                continue;
            }
            let label = case.label(template);
            let chat = template_for(&fixture, template, case);
            let rendered = chat
                .render_for_training(&case.messages)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(Some(&rendered.text), case.rendered.as_ref(), "{label}");
            let assistants: Vec<&ChatMessage> =
                case.messages.iter().filter(|m| m.is_assistant()).collect();
            assert_eq!(rendered.responses.len(), assistants.len(), "{label}");
            for (span, message) in rendered.responses.iter().zip(&assistants) {
                let text = &rendered.text[span.range()];
                let answer = message
                    .content
                    .rsplit("</think>")
                    .next()
                    .unwrap_or_default()
                    .trim();
                assert!(
                    text.contains(answer),
                    "{label}: response {text:?} lacks {answer:?}"
                );
                assert!(!text.is_empty(), "{label}");
            }
        }
    }
}

fn fixture_template(name: &str) -> (Fixture, usize) {
    let fixture = load_fixture();
    let index = fixture
        .templates
        .iter()
        .position(|t| t.name == name)
        .unwrap_or_else(|| panic!("no {name}"));
    (fixture, index)
}

fn responses_of(name: &str, case_name: &str) -> Vec<String> {
    let (fixture, index) = fixture_template(name);
    let template = &fixture.templates[index];
    let case = template
        .cases
        .iter()
        .find(|c| c.name == case_name)
        .expect("case");
    let chat = template_for(&fixture, template, case);
    let rendered: RenderedConversation = chat.render_for_training(&case.messages).expect("renders");
    rendered
        .response_texts()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn responses_end_with_the_end_of_turn() {
    assert_eq!(responses_of("chatml", "single"), ["Paris.<|im_end|>\n"]);
    assert_eq!(responses_of("zephyr", "single"), ["Paris.</s>\n"]);
    assert_eq!(responses_of("mistral-instruct", "single"), ["Paris.</s>"]);
    assert_eq!(
        responses_of("llama-2-chat", "multi_turn"),
        [" chat </s>", " café ☕ — «délicieux» </s>"]
    );
    assert_eq!(
        responses_of("gemma-it", "single"),
        ["Paris.<end_of_turn>\n"]
    );
    assert_eq!(responses_of("llama4", "single"), ["Paris.<|eot|>"]);
    // Qwen3 writes an empty <think> block only into a final answer, and drops the reasoning of
    // answers before the last question.
    assert_eq!(
        responses_of("qwen3", "thinking"),
        [
            "4<|im_end|>\n",
            "<think>\nThree and three.\n</think>\n\n6<|im_end|>\n"
        ]
    );
    let tools = responses_of("qwen3", "tools");
    assert!(
        tools[0].starts_with("<tool_call>\n{\"name\": \"get_weather\""),
        "{tools:?}"
    );
    assert!(
        tools[1].ends_with("It is 21.5 °C in Paris.<|im_end|>\n"),
        "{tools:?}"
    );
}

#[test]
fn render_errors_name_the_line_and_the_message() {
    let (fixture, index) = fixture_template("llama-2-chat");
    let template = &fixture.templates[index];
    let chat = template_for(&fixture, template, &template.cases[0]);
    let chat_messages = [
        ChatMessage::user("a"),
        ChatMessage::assistant("b"),
        ChatMessage::assistant("c"),
    ];
    match chat.render(&chat_messages, false) {
        Err(ChatError::Render {
            line: Some(1),
            message_index: Some(2),
            message,
            ..
        }) => {
            assert_eq!(
                message,
                "Conversation roles must alternate user/assistant/user/assistant/..."
            );
        }
        other => panic!("{other:?}"),
    }

    let (fixture, index) = fixture_template("python-compat");
    let template = &fixture.templates[index];
    let case = template
        .cases
        .iter()
        .find(|c| c.name == "forbidden")
        .expect("case");
    let error = template_for(&fixture, template, case)
        .render(&case.messages, false)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "python-compat: line 9 (rendering message 2): role forbidden is not allowed at position 2"
    );
    // The same error surfaces when rendering for training.
    let error = template_for(&fixture, template, case)
        .render_for_training(&case.messages)
        .unwrap_err();
    assert!(
        matches!(
            error,
            ChatError::Render {
                line: Some(9),
                message_index: Some(2),
                ..
            }
        ),
        "{error:?}"
    );

    // Engine errors read like Jinja's, with the line.
    let chat = ChatTemplate::new("line one\n{{ messages[0].nope.deeper }}").unwrap();
    let error = chat.render(&[ChatMessage::user("x")], false).unwrap_err();
    assert!(
        matches!(&error, ChatError::Render { line: Some(2), message_index: Some(0), message, .. }
            if message.contains("undefined")),
        "{error:?}"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let error =
        ChatTemplate::new("{% for m in messages %}\n{{ m.content }}\n{% if %}\n{% endfor %}")
            .unwrap_err();
    match &error {
        ChatError::TemplateSyntax {
            line: 3, message, ..
        } => assert!(message.contains("syntax error"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("chat template: line 3: syntax error"),
        "{error}"
    );
    let error = ChatTemplate::new("{% for m in messages %}").unwrap_err();
    assert!(
        matches!(error, ChatError::TemplateSyntax { .. }),
        "{error:?}"
    );
}

#[test]
fn training_needs_an_assistant_turn() {
    let chat = ChatTemplate::chatml();
    let error = chat
        .render_for_training(&[ChatMessage::system("s"), ChatMessage::user("q")])
        .unwrap_err();
    assert_eq!(
        error,
        ChatError::NoAssistantTurn {
            roles: vec!["system".into(), "user".into()]
        }
    );
    assert_eq!(
        error.to_string(),
        "conversation has no assistant turn (roles: system, user)"
    );
    assert!(matches!(
        chat.render_for_training(&[]),
        Err(ChatError::NoAssistantTurn { .. })
    ));
}

#[test]
fn templates_that_are_not_prefix_stable_are_reported() {
    // The count of messages is printed first, so earlier renderings are not prefixes.
    let chat = ChatTemplate::new(
        "{{ messages | length }}{% for m in messages %}|{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let error = chat
        .render_for_training(&[ChatMessage::user("q"), ChatMessage::assistant("a")])
        .unwrap_err();
    assert!(
        matches!(
            error,
            ChatError::ResponseSpan {
                message_index: 1,
                ..
            }
        ),
        "{error:?}"
    );
}
