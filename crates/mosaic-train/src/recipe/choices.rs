//! The recipe's closed choices: what is predicted ([`Task`]), how the model is adapted ([`Method`]), where the
//! weights come from ([`Init`]), the optimizer, the freezing strategy, what a non-finite step does, and a label's
//! verbalization. Each serialises to the lower-case (kebab-case) string a recipe file spells it with.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// LLaVA: a vision tower, a projector and a GPT-2 trained on conversations about images.
    VisualInstruction,
    /// One label per image-text pair: a CLIP vision tower and a BERT text encoder joined by a fusion module.
    MultimodalClassification,
    /// A small image decoder from a LLaVA language model's text embedding, trained with the image's squared
    /// error, alone or jointly with the LLaVA's captioning loss.
    TextToImage,
    /// Objects in an image: a DETR (CNN backbone + transformer encoder-decoder over object queries) trained with
    /// the Hungarian-matched set loss, scored by COCO mAP.
    Detection,
}

impl Task {
    /// The name a recipe spells the task with (`task = "causal-lm"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::TokenClassification => "token-classification",
            Task::CausalLm => "causal-lm",
            Task::ImageClassification => "image-classification",
            Task::ImageTextContrastive => "image-text-contrastive",
            Task::VisualInstruction => "visual-instruction",
            Task::MultimodalClassification => "multimodal-classification",
            Task::TextToImage => "text-to-image",
            Task::Detection => "detection",
        }
    }

    /// The objectives a `[loss]` table may weight for this task (empty: the task has one loss and no table).
    /// The first is the one trained when the recipe has no `[loss]`.
    pub fn objectives(self) -> &'static [&'static str] {
        match self {
            Task::TextToImage => &["image", "caption", "contrastive"],
            _ => &[],
        }
    }
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

impl Method {
    /// The name a recipe spells the method with (`method = "prompt-similarity"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Head => "head",
            Method::Cloze => "cloze",
            Method::PromptSimilarity => "prompt-similarity",
            Method::Instruction => "instruction",
            Method::Lm => "lm",
            Method::Contrastive => "contrastive",
            Method::Coop => "coop",
        }
    }
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

/// What to do with a non-finite loss or gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    #[default]
    Stop,
    Skip,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::schema::{METHODS, TASKS};

    /// `as_str` is the serde name and the schema's, so error messages spell tasks and methods as recipes do.
    #[test]
    fn names_are_the_serde_and_schema_names() {
        for name in TASKS {
            let task: Task = toml::Value::String(name.to_string()).try_into().unwrap();
            assert_eq!(task.as_str(), *name);
        }
        for name in METHODS {
            let method: Method = toml::Value::String(name.to_string()).try_into().unwrap();
            assert_eq!(method.as_str(), *name);
        }
    }
}
