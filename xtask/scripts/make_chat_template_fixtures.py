#!/usr/bin/env python3
"""Render real Hugging Face chat templates with transformers, for mosaic-prompt's chat template tests.

Run through `cargo xtask fixtures`, or directly:

    PY=$(../shared/tools/setup-reference-env.sh)
    $PY xtask/scripts/make_chat_template_fixtures.py --out fixtures

Writes <out>/reference/chat_templates.json:

    {"transformers_version", "fixed_unix_time",
     "templates": [{"name", "source", "chat_template", "special_tokens": {...},
                    "cases": [{"name", "messages", "tools", "kwargs", "add_generation_prompt",
                               "rendered" | "error",
                               "assistant_char_spans"?}]}]}

Rendering goes through `transformers.utils.chat_template_utils.render_jinja_template`, which is what
`tokenizer.apply_chat_template(..., tokenize=False)` calls with the tokenizer's special tokens map (bos_token,
eos_token, ...) merged into the keyword arguments; so the special tokens of each model are passed the same way.
`strftime_now` is pinned to `fixed_unix_time` (UTC) so that the output is reproducible.

Templates whose name ends in `+generation` carry `{% generation %}` tags: for them transformers' own assistant
mask (`return_assistant_tokens_mask`) gives `assistant_char_spans` (Python string indices, i.e. code points), an
independent reference for mosaic's response spans, which are worked out without the tags.

The templates are written here verbatim from the public model repositories named in `source` (no network is
needed); Llama 4's is read from the transformers package itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import jinja2  # noqa: E402
import transformers  # noqa: E402
from transformers.utils.chat_template_utils import (  # noqa: E402
    _compile_jinja_template,
    render_jinja_template,
)

# 2024-07-26 09:30:05 UTC: what `strftime_now` sees.
FIXED_UNIX_TIME = 1721986205

# --- templates -------------------------------------------------------------------------------------------------

# teknium/OpenHermes-2.5-Mistral-7B (plain ChatML)
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The same ChatML with transformers' `{% generation %}` tags around what the assistant produces.
CHATML_GENERATION = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# HuggingFaceH4/zephyr-7b-beta (relies on trim_blocks)
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)

# meta-llama/Llama-2-7b-chat-hf (raise_exception, str.strip())
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# The Llama 2 template with `{% generation %}` tags around the assistant's part.
LLAMA2_GENERATION = LLAMA2.replace(
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}",
    "{% elif message['role'] == 'assistant' %}{% generation %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endgeneration %}",
)

# mistralai/Mistral-7B-Instruct-v0.1
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# google/gemma-7b-it (filter `trim`, role renaming)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# Qwen/Qwen2.5-7B-Instruct (tools, tojson, `{%-` whitespace control)
QWEN2 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Qwen/Qwen3-8B (namespace, reversed slice, str.startswith/endswith/split/lstrip/rstrip, `is false`, thinking)
QWEN3 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

# Not a model's: the Jinja features real templates lean on that the ones above do not show (loop controls,
# Python's way of printing values, tojson's options, dict/namespace, more str methods), rendered by the same
# transformers environment. Line 9 raises when a message has the role "forbidden".
PYTHON_COMPAT = """{%- set ns = namespace(count=0) %}
{%- for message in messages %}
    {%- if message.role == 'skip' %}{% continue %}{% endif %}
    {%- if ns.count >= 4 %}{% break %}{% endif %}
    {%- set ns.count = ns.count + 1 %}
{{ loop.index }}. {{ message.role | upper }}: {{ message.content.strip().replace('  ', ' ') }}
    {%- if message.content.startswith('#') %} [heading]{% endif %}
    {%- if message.role == 'forbidden' %}
        {{- raise_exception('role ' ~ message.role ~ ' is not allowed at position ' ~ loop.index0) }}
    {%- endif %}
{{ '\\n' }}{% endfor %}
flags: {{ true }} {{ false }} {{ none }} {{ 7 // 2 }} {{ 7 / 2 }} {{ 2.0 }} {{ 1e20 }} {{ 0.00001 }}
list: {{ ['a', "it's", 1, 2.5, none, true] }}
dict: {{ {'k': 'v', 'n': [1, 2]} }}
json: {{ messages[0] | tojson }}
json-indent: {{ {'b': [1, {'c': none}], 'a': 'x<y>&"\\u00e9\\n'} | tojson(indent=2) }}
json-sorted: {{ {'b': 1, 'a': [true, false, 1.5]} | tojson(sort_keys=true) }}
json-compact: {{ {'a': [1, 2], 'b': 'é'} | tojson(separators=(',', ':'), ensure_ascii=true) }}
date: {{ strftime_now('%Y-%m-%d %H:%M:%S %a %A %b %B %d %j %I %p %y %%') }}
words: {{ 'a-b-c'.split('-') | join('+') }} {{ 'Hello World'.lower() }} {{ 'x'.upper() }} {{ 'title me'.title() }} {{ '  pad  '.lstrip() }}|{{ '  pad  '.rstrip() }}|
dict(): {{ dict(x=1, y='z') | tojson }} {{ (messages | selectattr('role', 'equalto', 'user') | list | length) }}
items: {% for k, v in {'p': 1, 'q': 2}.items() %}{{ k }}={{ v }};{% endfor %}
{% if add_generation_prompt %}>>> {% endif %}"""

SPECIAL_TOKENS = {
    "llama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "zephyr": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    "chatml": {"bos_token": "<s>", "eos_token": "<|im_end|>", "unk_token": "<unk>"},
    "gemma": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "qwen": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "llama4": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>", "pad_token": "<|finetune_right_pad|>"},
}

# --- conversations ---------------------------------------------------------------------------------------------

SINGLE = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]
WITH_SYSTEM = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a prime number."},
    {"role": "assistant", "content": "7"},
]
MULTI_TURN = [
    {"role": "user", "content": "  Translate 'cat' to French.  "},
    {"role": "assistant", "content": " chat \n"},
    {"role": "user", "content": "And 'coffee', with an emoji? ☕"},
    {"role": "assistant", "content": "café ☕ — «délicieux»"},
]
OPEN_QUESTION = [
    {"role": "user", "content": "Write a haiku about Rust."},
]
NOT_ALTERNATING = [
    {"role": "user", "content": "Hello"},
    {"role": "user", "content": "Are you there?"},
]
SYSTEM_FIRST_ONLY_ASSISTANT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current temperature in °C at a place",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TOOL_CONVERSATION = [
    {"role": "user", "content": "How warm is it in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
        ],
    },
    {"role": "tool", "content": '{"temperature": 21.5}'},
    {"role": "tool", "content": '{"humidity": 0.4}'},
    {"role": "assistant", "content": "It is 21.5 °C in Paris."},
]
THINKING = [
    {"role": "system", "content": "Think first."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4"},
    {"role": "user", "content": "3+3?"},
    {"role": "assistant", "content": "6", "reasoning_content": "Three and three."},
]
PYTHON_COMPAT_CHAT = [
    {"role": "user", "content": "  #  Title  here "},
    {"role": "skip", "content": "never shown"},
    {"role": "assistant", "content": "Done  twice."},
    {"role": "user", "content": "more"},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": "cut by break"},
]
FORBIDDEN = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "forbidden", "content": "x"},
]


def case(name, messages, tools=None, kwargs=None):
    return {"name": name, "messages": messages, "tools": tools, "kwargs": kwargs or {}}


BASIC = [case("single", SINGLE), case("multi_turn", MULTI_TURN), case("open_question", OPEN_QUESTION)]


def templates():
    from transformers.models.llama4 import processing_llama4

    return [
        ("chatml", "teknium/OpenHermes-2.5-Mistral-7B", CHATML, "chatml",
         BASIC + [case("with_system", WITH_SYSTEM)]),
        ("chatml+generation", "OpenHermes ChatML with {% generation %} tags", CHATML_GENERATION, "chatml",
         BASIC + [case("with_system", WITH_SYSTEM)]),
        ("zephyr", "HuggingFaceH4/zephyr-7b-beta", ZEPHYR, "zephyr", BASIC + [case("with_system", WITH_SYSTEM)]),
        ("llama-2-chat", "meta-llama/Llama-2-7b-chat-hf", LLAMA2, "llama",
         BASIC + [case("with_system", WITH_SYSTEM), case("not_alternating", NOT_ALTERNATING)]),
        ("llama-2-chat+generation", "Llama 2 chat with {% generation %} tags", LLAMA2_GENERATION, "llama",
         BASIC + [case("with_system", WITH_SYSTEM)]),
        ("mistral-instruct", "mistralai/Mistral-7B-Instruct-v0.1", MISTRAL, "llama",
         BASIC + [case("with_system", WITH_SYSTEM), case("not_alternating", NOT_ALTERNATING)]),
        ("gemma-it", "google/gemma-7b-it", GEMMA, "gemma",
         BASIC + [case("with_system", SYSTEM_FIRST_ONLY_ASSISTANT)]),
        ("qwen2.5-instruct", "Qwen/Qwen2.5-7B-Instruct", QWEN2, "qwen",
         BASIC + [case("with_system", WITH_SYSTEM), case("tools", TOOL_CONVERSATION, tools=[WEATHER_TOOL])]),
        ("qwen3", "Qwen/Qwen3-8B", QWEN3, "qwen",
         BASIC + [
             case("thinking", THINKING),
             case("no_thinking", OPEN_QUESTION, kwargs={"enable_thinking": False}),
             case("tools", TOOL_CONVERSATION, tools=[WEATHER_TOOL]),
         ]),
        ("llama4", "transformers.models.llama4.processing_llama4.chat_template", processing_llama4.chat_template,
         "llama4",
         BASIC + [case("with_system", WITH_SYSTEM), case("tools", TOOL_CONVERSATION, tools=[WEATHER_TOOL])]),
        ("python-compat", "synthetic: Jinja features of real templates", PYTHON_COMPAT, "chatml",
         [case("features", PYTHON_COMPAT_CHAT), case("forbidden", FORBIDDEN)]),
    ]


def pin_clock(template: str) -> None:
    fixed = dt.datetime.fromtimestamp(FIXED_UNIX_TIME, tz=dt.timezone.utc)
    compiled = _compile_jinja_template(template)
    compiled.environment.globals["strftime_now"] = lambda fmt: fixed.strftime(fmt)
    compiled.globals["strftime_now"] = compiled.environment.globals["strftime_now"]


def render(template, special_tokens, c, add_generation_prompt, track):
    kwargs = {**special_tokens, **c["kwargs"]}
    try:
        rendered, indices = render_jinja_template(
            conversations=[c["messages"]],
            tools=c["tools"],
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            return_assistant_tokens_mask=track,
            **kwargs,
        )
    except jinja2.exceptions.TemplateError as error:
        return {"error": str(error)}
    out = {"rendered": rendered[0]}
    if track:
        out["assistant_char_spans"] = [list(span) for span in indices[0]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("fixtures"))
    args = parser.parse_args()

    entries = []
    for name, source, template, tokens, cases in templates():
        pin_clock(template)
        special_tokens = SPECIAL_TOKENS[tokens]
        track = name.endswith("+generation")
        rendered_cases = []
        for c in cases:
            for add_generation_prompt in (False, True):
                result = render(template, special_tokens, c, add_generation_prompt, track)
                rendered_cases.append({**c, "add_generation_prompt": add_generation_prompt, **result})
        entries.append(
            {
                "name": name,
                "source": source,
                "chat_template": template,
                "special_tokens": special_tokens,
                "cases": rendered_cases,
            }
        )

    out = args.out / "reference" / "chat_templates.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "transformers_version": transformers.__version__,
        "jinja2_version": jinja2.__version__,
        "fixed_unix_time": FIXED_UNIX_TIME,
        "templates": entries,
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    total = sum(len(e["cases"]) for e in entries)
    errors = sum(1 for e in entries for c in e["cases"] if "error" in c)
    print(f"wrote {out}: {len(entries)} templates, {total} renderings ({errors} expected errors)")


if __name__ == "__main__":
    main()
