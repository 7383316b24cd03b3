//! Training recipes: TOML files describing a model, data, prompt and training
//! hyper-parameters.
//!
//! ```toml
//! name = "sst2-bert"
//! model = "bert-base-uncased"
//! task = "classification"          # or "token-classification"
//! method = "head"                  # or "cloze", "prompt-similarity"
//!
//! [data]
//! train = "data/train.jsonl"
//! split = [0.9, 0.1]               # train / valid fractions (no valid file)
//!
//! [train]
//! epochs = 3
//! lr = 2e-5
//! warmup = 0.1                     # a float is a ratio, an integer a step count
//! ```
//!
//! Parsing is strict: an unknown key anywhere is an error naming the full
//! dotted key and suggesting the nearest valid one (`unknown key `train.lrr`
//! (did you mean `train.lr`?)`); a value of the wrong type or out of range is
//! an error naming its key. [`apply_override`] applies `--set key=value`
//! overrides to the parsed TOML before it is resolved.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::early_stopping::Mode;
use crate::schedule::{ScheduleKind, Warmup};

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error in a recipe or an override. `origin` names where it came from
/// (the file, or `--set ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecipeError {
    /// The text is not valid TOML.
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    /// A key that recipes do not have.
    #[error("{origin}: unknown key `{key}`{}", did_you_mean(.suggestion))]
    UnknownKey {
        origin: String,
        key: String,
        suggestion: Option<String>,
    },
    /// A required key is absent.
    #[error("{origin}: missing required key `{key}`")]
    Missing { origin: String, key: String },
    /// A value of the wrong type or out of range.
    #[error("{origin}: `{key}` {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    /// A malformed `--set` override.
    #[error("--set `{spec}`: {message}")]
    Override { spec: String, message: String },
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

impl RecipeError {
    /// The dotted key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            RecipeError::UnknownKey { key, .. }
            | RecipeError::Missing { key, .. }
            | RecipeError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn invalid(origin: &str, key: &str, message: impl Into<String>) -> RecipeError {
    RecipeError::Invalid {
        origin: origin.to_string(),
        key: key.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// What is predicted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// One label per text.
    #[default]
    Classification,
    /// One tag per token (BIO tags).
    TokenClassification,
    /// Next-token prediction with a decoder-only LM (GPT-2): instruction tuning or plain LM training.
    CausalLm,
    /// One label per image (ResNet-style CNN or ViT with a classification head).
    ImageClassification,
    /// CLIP: image-text contrastive fine-tuning (symmetric InfoNCE) or learned soft prompts (CoOp).
    ImageTextContrastive,
}

/// How the model is adapted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// A classification head on top of the encoder.
    #[default]
    Head,
    /// Masked-LM cloze prompts with a verbalizer.
    Cloze,
    /// Similarity between the text and label descriptions / prompts.
    PromptSimilarity,
    /// Instruction tuning of a causal LM: the loss counts response tokens only.
    Instruction,
    /// Plain causal-LM training on raw text (every token counts).
    Lm,
    /// CLIP contrastive fine-tuning of both towers and `logit_scale`.
    Contrastive,
    /// CoOp: learned context vectors in front of the class name; both CLIP towers frozen.
    Coop,
}

/// Where the model's weights come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// The folder's `model.safetensors` (default).
    #[default]
    Pretrained,
    /// A fresh seeded initialisation from the folder's `config.json` (pretraining from scratch).
    Random,
}

/// The optimizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adamw,
    Sgd,
}

/// Which parameters are frozen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Freeze {
    /// Train everything (`"none"`).
    #[default]
    None,
    /// Freeze the embeddings (`"embeddings"`).
    Embeddings,
    /// Train only the top N encoder layers and the head (`"all-but-top-N"`).
    AllButTopN(usize),
    /// Train only the head (`"all-but-head"`).
    AllButHead,
}

impl fmt::Display for Freeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Freeze::None => f.write_str("none"),
            Freeze::Embeddings => f.write_str("embeddings"),
            Freeze::AllButTopN(n) => write!(f, "all-but-top-{n}"),
            Freeze::AllButHead => f.write_str("all-but-head"),
        }
    }
}

