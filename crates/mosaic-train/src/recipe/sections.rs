//! The `[data]`, `[data.augment]`, `[prompt]` and `[train]` sections and the [`Recipe`] they make up, with their
//! defaults. The field order here is the order `recipe.toml` is written in, so moving a field changes every run
//! folder's hashes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::choices::{Freeze, Init, Method, NonFinite, OptimizerKind, Task, Verbalization};
use super::metric::default_metric;
use crate::early_stopping::Mode;
use crate::schedule::{ScheduleKind, Warmup};

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
/// and the image. Image classification reads `random_resized_crop`, `scale`, `ratio`, `hflip_prob` and the colour
/// jitter (`mosaic_data::image::ImageAugmentation`; the defaults are torchvision's ImageNet ones); detection reads
/// `hflip_prob`, `crop_prob`, `crop_scale`, `scales` and `max_size` (`mosaic_data::image::DetrAugmentation`, boxes
/// moved with the pixels). A key the task does not read must keep its default.
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
    /// Detection: probability of cropping a random region (boxes clipped, emptied ones dropped). Default 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub crop_prob: f64,
    /// Detection: the crop's width and height as fractions of the image's. Default `[0.5, 1.0]`.
    #[serde(skip_serializing_if = "is_default_crop_scale")]
    pub crop_scale: [f64; 2],
    /// Detection: shortest edges to draw from (DETR's multi-scale training); empty (default) keeps the
    /// processor's resize.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scales: Vec<usize>,
    /// Detection: the cap on the longer side with `scales`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<usize>,
}

// The detection keys stay out of a resolved recipe that leaves them at their defaults (every image-classification
// recipe), so its `recipe.toml` lists only what the task reads.
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_default_crop_scale(x: &[f64; 2]) -> bool {
    *x == DEFAULT_CROP_SCALE
}

const DEFAULT_CROP_SCALE: [f64; 2] = [0.5, 1.0];

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
            crop_prob: 0.0,
            crop_scale: DEFAULT_CROP_SCALE,
            scales: Vec::new(),
            max_size: None,
        }
    }
}

impl AugmentSection {
    /// The keys of the other task that this section sets away from their defaults: `detection` true lists the
    /// image-classification keys, false the detection ones.
    pub fn foreign_keys(&self, detection: bool) -> Vec<&'static str> {
        let d = Self::default();
        let classification = [
            (
                "random_resized_crop",
                self.random_resized_crop != d.random_resized_crop,
            ),
            ("scale", self.scale != d.scale),
            ("ratio", self.ratio != d.ratio),
            ("brightness", self.brightness != d.brightness),
            ("contrast", self.contrast != d.contrast),
            ("saturation", self.saturation != d.saturation),
        ];
        let boxes = [
            ("crop_prob", self.crop_prob != d.crop_prob),
            ("crop_scale", self.crop_scale != d.crop_scale),
            ("scales", self.scales != d.scales),
            ("max_size", self.max_size != d.max_size),
        ];
        let other: &[(&'static str, bool)] = if detection { &classification } else { &boxes };
        other
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The detection augmentation (flip, crop, multi-scale resize) with its random stream seeded by `seed`.
    pub fn detection_with_seed(&self, seed: u64) -> mosaic_data::image::DetrAugmentation {
        mosaic_data::image::DetrAugmentation {
            hflip_prob: self.hflip_prob,
            crop_prob: self.crop_prob,
            crop_scale: self.crop_scale,
            scales: self.scales.clone(),
            max_size: self.max_size,
            seed,
        }
    }

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
    /// [`METRICS`](super::METRICS)). Default: [`default_metric`] of the task.
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
    /// Train an adapter instead of the whole model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft: Option<super::peft::PeftSection>,
    /// Visual instruction: `align` (stage 1, the projector alone) or `instruct` (stage 2, the projector and the
    /// language model, or LoRA on it with `[peft]`). Default `instruct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Visual instruction: a CLIP folder whose vision tower joins `model` (a GPT-2) into a new LLaVA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_model: Option<String>,
    /// Visual instruction from parts: the projector, `mlp2x_gelu` (default) or `linear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<String>,
    /// Visual instruction, stage `instruct`: train the vision tower too. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unfreeze_vision_tower: bool,
    /// Multimodal classification: how the image and text features are joined — `concat` (default),
    /// `cross-attention`, `weighted-sum`, or the single-modality baselines `image-only` / `text-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<String>,
    /// Which towers stay frozen: `true` (both; the default), `false` (none), `"image"` or `"text"` (that one
    /// only). Multimodal classification trains the fusion and head beside the towers that are not frozen;
    /// text-to-image reads the language model as the text tower (its vision tower never trains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_towers: Option<FreezeTowers>,
    /// The weights of the task's objectives (`[loss]`, e.g. `image = 1.0, caption = 0.5` for text-to-image): the
    /// training loss is Σ weight · objective, each objective logged as `loss_<name>` in `metrics.jsonl`.
    /// Default: the task's first objective alone, with weight 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<std::collections::BTreeMap<String, f64>>,
}

/// `freeze_towers`: which of a two-tower model's towers stay frozen — a boolean for both, or the name of the one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeTowers {
    /// `true`: both.
    Both,
    /// `false`: neither.
    Neither,
    /// `"image"`: the image tower only (the text tower trains).
    Image,
    /// `"text"`: the text tower only (the image tower trains).
    Text,
}

impl FreezeTowers {
    /// Whether the image tower stays frozen.
    pub fn image_frozen(self) -> bool {
        matches!(self, FreezeTowers::Both | FreezeTowers::Image)
    }

    /// Whether the text tower stays frozen.
    pub fn text_frozen(self) -> bool {
        matches!(self, FreezeTowers::Both | FreezeTowers::Text)
    }
}

impl From<bool> for FreezeTowers {
    fn from(frozen: bool) -> Self {
        if frozen {
            FreezeTowers::Both
        } else {
            FreezeTowers::Neither
        }
    }
}

impl Serialize for FreezeTowers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FreezeTowers::Both => s.serialize_bool(true),
            FreezeTowers::Neither => s.serialize_bool(false),
            FreezeTowers::Image => s.serialize_str("image"),
            FreezeTowers::Text => s.serialize_str("text"),
        }
    }
}

impl<'de> Deserialize<'de> for FreezeTowers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(b) => Ok(b.into()),
            Raw::Name(n) if n == "image" => Ok(FreezeTowers::Image),
            Raw::Name(n) if n == "text" => Ok(FreezeTowers::Text),
            Raw::Name(n) => Err(serde::de::Error::custom(format!(
                "expected true, false, \"image\" or \"text\", got \"{n}\""
            ))),
        }
    }
}

/// The two stages of LLaVA's training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Feature alignment: only the projector trains, on caption pairs.
    Align,
    /// Visual instruction tuning: the projector and the language model.
    Instruct,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Align => "align",
            Stage::Instruct => "instruct",
        }
    }
}

fn is_default_init(init: &Init) -> bool {
    *init == Init::Pretrained
}

fn is_false(b: &bool) -> bool {
    !*b
}
