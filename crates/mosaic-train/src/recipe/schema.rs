//! The schema: every key a recipe may have and the kind of value it takes. Type checking
//! ([`super::check`]), override resolution ([`super::overrides`]) and suggestions ([`super::suggest`]) all
//! walk these tables, so a key added here is known to all three.

use super::metric::METRICS;

/// The kind of value a key takes.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Bool,
    UInt,
    Number,
    OneOf(&'static [&'static str]),
    Freeze,
    Warmup,
    Fractions,
    /// An array of non-negative integers (pixel sizes).
    Sizes,
    Table(&'static [(&'static str, Kind)]),
    /// A table with free keys and string values.
    StrMap,
    /// A table with free keys and string or string-list values.
    WordsMap,
    /// A table with free keys and number values (`[loss]`: objective = weight).
    NumberMap,
    /// A string or a list of strings.
    Words,
    /// A boolean, or one of these names.
    BoolOr(&'static [&'static str]),
}

pub(super) const TASKS: &[&str] = &[
    "classification",
    "token-classification",
    "causal-lm",
    "image-classification",
    "image-text-contrastive",
    "visual-instruction",
    "multimodal-classification",
    "text-to-image",
    "detection",
];
pub(super) const METHODS: &[&str] = &[
    "head",
    "cloze",
    "prompt-similarity",
    "instruction",
    "lm",
    "contrastive",
    "coop",
];
const INITS: &[&str] = &["pretrained", "random"];
const FORMATS: &[&str] = &["alpaca", "chatml", "chat-template"];
const SCHEDULES: &[&str] = &["linear", "cosine", "constant"];
const MODES: &[&str] = &["max", "min"];
const OPTIMIZERS: &[&str] = &["adamw", "sgd"];

const DATA_KEYS: &[(&str, Kind)] = &[
    ("train", Kind::Str),
    ("valid", Kind::Str),
    ("test", Kind::Str),
    ("text_field", Kind::Str),
    ("label_field", Kind::Str),
    ("tokens_field", Kind::Str),
    ("tags_field", Kind::Str),
    ("split", Kind::Fractions),
    ("max_length", Kind::UInt),
    ("format", Kind::OneOf(FORMATS)),
    ("messages_field", Kind::Str),
    ("packing", Kind::Bool),
    ("image_field", Kind::Str),
    ("caption_field", Kind::Str),
    ("augment", Kind::Table(AUGMENT_KEYS)),
];

const AUGMENT_KEYS: &[(&str, Kind)] = &[
    ("random_resized_crop", Kind::Bool),
    ("scale", Kind::Fractions),
    ("ratio", Kind::Fractions),
    ("hflip_prob", Kind::Number),
    ("brightness", Kind::Number),
    ("contrast", Kind::Number),
    ("saturation", Kind::Number),
    ("crop_prob", Kind::Number),
    ("crop_scale", Kind::Fractions),
    ("scales", Kind::Sizes),
    ("max_size", Kind::UInt),
];

const PROMPT_KEYS: &[(&str, Kind)] = &[
    ("template", Kind::Str),
    ("verbalizer", Kind::WordsMap),
    ("descriptions", Kind::StrMap),
    ("shots", Kind::UInt),
    ("temperature", Kind::Number),
    ("context_tokens", Kind::UInt),
];

const TRAIN_KEYS: &[(&str, Kind)] = &[
    ("epochs", Kind::UInt),
    ("batch_size", Kind::UInt),
    ("lr", Kind::Number),
    ("weight_decay", Kind::Number),
    ("warmup", Kind::Warmup),
    ("schedule", Kind::OneOf(SCHEDULES)),
    ("grad_accum", Kind::UInt),
    ("max_grad_norm", Kind::Number),
    ("freeze", Kind::Freeze),
    ("seed", Kind::UInt),
    ("patience", Kind::UInt),
    ("min_delta", Kind::Number),
    ("metric", Kind::OneOf(METRICS)),
    ("mode", Kind::OneOf(MODES)),
    ("optimizer", Kind::OneOf(OPTIMIZERS)),
    ("momentum", Kind::Number),
    ("eval_every", Kind::UInt),
    ("fgm_epsilon", Kind::Number),
    ("save_every", Kind::UInt),
    ("save_total_limit", Kind::UInt),
    ("on_nonfinite", Kind::OneOf(NONFINITE)),
];

const NONFINITE: &[&str] = &["stop", "skip"];

const PEFT_KEYS: &[(&str, Kind)] = &[
    (
        "method",
        Kind::OneOf(&["lora", "prompt-tuning", "prefix-tuning"]),
    ),
    ("r", Kind::UInt),
    ("alpha", Kind::Number),
    ("dropout", Kind::Number),
    ("target_modules", Kind::Words),
    ("modules_to_save", Kind::Words),
    ("use_rslora", Kind::Bool),
    ("use_dora", Kind::Bool),
    ("bias", Kind::OneOf(&["none"])),
    ("adapter", Kind::Str),
    ("num_virtual_tokens", Kind::UInt),
    ("init", Kind::OneOf(&["random", "text"])),
    ("init_text", Kind::Str),
    ("prefix_projection", Kind::Bool),
    ("encoder_hidden_size", Kind::UInt),
];

/// The top-level keys; sections nest their own tables.
pub(super) const ROOT_KEYS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("model", Kind::Str),
    ("task", Kind::OneOf(TASKS)),
    ("method", Kind::OneOf(METHODS)),
    ("init", Kind::OneOf(INITS)),
    ("output", Kind::Str),
    ("data", Kind::Table(DATA_KEYS)),
    ("prompt", Kind::Table(PROMPT_KEYS)),
    ("train", Kind::Table(TRAIN_KEYS)),
    ("peft", Kind::Table(PEFT_KEYS)),
    ("stage", Kind::OneOf(&["align", "instruct"])),
    ("vision_model", Kind::Str),
    ("projector", Kind::OneOf(&["mlp2x_gelu", "linear"])),
    ("unfreeze_vision_tower", Kind::Bool),
    (
        "fusion",
        Kind::OneOf(&[
            "concat",
            "cross-attention",
            "weighted-sum",
            "image-only",
            "text-only",
        ]),
    ),
    ("freeze_towers", Kind::BoolOr(&["image", "text"])),
    ("loss", Kind::NumberMap),
];

/// Every fixed dotted key of the schema.
pub(super) fn all_keys() -> Vec<String> {
    fn walk(prefix: &str, keys: &[(&str, Kind)], out: &mut Vec<String>) {
        for (k, kind) in keys {
            let full = join(prefix, k);
            if let Kind::Table(sub) = kind {
                walk(&full, sub, out);
            }
            out.push(full);
        }
    }
    let mut out = Vec::new();
    walk("", ROOT_KEYS, &mut out);
    out
}

/// `prefix.key`, or `key` at the top level.
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}