impl std::str::FromStr for Freeze {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Freeze::None),
            "embeddings" => Ok(Freeze::Embeddings),
            "all-but-head" => Ok(Freeze::AllButHead),
            _ => match s.strip_prefix("all-but-top-").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Freeze::AllButTopN(n)),
                _ => Err(format!(
                    "must be \"none\", \"embeddings\", \"all-but-head\" or \"all-but-top-N\" \
                     (N a number of layers), not \"{s}\""
                )),
            },
        }
    }
}

impl Serialize for Freeze {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Freeze {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A label's verbalization: one word or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Verbalization {
    One(String),
    Many(Vec<String>),
}

impl Verbalization {
    pub fn words(&self) -> Vec<&str> {
        match self {
            Verbalization::One(w) => vec![w.as_str()],
            Verbalization::Many(ws) => ws.iter().map(String::as_str).collect(),
        }
    }
}

/// `[data]`: where the examples come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// The text column (classification). Default `text`.
    pub text_field: String,
    /// The label column (classification). Default `label`.
    pub label_field: String,
    /// The token-list column (token classification). Default `tokens`.
    pub tokens_field: String,
    /// The tag-list column (token classification). Default `tags`.
    pub tags_field: String,
    /// Fractions to split `train` into: `[train, valid]` or
    /// `[train, valid, test]`, summing to 1. Only when `valid` is not given
    /// (and two fractions when `test` is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Vec<f64>>,
    /// Maximum tokens per example; the model's limit when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Causal-LM instruction format: `alpaca` (default), `chatml` or `chat-template` (the model's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Causal-LM instruction data: the column holding `[{"role", "content"}, ...]`. Default `messages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_field: Option<String>,
    /// Causal LM: pack several examples into each `max_length` sequence (attention and positions never cross
    /// example boundaries). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub packing: bool,
    /// Image tasks: the JSONL column holding the image path (relative to the JSONL file). Default `image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_field: Option<String>,
    /// Image-text tasks: the JSONL column holding the caption. Default `caption`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption_field: Option<String>,
    /// Image classification: seeded augmentation of the training images (`[data.augment]`); none when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentSection>,
}

/// `[data.augment]`: random changes to each training image, drawn anew every epoch from `train.seed`, the epoch
/// and the image (see `mosaic_data::image::ImageAugmentation`). The defaults are torchvision's ImageNet ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentSection {
    /// Crop a random region (area fraction in `scale`, aspect ratio in `ratio`) and resize it to the model's
    /// input size; otherwise the preprocessor's own resize. Default true.
    pub random_resized_crop: bool,
    /// Default `[0.08, 1.0]`.
    pub scale: [f64; 2],
    /// Default `[0.75, 1.3333]`.
    pub ratio: [f64; 2],
    /// Probability of mirroring left to right. Default 0.5.
    pub hflip_prob: f64,
    /// Jitter factors drawn from `[1 - x, 1 + x]`; 0 = off (default).
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
}

impl Default for AugmentSection {
    fn default() -> Self {
        let d = mosaic_data::image::ImageAugmentation::default();
        Self {
            random_resized_crop: d.random_resized_crop,
            scale: d.scale,
            ratio: d.ratio,
            hflip_prob: d.hflip_prob,
            brightness: d.brightness,
            contrast: d.contrast,
            saturation: d.saturation,
        }
    }
}

impl AugmentSection {
    /// The augmentation with its random stream seeded by `seed`.
    pub fn with_seed(&self, seed: u64) -> mosaic_data::image::ImageAugmentation {
        mosaic_data::image::ImageAugmentation {
            random_resized_crop: self.random_resized_crop,
            scale: self.scale,
            ratio: self.ratio,
            hflip_prob: self.hflip_prob,
            brightness: self.brightness,
            contrast: self.contrast,
            saturation: self.saturation,
            seed,
        }
    }
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: None,
            valid: None,
            test: None,
            text_field: "text".into(),
            label_field: "label".into(),
            tokens_field: "tokens".into(),
            tags_field: "tags".into(),
            split: None,
            max_length: None,
            format: None,
            messages_field: None,
            packing: false,
            image_field: None,
            caption_field: None,
            augment: None,
        }
    }
}

