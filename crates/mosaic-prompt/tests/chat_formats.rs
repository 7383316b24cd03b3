//! Instruction formats (Alpaca, ChatML), data rows, loading templates from model folders.

use std::path::PathBuf;

use mosaic_prompt::{
    ChatError, ChatMessage, ChatTemplate, InstructionFormat, TemplateValue, conversation_from_json,
    conversation_from_row, instruction_message,
};

const ALPACA_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides \
further context. Write a response that appropriately completes the request.\n\n";
const ALPACA_WITHOUT_INPUT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n";

#[test]
fn alpaca_rows_with_and_without_input() {
    let alpaca = ChatTemplate::alpaca().with_special_token("eos_token", "</s>");

    let row = r#"{"instruction": "Translate to French.", "input": "cat", "output": "chat"}"#;
    let messages = conversation_from_json(row).unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].content, "Translate to French.\n\ncat");
    let rendered = alpaca.render_for_training(&messages).unwrap();
    assert_eq!(
        rendered.text,
        format!(
            "{ALPACA_WITH_INPUT}### Instruction:\nTranslate to French.\n\n### Input:\ncat\n\n### Response:\nchat</s>"
        )
    );
    assert_eq!(rendered.response_texts(), ["chat</s>"]);
    assert_eq!(
        alpaca.render(&messages[..1], true).unwrap(),
        format!(
            "{ALPACA_WITH_INPUT}### Instruction:\nTranslate to French.\n\n### Input:\ncat\n\n### Response:\n"
        )
    );

    let row = serde_json::json!({"instruction": "Name a color.", "output": "Blue"});
    let rendered = alpaca
        .render_for_training(&conversation_from_row(&row).unwrap())
        .unwrap();
    assert_eq!(
        rendered.text,
        format!("{ALPACA_WITHOUT_INPUT}### Instruction:\nName a color.\n\n### Response:\nBlue</s>")
    );
    assert_eq!(rendered.response_texts(), ["Blue</s>"]);

    // Multi-turn, a system message as preamble, and no EOS set.
    let chat = [
        ChatMessage::system("You answer briefly."),
        ChatMessage::user("2+2?"),
        ChatMessage::assistant("4"),
        ChatMessage::user("3+3?"),
        ChatMessage::assistant("6"),
    ];
    let rendered = ChatTemplate::alpaca().render_for_training(&chat).unwrap();
    assert_eq!(
        rendered.text,
        "You answer briefly.\n\n### Instruction:\n2+2?\n\n### Response:\n4\n\n### Instruction:\n3+3?\n\n### Response:\n6"
    );
    assert_eq!(rendered.response_texts(), ["4", "6"]);
    let error = ChatTemplate::alpaca()
        .render(&[ChatMessage::new("tool", "x")], false)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the Alpaca format has no role tool"),
        "{error}"
    );
}

