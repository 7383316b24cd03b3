//! Strict keys per task: a key the chosen task (or method) never reads is an error naming the key and the task,
//! instead of being accepted and silently ignored.
//!
//! The table below says which tasks and methods read each key that not every run reads; a key it does not list
//! (`name`, `model`, `task`, `method`, `output`, `data.train`, `data.valid` and every `train.*` key) is read by
//! every task. `train.*` is read by the one Trainer for every task, and it refuses at run time a feature a task
//! cannot do (with the reason), which a per-key table could not explain. The table mirrors what the task code
//! reads (`pipeline.rs` for classification and token classification, `causal_lm.rs`, `image_classification.rs`,
//! `contrastive/`): a task that starts reading a key must be added here.

use super::choices::Method::{self, Cloze, Contrastive, Coop, Instruction, Lm, PromptSimilarity};
use super::choices::Task::{
    self, CausalLm, Classification, Detection, ImageClassification, ImageTextContrastive,
    MultimodalClassification, TextToImage, TokenClassification, VisualInstruction,
};
use super::error::RecipeError;
use super::sections::{DataSection, PromptSection};

/// A task that reads a key: with every one of its methods (`methods` empty), or with the ones listed.
struct Reader {
    task: Task,
    methods: &'static [Method],
}

const fn any(task: Task) -> Reader {
    Reader { task, methods: &[] }
}

const fn only(task: Task, methods: &'static [Method]) -> Reader {
    Reader { task, methods }
}

/// The keys only some tasks or methods read, and who reads them.
const READERS: &[(&str, &[Reader])] = &[
    (
        "init",
        &[any(CausalLm), any(ImageClassification), any(Detection)],
    ),
    (
        "data.test",
        &[
            any(Classification),
            any(TokenClassification),
            // Plain LM runs score validation loss only; instruction runs generate answers to the test set.
            only(CausalLm, &[Instruction]),
            any(ImageClassification),
            any(ImageTextContrastive),
            any(VisualInstruction),
            any(MultimodalClassification),
            any(TextToImage),
            any(Detection),
        ],
    ),
    (
        "data.text_field",
        &[
            any(Classification),
            only(CausalLm, &[Lm]),
            any(MultimodalClassification),
        ],
    ),
    (
        "data.label_field",
        &[
            any(Classification),
            any(ImageClassification),
            only(ImageTextContrastive, &[Coop]),
            any(MultimodalClassification),
        ],
    ),
    ("data.tokens_field", &[any(TokenClassification)]),
    ("data.tags_field", &[any(TokenClassification)]),
    (
        "data.split",
        &[
            any(Classification),
            any(TokenClassification),
            any(ImageClassification),
        ],
    ),
    (
        "data.max_length",
        &[
            any(Classification),
            any(TokenClassification),
            any(CausalLm),
            any(VisualInstruction),
            any(MultimodalClassification),
            any(TextToImage),
        ],
    ),
    ("data.format", &[only(CausalLm, &[Instruction])]),
    ("data.messages_field", &[only(CausalLm, &[Instruction])]),
    ("data.packing", &[any(CausalLm)]),
    (
        "data.image_field",
        &[
            any(ImageClassification),
            any(ImageTextContrastive),
            any(VisualInstruction),
            any(MultimodalClassification),
            any(TextToImage),
        ],
    ),
    (
        "data.caption_field",
        &[only(ImageTextContrastive, &[Contrastive])],
    ),
    ("data.augment", &[any(ImageClassification), any(Detection)]),
    ("stage", &[any(VisualInstruction)]),
    (
        "vision_model",
        &[
            any(VisualInstruction),
            any(MultimodalClassification),
            any(TextToImage),
        ],
    ),
    ("projector", &[any(VisualInstruction), any(TextToImage)]),
    ("unfreeze_vision_tower", &[any(VisualInstruction)]),
    ("fusion", &[any(MultimodalClassification)]),
    (
        "freeze_towers",
        &[any(MultimodalClassification), any(TextToImage)],
    ),
    ("loss", &[any(TextToImage)]),
    (
        "prompt.template",
        &[any(Classification), only(ImageTextContrastive, &[Coop])],
    ),
    ("prompt.verbalizer", &[only(Classification, &[Cloze])]),
    (
        "prompt.descriptions",
        &[only(Classification, &[PromptSimilarity])],
    ),
    // Demonstrations are put in front of a cloze template only.
    ("prompt.shots", &[only(Classification, &[Cloze])]),
    (
        "prompt.temperature",
        &[only(Classification, &[PromptSimilarity])],
    ),
    (
        "prompt.context_tokens",
        &[only(ImageTextContrastive, &[Coop])],
    ),
];

/// The keys a parsed recipe sets, with their values: top-level keys, and `section.key` inside the sections
/// (`data.augment` and the prompt maps count as one key each).
pub(super) fn written_keys(root: &toml::Table) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for (key, value) in root {
        match value {
            toml::Value::Table(section) if matches!(key.as_str(), "data" | "prompt" | "train") => {
                for (k, v) in section {
                    out.push((format!("{key}.{k}"), v.clone()));
                }
            }
            _ => out.push((key.clone(), value.clone())),
        }
    }
    out
}

/// The keys `Recipe::to_toml_string` writes for every task, whether set or not, with their default values. A
/// resolved `recipe.toml` (the run folder's, read back on `--resume`) therefore has them all; one of them with its
/// default value asks for nothing and is accepted whatever the task. Computed from the serialised defaults, so it
/// follows the sections' serde attributes.
fn always_written() -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    let sections = [
        ("data", toml::Value::try_from(DataSection::default())),
        ("prompt", toml::Value::try_from(PromptSection::default())),
    ];
    for (name, section) in sections {
        if let Ok(toml::Value::Table(t)) = section {
            out.extend(t.into_iter().map(|(k, v)| (format!("{name}.{k}"), v)));
        }
    }
    out
}

/// Refuses the first of `written` that `task` with `method` does not read.
pub(super) fn check_read(
    written: &[(String, toml::Value)],
    task: Task,
    method: Method,
    origin: &str,
) -> Result<(), RecipeError> {
    let defaults = always_written();
    for (key, value) in written {
        let Some((_, readers)) = READERS.iter().find(|(k, _)| k == key) else {
            continue;
        };
        let reads =
            |r: &Reader| r.task == task && (r.methods.is_empty() || r.methods.contains(&method));
        if readers.iter().any(reads) || defaults.iter().any(|(k, v)| k == key && v == value) {
            continue;
        }
        // When another method of the same task reads the key, the method is what matters: name it, and only the
        // task's own readers (the fix is a change of method, not of task).
        let same_task: Vec<&Reader> = readers.iter().filter(|r| r.task == task).collect();
        let method_matters = !same_task.is_empty();
        let shown = if method_matters {
            same_task
        } else {
            readers.iter().collect()
        };
        return Err(RecipeError::NotRead {
            origin: origin.to_string(),
            key: key.clone(),
            task,
            method: method_matters.then_some(method),
            readers: shown.into_iter().map(describe).collect(),
        });
    }
    Ok(())
}

/// `causal-lm`, or `causal-lm with method "instruction"`.
fn describe(r: &Reader) -> String {
    if r.methods.is_empty() {
        return r.task.as_str().to_string();
    }
    let methods: Vec<String> = r
        .methods
        .iter()
        .map(|m| format!("\"{}\"", m.as_str()))
        .collect();
    let noun = if methods.len() == 1 {
        "method"
    } else {
        "methods"
    };
    format!("{} with {noun} {}", r.task.as_str(), methods.join(" or "))
}