/// `[prompt]`: prompt-based methods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Label -> word(s).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub verbalizer: BTreeMap<String, Verbalization>,
    /// Label -> description.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub descriptions: BTreeMap<String, String>,
    /// Demonstrations per label in the prompt. Default 0.
    pub shots: usize,
    /// Softmax temperature for similarity scores; the method's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// CoOp: the number of learned context vectors in front of each class name. Default 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<usize>,
}

/// Metric names `train.metric` accepts. For token classification the
/// F1/precision/recall are entity-level (seqeval) and `accuracy` is
/// token accuracy.
pub const METRICS: &[&str] = &[
    "loss",
    "accuracy",
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "precision_micro",
    "precision_macro",
    "precision_weighted",
    "recall_micro",
    "recall_macro",
    "recall_weighted",
    "recall_at_1",
    "recall_at_5",
];

/// The default `train.metric` for a task: `f1_macro` for classification,
/// `f1_micro` (seqeval's headline entity F1) for token classification.
pub fn default_metric(task: Task) -> &'static str {
    match task {
        Task::Classification => "f1_macro",
        Task::TokenClassification => "f1_micro",
        Task::CausalLm => "loss",
        // Mean of image→text and text→image recall@1 (CoOp recipes default to `accuracy` instead).
        Task::ImageTextContrastive => "recall_at_1",
        Task::ImageClassification => "f1_macro",
    }
}

/// `[train]`: optimisation hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Default 3.
    pub epochs: usize,
    /// Examples per optimizer micro-batch. Default 16.
    pub batch_size: usize,
    /// Peak learning rate. Default 2e-5.
    pub lr: f64,
    /// Decoupled (AdamW) or L2 (SGD) weight decay; never applied to biases
    /// and norm weights. Default 0.01.
    pub weight_decay: f64,
    /// Warmup steps (integer) or ratio of total steps (float). Default 0.1.
    pub warmup: Warmup,
    /// Default `linear`.
    pub schedule: ScheduleKind,
    /// Micro-batches per optimizer step. Default 1.
    pub grad_accum: usize,
    /// Global gradient-norm clip; 0 disables. Default 1.0.
    pub max_grad_norm: f64,
    /// Default `none`.
    pub freeze: Freeze,
    /// Default 42.
    pub seed: u64,
    /// Evaluations without improvement before stopping; 0 disables early
    /// stopping. Default 0.
    pub patience: usize,
    /// Minimum improvement of `metric`. Default 0.
    pub min_delta: f64,
    /// The metric for model selection and early stopping (one of
    /// [`METRICS`]). Default: [`default_metric`] of the task.
    pub metric: String,
    /// Whether `metric` is better high or low. Default: `min` for `loss`,
    /// else `max`.
    pub mode: Mode,
    /// Default `adamw`.
    pub optimizer: OptimizerKind,
    /// SGD momentum. Default 0.9.
    pub momentum: f64,
    /// Evaluate every N optimizer steps (as well as after each epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// FGM adversarial training on the embeddings with this epsilon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fgm_epsilon: Option<f64>,
    /// Save a resumable checkpoint every N optimizer steps (0: at the end of each epoch only).
    pub save_every: usize,
    /// How many resumable step checkpoints to keep (the newest, plus the one at the best step).
    pub save_total_limit: usize,
    /// A NaN or inf in the loss or the gradients: stop the run, or skip that step.
    pub on_nonfinite: NonFinite,
}

/// What to do with a non-finite loss or gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    #[default]
    Stop,
    Skip,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 16,
            lr: 2e-5,
            weight_decay: 0.01,
            warmup: Warmup::Ratio(0.1),
            schedule: ScheduleKind::Linear,
            grad_accum: 1,
            max_grad_norm: 1.0,
            freeze: Freeze::None,
            seed: 42,
            patience: 0,
            min_delta: 0.0,
            metric: default_metric(Task::Classification).to_string(),
            mode: Mode::Max,
            optimizer: OptimizerKind::Adamw,
            momentum: 0.9,
            eval_every: None,
            fgm_epsilon: None,
            save_every: 0,
            save_total_limit: 2,
            on_nonfinite: NonFinite::Stop,
        }
    }
}