#[test]
fn chatml_format() {
    let chatml = ChatTemplate::chatml();
    assert_eq!(chatml.eos_token(), Some("<|im_end|>"));
    let chat = [ChatMessage::user("Hi"), ChatMessage::assistant("Hello!")];
    let rendered = chatml.render_for_training(&chat).unwrap();
    assert_eq!(
        rendered.text,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    );
    assert_eq!(rendered.response_texts(), ["Hello!<|im_end|>\n"]);
    let mask = rendered.response_byte_mask();
    assert_eq!(
        mask.iter().filter(|&&m| m).count(),
        "Hello!<|im_end|>\n".len()
    );
    assert_eq!(
        chatml.render(&chat[..1], true).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn instruction_format_names() {
    assert_eq!(
        "alpaca".parse::<InstructionFormat>().unwrap(),
        InstructionFormat::Alpaca
    );
    assert_eq!(
        "ChatML".parse::<InstructionFormat>().unwrap(),
        InstructionFormat::ChatMl
    );
    assert_eq!(
        "chat_template".parse::<InstructionFormat>().unwrap(),
        InstructionFormat::ChatTemplate
    );
    let error = "vicuna".parse::<InstructionFormat>().unwrap_err();
    assert_eq!(
        error,
        ChatError::UnknownFormat {
            name: "vicuna".into()
        }
    );
    #[derive(serde::Deserialize)]
    struct Recipe {
        format: InstructionFormat,
    }
    let recipe: Recipe = toml::from_str("format = \"chatml\"").unwrap();
    assert_eq!(recipe.format, InstructionFormat::ChatMl);
    assert_eq!(InstructionFormat::ChatMl.to_string(), "chatml");
    assert!(InstructionFormat::ChatTemplate.template(None).is_err());
    assert!(InstructionFormat::Alpaca.template(None).is_ok());
}

#[test]
fn message_rows() {
    let row = r#"{"messages": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Weather?", "name": "ana"},
        {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": {"z": 1, "a": 2}}}]}
    ]}"#;
    let messages = conversation_from_json(row).unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1].field("name").and_then(TemplateValue::as_str),
        Some("ana")
    );
    assert_eq!(messages[2].content, "");
    // The order of keys inside values is kept for `tojson`.
    let chat =
        ChatTemplate::new("{{ messages[2].tool_calls[0].function.arguments | tojson }}").unwrap();
    assert_eq!(
        chat.render(&messages, false).unwrap(),
        r#"{"z": 1, "a": 2}"#
    );

    let sharegpt = r#"{"image": "x.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}"#;
    let messages = conversation_from_json(sharegpt).unwrap();
    assert_eq!(
        messages,
        [
            ChatMessage::user("<image>\nWhat is it?"),
            ChatMessage::assistant("A cat.")
        ]
    );

    let with_input = instruction_message("Sum.", "1 2");
    assert_eq!(with_input.content, "Sum.\n\n1 2");
    assert_eq!(instruction_message("Sum.", "  ").content, "Sum.");

    // Messages serialize back to the same shape.
    let json = serde_json::to_string(&ChatMessage::user("q").with_field("name", "n")).unwrap();
    assert_eq!(json, r#"{"role":"user","content":"q","name":"n"}"#);
}

#[test]
fn bad_rows_name_the_key() {
    let cases = [
        ("[1]", "expected a JSON object"),
        ("{\"text\": \"x\"}", "found keys: text"),
        ("{\"messages\": {}}", "`messages` must be a list"),
        (
            "{\"messages\": [{\"content\": \"x\"}]}",
            "`messages[0]`: missing field `role`",
        ),
        ("{\"instruction\": \"x\"}", "missing `output`"),
        (
            "{\"instruction\": 3, \"output\": \"y\"}",
            "`instruction` must be a string",
        ),
        (
            "{\"conversations\": [{\"from\": \"human\"}]}",
            "`conversations[0]`: missing `value`",
        ),
        ("not json", "not JSON"),
    ];
    for (row, expected) in cases {
        let error = conversation_from_json(row).unwrap_err();
        assert!(
            matches!(error, ChatError::InvalidRow { .. }),
            "{row}: {error:?}"
        );
        assert!(error.to_string().contains(expected), "{row}: {error}");
    }
}

#[test]
fn tokenizer_config_templates_and_special_tokens() {
    let config = r#"{
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "pad_token": null,
        "chat_template": [
            {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"},
            {"name": "tool_use", "template": "{{ tools | length }} tools"}
        ]
    }"#;
    let chat = ChatTemplate::from_tokenizer_config(config, None).unwrap();
    assert_eq!(chat.bos_token(), Some("<s>"));
    assert_eq!(chat.eos_token(), Some("</s>"));
    assert_eq!(chat.special_token("pad_token"), None);
    assert_eq!(
        chat.render(&[ChatMessage::user("a")], false).unwrap(),
        "<s>a</s>"
    );
    let tools = ChatTemplate::from_tokenizer_config(config, Some("tool_use"))
        .unwrap()
        .with_tools(vec![TemplateValue::from("t")]);
    assert_eq!(tools.render(&[], false).unwrap(), "1 tools");
    let error = ChatTemplate::from_tokenizer_config(config, Some("rag")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no template named `rag` (it has: default, tool_use)"),
        "{error}"
    );
    let error = ChatTemplate::from_tokenizer_config(r#"{"eos_token": "</s>"}"#, None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tokenizer_config.json: no `chat_template`"
    );
}