/// A resolved training recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Default: the recipe file's stem.
    pub name: String,
    /// A Hugging Face model id or a local model folder.
    pub model: String,
    /// Default `classification`.
    #[serde(default)]
    pub task: Task,
    /// Default `head`.
    #[serde(default)]
    pub method: Method,
    /// Default `pretrained`; `random` initialises from `config.json` with the seed.
    #[serde(default, skip_serializing_if = "is_default_init")]
    pub init: Init,
    /// The run folder. Default `runs/<name>`.
    pub output: PathBuf,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub prompt: PromptSection,
    #[serde(default)]
    pub train: TrainSection,
}

fn is_default_init(init: &Init) -> bool {
    *init == Init::Pretrained
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------
// Schema: the keys recipes have, and the types of their values
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    UInt,
    Number,
    OneOf(&'static [&'static str]),
    Freeze,
    Warmup,
    Fractions,
    Table(&'static [(&'static str, Kind)]),
    /// A table with free keys and string values.
    StrMap,
    /// A table with free keys and string or string-list values.
    WordsMap,
}

const TASKS: &[&str] = &[
    "classification",
    "token-classification",
    "causal-lm",
    "image-classification",
    "image-text-contrastive",
];
const METHODS: &[&str] = &[
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

const ROOT_KEYS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("model", Kind::Str),
    ("task", Kind::OneOf(TASKS)),
    ("method", Kind::OneOf(METHODS)),
    ("init", Kind::OneOf(INITS)),
    ("output", Kind::Str),
    ("data", Kind::Table(DATA_KEYS)),
    ("prompt", Kind::Table(PROMPT_KEYS)),
    ("train", Kind::Table(TRAIN_KEYS)),
];

/// Names people reach for from other tools, and the recipe key they mean.
const ALIASES: &[(&str, &str)] = &[
    ("learning_rate", "train.lr"),
    ("num_train_epochs", "train.epochs"),
    ("num_epochs", "train.epochs"),
    ("per_device_train_batch_size", "train.batch_size"),
    ("train_batch_size", "train.batch_size"),
    ("gradient_accumulation_steps", "train.grad_accum"),
    ("warmup_ratio", "train.warmup"),
    ("warmup_steps", "train.warmup"),
    ("lr_scheduler_type", "train.schedule"),
    ("scheduler", "train.schedule"),
    ("max_norm", "train.max_grad_norm"),
    ("early_stopping_patience", "train.patience"),
    ("metric_for_best_model", "train.metric"),
    ("eval_steps", "train.eval_every"),
    ("max_seq_length", "data.max_length"),
    ("max_len", "data.max_length"),
    ("output_dir", "output"),
    ("model_name_or_path", "model"),
    ("validation", "data.valid"),
    ("dev", "data.valid"),
];