/// A scratch folder under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mosaic-prompt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn model_folders() {
    let dir = ScratchDir::new("model-dir");
    let config =
        r#"{"eos_token": "<|endoftext|>", "chat_template": "config:{{ messages[0].content }}"}"#;
    std::fs::write(dir.0.join("tokenizer_config.json"), config).unwrap();
    let chat = ChatTemplate::from_model_dir(&dir.0).unwrap();
    assert_eq!(
        chat.render(&[ChatMessage::user("x")], false).unwrap(),
        "config:x"
    );

    // chat_template.jinja wins over the config's template, as in transformers.
    std::fs::write(
        dir.0.join("chat_template.jinja"),
        "jinja:{{ messages[0].content }}{{ eos_token }}\n",
    )
    .unwrap();
    let chat = ChatTemplate::from_model_dir(&dir.0).unwrap();
    assert_eq!(
        chat.render(&[ChatMessage::user("x")], false).unwrap(),
        "jinja:x<|endoftext|>"
    );
    assert!(chat.origin().ends_with("chat_template.jinja"));

    // Built-in formats take the model's EOS.
    let alpaca = InstructionFormat::Alpaca.template(Some(&dir.0)).unwrap();
    assert_eq!(alpaca.eos_token(), Some("<|endoftext|>"));
    let chatml = InstructionFormat::ChatMl.template(Some(&dir.0)).unwrap();
    assert_eq!(chatml.eos_token(), Some("<|im_end|>"));

    // A broken template names its file and line.
    std::fs::write(dir.0.join("chat_template.jinja"), "ok\n{% if x %}\n").unwrap();
    let error = ChatTemplate::from_model_dir(&dir.0).unwrap_err();
    assert!(
        matches!(&error, ChatError::TemplateSyntax { line: 3, origin, .. } if origin.ends_with("chat_template.jinja"))
            || matches!(&error, ChatError::TemplateSyntax { line: 2, .. }),
        "{error:?}"
    );

    std::fs::write(dir.0.join("tokenizer_config.json"), "{ not json").unwrap();
    let error = ChatTemplate::from_model_dir(&dir.0).unwrap_err();
    assert!(
        matches!(&error, ChatError::Config { path, .. } if path.ends_with("tokenizer_config.json")),
        "{error:?}"
    );

    let empty = ScratchDir::new("empty-dir");
    let error = ChatTemplate::from_model_dir(&empty.0).unwrap_err();
    assert!(error.to_string().contains("no chat template"), "{error}");
}

#[test]
fn generation_tags_and_python_values() {
    // transformers' {% generation %} tags are accepted (and need not be there for spans).
    let chat = ChatTemplate::new(
        "{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}{{ m.content }}.{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}",
    )
    .unwrap();
    let rendered = chat
        .render_for_training(&[ChatMessage::user("q"), ChatMessage::assistant("a")])
        .unwrap();
    // (trim_blocks eats the newline after `{% endif %}`, as in transformers.)
    assert_eq!(rendered.text, "user: qassistant: a.");
    assert_eq!(rendered.response_texts(), ["assistant: a."]);

    // Variables print the way Python does; strftime_now uses the pinned clock.
    let chat = ChatTemplate::new(
        "{{ flag }} {{ nothing }} {{ missing }}|{{ items }} {{ strftime_now('%d %b %Y') }}",
    )
    .unwrap()
    .with_variable("flag", true)
    .with_variable("nothing", TemplateValue::from(()))
    .with_variable(
        "items",
        serde_json::from_str::<TemplateValue>(r#"{"a": [1, 2.0, "x"]}"#).unwrap(),
    )
    .with_fixed_time(1_721_986_205);
    assert_eq!(
        chat.render(&[], false).unwrap(),
        "True None |{'a': [1, 2.0, 'x']} 26 Jul 2024"
    );

    // Reasoning under any of its names reaches the template as `reasoning_content` and `thinking`.
    let chat = ChatTemplate::new("{{ messages[0].reasoning_content }}/{{ messages[0].thinking }}")
        .unwrap();
    let message = ChatMessage::assistant("a").with_field("reasoning", "r");
    assert_eq!(chat.render(&[message], false).unwrap(), "r/r");
}