/// Every fixed dotted key of the schema.
fn all_keys() -> Vec<String> {
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

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Lower case without `_` and `-`, so that `learningRate`, `learning-rate`
/// and `learning_rate` compare equal.
fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn close_enough(a: &str, b: &str) -> Option<usize> {
    let (a, b) = (normalize(a), normalize(b));
    let d = strsim::damerau_levenshtein(&a, &b);
    let limit = (a.chars().count().max(b.chars().count()) / 3).max(1);
    (d <= limit).then_some(d)
}

/// The valid dotted key nearest to the unknown `key` in section `prefix`.
fn suggest(prefix: &str, key: &str, section: &[(&str, Kind)]) -> Option<String> {
    let leaf = normalize(key);
    // 1. A known alias.
    if let Some((_, target)) = ALIASES.iter().find(|(a, _)| normalize(a) == leaf) {
        return Some((*target).to_string());
    }
    // 2. A similar key in the same section.
    let same = section
        .iter()
        .filter_map(|(k, _)| close_enough(&leaf, k).map(|d| (d, *k)))
        .min_by_key(|(d, _)| *d);
    if let Some((_, k)) = same {
        return Some(join(prefix, k));
    }
    // 3. The same or a similar key in another section.
    all_keys()
        .into_iter()
        .filter_map(|full| {
            let last = full.rsplit('.').next().unwrap_or(&full).to_string();
            close_enough(&leaf, &last).map(|d| (d, full))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// "an integer", "a table", ...
fn a_type(v: &toml::Value) -> String {
    let t = v.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

fn check_value(v: &toml::Value, kind: Kind, key: &str, origin: &str) -> Result<(), RecipeError> {
    use toml::Value as V;
    let wrong = |what: &str| {
        let got = match v {
            V::String(s) => format!("the string \"{s}\""),
            V::Integer(i) => format!("the integer {i}"),
            V::Float(f) => format!("the float {f}"),
            V::Boolean(b) => format!("the boolean {b}"),
            other => a_type(other),
        };
        invalid(origin, key, format!("must be {what}, not {got}"))
    };
    match kind {
        Kind::Str => match v {
            V::String(_) => Ok(()),
            _ => Err(wrong("a string")),
        },
        Kind::Bool => match v {
            V::Boolean(_) => Ok(()),
            _ => Err(wrong("true or false")),
        },
        Kind::UInt => match v {
            V::Integer(i) if *i >= 0 => Ok(()),
            _ => Err(wrong("a non-negative integer")),
        },
        Kind::Number => match v {
            V::Integer(_) | V::Float(_) => Ok(()),
            _ => Err(wrong("a number")),
        },
        Kind::Warmup => match v {
            V::Integer(i) if *i >= 0 => Ok(()),
            V::Float(_) => Ok(()),
            _ => Err(wrong(
                "a step count (integer) or a ratio of the total steps (float)",
            )),
        },
        Kind::OneOf(options) => match v {
            V::String(s) if options.contains(&s.as_str()) => Ok(()),
            V::String(s) => {
                let list = options
                    .iter()
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                let hint = options
                    .iter()
                    .filter_map(|o| close_enough(s, o).map(|d| (d, *o)))
                    .min_by_key(|(d, _)| *d)
                    .map(|(_, o)| format!(" (did you mean \"{o}\"?)"))
                    .unwrap_or_default();
                Err(invalid(
                    origin,
                    key,
                    format!("must be one of {list}, not \"{s}\"{hint}"),
                ))
            }
            _ => Err(wrong("a string")),
        },
        Kind::Freeze => match v {
            V::String(s) => s
                .parse::<Freeze>()
                .map(|_| ())
                .map_err(|m| invalid(origin, key, m)),
            _ => Err(wrong("a string")),
        },
        Kind::Fractions => match v {
            V::Array(items) if items.iter().all(|x| x.is_integer() || x.is_float()) => Ok(()),
            _ => Err(wrong("an array of fractions like [0.8, 0.1, 0.1]")),
        },
        Kind::Table(keys) => match v {
            V::Table(t) => check_table(t, keys, key, origin),
            _ => Err(wrong(&format!("a table (a `[{key}]` section)"))),
        },
        Kind::StrMap => match v {
            V::Table(t) => {
                for (label, x) in t {
                    check_value(x, Kind::Str, &join(key, label), origin)?;
                }
                Ok(())
            }
            _ => Err(wrong("a table of label = \"text\"")),
        },
        Kind::WordsMap => match v {
            V::Table(t) => {
                for (label, x) in t {
                    let ok = match x {
                        V::String(_) => true,
                        V::Array(ws) => ws.iter().all(|w| w.is_str()),
                        _ => false,
                    };
                    if !ok {
                        let k = join(key, label);
                        return Err(invalid(
                            origin,
                            &k,
                            format!("must be a word or a list of words, not {}", a_type(x)),
                        ));
                    }
                }
                Ok(())
            }
            _ => Err(wrong("a table of label = \"word\" or [\"words\"]")),
        },
    }
}

fn check_table(
    t: &toml::Table,
    keys: &[(&str, Kind)],
    prefix: &str,
    origin: &str,
) -> Result<(), RecipeError> {
    for (k, v) in t {
        let full = join(prefix, k);
        match keys.iter().find(|(name, _)| name == k) {
            Some((_, kind)) => check_value(v, *kind, &full, origin)?,
            None => {
                return Err(RecipeError::UnknownKey {
                    origin: origin.to_string(),
                    key: full,
                    suggestion: suggest(prefix, k, keys),
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------

/// Applies one `--set key=value` override to a parsed recipe.
///
/// `key` is a dotted recipe key (`train.lr`, `prompt.verbalizer.positive`);
/// unknown keys are errors with a suggestion. `value` is parsed as a TOML
/// value (`3e-5`, `true`, `[0.8, 0.2]`, `"text"`); when that fails, or the
/// key takes a string and the value parses as something else, the raw text
/// is used as a string.
pub fn apply_override(root: &mut toml::Value, spec: &str) -> Result<(), RecipeError> {
    let override_err = |message: &str| RecipeError::Override {
        spec: spec.to_string(),
        message: message.to_string(),
    };
    let Some((key, raw)) = spec.split_once('=') else {
        return Err(override_err("expected key=value"));
    };
    let key = key.trim();
    let raw = raw.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(override_err(
            "expected key=value, with a dotted key like train.lr",
        ));
    }
    let origin = format!("--set {spec}");

    // Resolve the key against the schema.
    let mut keys = ROOT_KEYS;
    let mut leaf_kind = None;
    let mut prefix = String::new();
    for (i, part) in parts.iter().enumerate() {
        let Some((_, kind)) = keys.iter().find(|(k, _)| k == part) else {
            return Err(RecipeError::UnknownKey {
                origin,
                key: join(&prefix, part),
                suggestion: suggest(&prefix, part, keys),
            });
        };
        let last = i + 1 == parts.len();
        match kind {
            Kind::Table(sub) if !last => keys = sub,
            Kind::StrMap | Kind::WordsMap if !last => {
                if i + 2 != parts.len() {
                    return Err(invalid(&origin, key, "has too many parts"));
                }
                leaf_kind = Some(if matches!(kind, Kind::StrMap) {
                    Kind::Str
                } else {
                    Kind::WordsMap
                });
                break;
            }
            _ if !last => {
                return Err(RecipeError::UnknownKey {
                    origin,
                    key: key.to_string(),
                    suggestion: Some(join(&prefix, part)),
                });
            }
            _ => leaf_kind = Some(*kind),
        }
        prefix = join(&prefix, part);
    }
    let leaf_kind = leaf_kind.expect("the loop sets it");

    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    let wants_string = matches!(leaf_kind, Kind::Str | Kind::OneOf(_) | Kind::Freeze);
    let value = match parsed {
        Some(v) if !wants_string || v.is_str() => v,
        _ => toml::Value::String(raw.to_string()),
    };

    // Insert, creating tables on the way.
    let mut node = root;
    for part in &parts[..parts.len() - 1] {
        let toml::Value::Table(t) = node else {
            return Err(override_err("the recipe is not a table"));
        };
        let entry = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        node = entry;
    }
    let toml::Value::Table(t) = node else {
        return Err(override_err("the recipe is not a table"));
    };
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

// ---------------------------------------------------------------------------
// Parsing, resolution, validation
// ---------------------------------------------------------------------------

impl Recipe {
    /// Parses and resolves a recipe. `origin` (usually the file path) names
    /// it in errors; its stem is the default `name`.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, RecipeError> {
        Self::from_toml_str_with_overrides(text, origin, &[] as &[&str])
    }

    /// Reads and resolves a recipe file.
    pub fn from_file(path: &Path) -> Result<Self, RecipeError> {
        Self::from_file_with_overrides(path, &[] as &[&str])
    }

    /// Reads a recipe file and applies `--set` overrides.
    pub fn from_file_with_overrides<S: AsRef<str>>(
        path: &Path,
        overrides: &[S],
    ) -> Result<Self, RecipeError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Syntax {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml_str_with_overrides(&text, &origin, overrides)
    }

    /// Parses a recipe, applies `--set` overrides in order, and resolves it.
    pub fn from_toml_str_with_overrides<S: AsRef<str>>(
        text: &str,
        origin: &str,
        overrides: &[S],
    ) -> Result<Self, RecipeError> {
        let mut value = parse_toml(text, origin)?;
        for o in overrides {
            apply_override(&mut value, o.as_ref())?;
        }
        Self::from_value(value, origin)
    }

    /// Resolves a parsed recipe: checks every key and value type, fills the
    /// defaults that depend on other keys, and validates ranges.
    pub fn from_value(mut value: toml::Value, origin: &str) -> Result<Self, RecipeError> {
        let toml::Value::Table(root) = &mut value else {
            return Err(invalid(origin, "", "the recipe must be a table"));
        };
        check_table(root, ROOT_KEYS, "", origin)?;
        if !root.contains_key("model") {
            return Err(RecipeError::Missing {
                origin: origin.to_string(),
                key: "model".into(),
            });
        }
        if !root.contains_key("name") {
            let stem = Path::new(origin)
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| !s.is_empty() && !s.starts_with('<'))
                .ok_or_else(|| RecipeError::Missing {
                    origin: origin.to_string(),
                    key: "name".into(),
                })?;
            root.insert("name".into(), toml::Value::String(stem.to_string()));
        }
        if !root.contains_key("output") {
            let name = root["name"].as_str().unwrap_or("run");
            let out = Path::new("runs").join(name).display().to_string();
            root.insert("output".into(), toml::Value::String(out));
        }
        let task = match root.get("task").and_then(|t| t.as_str()) {
            Some("token-classification") => Task::TokenClassification,
            Some("causal-lm") => Task::CausalLm,
            Some("image-text-contrastive") => Task::ImageTextContrastive,
            Some("image-classification") => Task::ImageClassification,
            _ => Task::Classification,
        };
        // CoOp classifies: its default metric is accuracy, not retrieval recall.
        let coop = root.get("method").and_then(|m| m.as_str()) == Some("coop");
        let default = match task {
            Task::ImageTextContrastive if coop => "accuracy",
            _ => default_metric(task),
        };
        let train = root
            .entry("train")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("checked to be a table");
        let metric = train
            .entry("metric")
            .or_insert_with(|| toml::Value::String(default.into()))
            .as_str()
            .expect("checked to be a string")
            .to_string();
        train
            .entry("mode")
            .or_insert_with(|| toml::Value::String(Mode::for_metric(&metric).as_str().into()));

        let recipe: Recipe =
            value
                .try_into()
                .map_err(|e: toml::de::Error| RecipeError::Invalid {
                    origin: origin.to_string(),
                    key: String::new(),
                    message: e.to_string(),
                })?;
        recipe.validate(origin)?;
        Ok(recipe)
    }

    /// Checks value ranges and combinations; errors name the key.
    pub fn validate(&self, origin: &str) -> Result<(), RecipeError> {
        let bad = |key: &str, msg: &str| Err(invalid(origin, key, msg));
        let t = &self.train;
        if self.model.trim().is_empty() {
            return bad("model", "must not be empty");
        }
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty");
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad(
                "train.lr",
                &format!("must be a positive number, not {}", t.lr),
            );
        }
        if t.epochs == 0 {
            return bad("train.epochs", "must be at least 1");
        }
        if t.batch_size == 0 {
            return bad("train.batch_size", "must be at least 1");
        }
        if t.grad_accum == 0 {
            return bad("train.grad_accum", "must be at least 1");
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad("train.weight_decay", "must be a non-negative number");
        }
        if !(t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
            return bad(
                "train.max_grad_norm",
                "must be a non-negative number (0 disables clipping)",
            );
        }
        if let Warmup::Ratio(r) = t.warmup
            && !(0.0..=1.0).contains(&r)
        {
            return bad(
                "train.warmup",
                &format!("as a float is a ratio of the total steps and must be in [0, 1], not {r}"),
            );
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return bad("train.momentum", "must be in [0, 1)");
        }
        if !(t.min_delta.is_finite() && t.min_delta >= 0.0) {
            return bad("train.min_delta", "must be a non-negative number");
        }
        if t.eval_every == Some(0) {
            return bad(
                "train.eval_every",
                "must be at least 1 (leave it out to evaluate per epoch)",
            );
        }
        if let Some(e) = t.fgm_epsilon
            && !(e.is_finite() && e > 0.0)
        {
            return bad("train.fgm_epsilon", "must be a positive number");
        }
        if self.data.max_length == Some(0) {
            return bad("data.max_length", "must be at least 1");
        }
        if let Some(split) = &self.data.split {
            if self.data.valid.is_some() {
                return bad(
                    "data.split",
                    "is for splitting `data.train` when there is no `data.valid`",
                );
            }
            let want = if self.data.test.is_some() {
                "2 fractions ([train, valid], since `data.test` is given)"
            } else {
                "2 or 3 fractions ([train, valid] or [train, valid, test])"
            };
            let ok_len = if self.data.test.is_some() {
                split.len() == 2
            } else {
                split.len() == 2 || split.len() == 3
            };
            if !ok_len {
                return bad("data.split", &format!("must have {want}"));
            }
            if split
                .iter()
                .any(|f| !(f.is_finite() && *f > 0.0 && *f < 1.0))
            {
                return bad("data.split", "fractions must be between 0 and 1");
            }
            let sum: f64 = split.iter().sum();
            if (sum - 1.0).abs() > 1e-6 {
                return bad("data.split", &format!("fractions must sum to 1, not {sum}"));
            }
        }
        if self.data.split.is_some() && self.data.train.is_none() {
            return bad("data.split", "needs `data.train`");
        }
        match self.method {
            Method::Head if self.data.train.is_none() => {
                return Err(RecipeError::Missing {
                    origin: origin.into(),
                    key: "data.train".into(),
                });
            }
            _ if self.data.train.is_none() && self.data.test.is_none() => {
                return bad("data", "needs `train` or `test`");
            }
            _ => {}
        }
        let lm_method = matches!(self.method, Method::Instruction | Method::Lm);
        if self.task == Task::CausalLm && !lm_method {
            return bad("method", "must be \"instruction\" or \"lm\" for causal-lm");
        }
        if lm_method && self.task != Task::CausalLm {
            return bad(
                "task",
                "must be \"causal-lm\" for methods \"instruction\" and \"lm\"",
            );
        }
        if self.task == Task::CausalLm && self.data.train.is_none() {
            return Err(RecipeError::Missing {
                origin: origin.into(),
                key: "data.train".into(),
            });
        }
        if self.task == Task::ImageClassification && self.method != Method::Head {
            return bad("method", "must be \"head\" for image-classification");
        }
        let clip_method = matches!(self.method, Method::Contrastive | Method::Coop);
        if self.task == Task::ImageTextContrastive && !clip_method {
            return bad(
                "method",
                "must be \"contrastive\" or \"coop\" for image-text-contrastive",
            );
        }
        if clip_method && self.task != Task::ImageTextContrastive {
            return bad(
                "task",
                "must be \"image-text-contrastive\" for methods \"contrastive\" and \"coop\"",
            );
        }
        if self.init == Init::Random
            && !matches!(self.task, Task::CausalLm | Task::ImageClassification)
        {
            return bad(
                "init",
                "\"random\" is for causal-lm and image-classification (training from scratch)",
            );
        }
        if self.task == Task::TokenClassification && self.method != Method::Head {
            return bad("method", "must be \"head\" for token-classification");
        }
        if let Some(temp) = self.prompt.temperature
            && !(temp.is_finite() && temp > 0.0)
        {
            return bad("prompt.temperature", "must be a positive number");
        }
        for (label, v) in &self.prompt.verbalizer {
            let words = v.words();
            if words.is_empty() || words.iter().any(|w| w.is_empty()) {
                return bad(
                    &format!("prompt.verbalizer.{label}"),
                    "must be a non-empty word or list of non-empty words",
                );
            }
        }
        Ok(())
    }

    /// The resolved recipe as TOML (every default written out).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe serialises to TOML")
    }

    /// The early-stopping mode and metric, for convenience.
    pub fn early_stopping(&self) -> crate::early_stopping::EarlyStopping {
        crate::early_stopping::EarlyStopping::new(
            self.train.metric.clone(),
            self.train.mode,
            self.train.patience,
            self.train.min_delta,
        )
    }
}

/// Parses TOML text into a value, with a clear error.
pub fn parse_toml(text: &str, origin: &str) -> Result<toml::Value, RecipeError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| RecipeError::Syntax {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
}
