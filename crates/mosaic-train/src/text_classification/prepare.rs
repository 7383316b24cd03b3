//! Preparing a text-classification run: resolve the model, load and split the data, render prompts (templates,
//! demonstrations), choose the scoring rule, tokenize.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mosaic_data::{
    Collator, Dataset, EncodedDataset, Encoder, SplitFiles, SplitFractions, Splits, TextConfig,
    TextDataset, TokenConfig, TokenDataset,
};
use mosaic_models::{Bert, ModelSource};
use mosaic_prompt::Template;

use crate::checkpoint::{CheckpointMeta, bert_task};
use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::{Method, Recipe, Task};
use crate::task_model::{Scoring, TaskModel, mask_token};

/// The default temperature of `prompt-similarity` scores (cosine / τ), as in SimCSE-style objectives.
pub const DEFAULT_TEMPERATURE: f64 = 0.05;
/// The default maximum input length when the recipe sets none.
pub const DEFAULT_MAX_LENGTH: usize = 256;

/// Everything a run needs, built from a recipe.
pub struct Prepared {
    pub model: TaskModel,
    pub encoder: Encoder,
    pub model_dir: PathBuf,
    pub train: Option<EncodedDataset>,
    pub valid: Option<EncodedDataset>,
    pub test: Option<EncodedDataset>,
    pub meta: CheckpointMeta,
    pub device: Device,
}

impl Prepared {
    pub fn collator(&self) -> Collator {
        self.encoder.collator()
    }
}

fn fractions(recipe: &Recipe) -> SplitFractions {
    match recipe.data.split.as_deref() {
        Some([_, valid, test]) => SplitFractions {
            valid: *valid,
            test: *test,
        },
        Some([_, valid]) => SplitFractions {
            valid: *valid,
            test: 0.0,
        },
        _ => SplitFractions {
            valid: 0.0,
            test: 0.0,
        },
    }
}

fn non_empty(set: EncodedDataset) -> Option<EncodedDataset> {
    (!set.is_empty()).then_some(set)
}

/// Builds the model, the prompts and the tokenized splits of `recipe`.
pub fn prepare(recipe: &Recipe, observer: &mut dyn Observer) -> Result<Prepared> {
    let device = Device::Cpu;
    let source = ModelSource::parse(&recipe.model);
    observer.message(&format!("model: {}", source.spec()));
    let model_dir = source.resolve()?;
    let encoder = Encoder::from_file(model_dir.join("tokenizer.json"))?;
    let seed = recipe.train.seed;
    let files = match (&recipe.data.train, &recipe.data.test) {
        (Some(train), _) => SplitFiles {
            train: train.clone(),
            valid: recipe.data.valid.clone(),
            test: recipe.data.test.clone(),
        },
        (None, Some(test)) => SplitFiles {
            train: test.clone(),
            valid: None,
            test: None,
        },
        (None, None) => {
            return Err(TrainError::Invalid(
                "recipe key `data.train`: no data given".into(),
            ));
        }
    };
    let zero_shot_only = recipe.data.train.is_none();
    let config_max =
        mosaic_models::BertConfig::read(&model_dir.join("config.json"))?.max_position_embeddings;
    let max_len = recipe
        .data
        .max_length
        .unwrap_or(DEFAULT_MAX_LENGTH)
        .min(config_max);

    let (labels, template, scoring, encoded) = match recipe.task {
        Task::Classification => encode_classification(recipe, &files, &encoder, max_len, observer)?,
        Task::CausalLm
        | Task::ImageClassification
        | Task::ImageTextContrastive
        | Task::VisualInstruction
        | Task::MultimodalClassification
        | Task::TextToImage
        | Task::Detection => {
            return Err(TrainError::Invalid(format!(
                "task {:?} does not run through the text-classification pipeline",
                recipe.task
            )));
        }
        Task::TokenClassification => {
            let cfg = TokenConfig {
                tokens_field: recipe.data.tokens_field.clone(),
                tags_field: recipe.data.tags_field.clone(),
                labels: None,
                format: None,
            };
            let splits = load_splits(&files, None, fractions(recipe), seed, |path, labels| {
                let cfg = TokenConfig {
                    labels,
                    ..cfg.clone()
                };
                TokenDataset::load(path, &cfg)
            })?;
            let labels: Vec<String> = splits.train.labels.names().to_vec();
            let encode = |set: &TokenDataset| encoder.encode_token_dataset(set, max_len);
            let encoded = [
                encode(&splits.train)?,
                encode(&splits.valid)?,
                encode(&splits.test)?,
            ];
            (labels, None, Scoring::Head, encoded)
        }
    };
    let [train, valid, test] = encoded;
    let task = bert_task(recipe.task, &scoring);
    let head_labels = matches!(scoring, Scoring::Head).then(|| labels.clone());
    let bert = Bert::from_folder(&model_dir, Some(task), head_labels, seed, &device)?;
    observer.message(&format!(
        "{} parameters; labels: {}",
        bert.params.num_elements(),
        labels.join(", ")
    ));
    let meta = CheckpointMeta {
        task: recipe.task,
        labels: labels.clone(),
        scoring: scoring.clone(),
        template,
        text_field: recipe.data.text_field.clone(),
        label_field: recipe.data.label_field.clone(),
        tokens_field: recipe.data.tokens_field.clone(),
        tags_field: recipe.data.tags_field.clone(),
        max_length: max_len,
        base_model: source.spec(),
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let model = TaskModel::new(bert, recipe.task, scoring, labels, encoder.pad_id());
    let (train, test) = if zero_shot_only {
        (None, non_empty(train))
    } else {
        (non_empty(train), non_empty(test))
    };
    Ok(Prepared {
        model,
        encoder,
        model_dir,
        train,
        valid: non_empty(valid),
        test,
        meta,
        device,
    })
}

/// A classification run's labels, rendered template, scoring rule and tokenized splits.
type Encoded = (Vec<String>, Option<String>, Scoring, [EncodedDataset; 3]);

/// Loads, renders (template, demonstrations) and tokenizes the splits of a `classification` recipe.
fn encode_classification(
    recipe: &Recipe,
    files: &SplitFiles,
    encoder: &Encoder,
    max_len: usize,
    observer: &mut dyn Observer,
) -> Result<Encoded> {
    let seed = recipe.train.seed;
    let cfg = TextConfig {
        text_field: recipe.data.text_field.clone(),
        label_field: recipe.data.label_field.clone(),
        labels: None,
        format: None,
    };
    let explicit = prompt_labels(recipe);
    let splits = load_splits(files, explicit, fractions(recipe), seed, |path, labels| {
        let cfg = TextConfig {
            labels,
            ..cfg.clone()
        };
        TextDataset::load(path, &cfg)
    })?;
    let labels: Vec<String> = splits.train.labels.names().to_vec();
    let template = prompt_template(recipe, encoder)?;
    let template = with_demonstrations(recipe, template, &splits.train, &labels)?;
    let scoring = scoring(recipe, &labels, encoder, max_len, observer)?;
    let render = |set: &TextDataset| -> Result<TextDataset> {
        match &template {
            None => Ok(set.clone()),
            Some(t) => {
                let mut failure = None;
                let out = set.map_text(|e| {
                    match t.render_with(|slot| (slot == "text").then_some(e.text.as_str())) {
                        Ok(s) => s,
                        Err(err) => {
                            failure.get_or_insert(err);
                            String::new()
                        }
                    }
                });
                match failure {
                    Some(err) => Err(err.into()),
                    None => Ok(out),
                }
            }
        }
    };
    let mut encode = |set: &TextDataset, name: &str| -> Result<EncodedDataset> {
        let encoded = encoder.encode_text_dataset(&render(set)?, max_len)?;
        if encoded.truncated > 0 {
            observer.message(&format!(
                "warning: {} {name} examples were longer than {max_len} tokens and were truncated",
                encoded.truncated
            ));
        }
        Ok(encoded)
    };
    let train = encode(&splits.train, "train")?;
    let valid = encode(&splits.valid, "valid")?;
    let test = encode(&splits.test, "test")?;
    Ok((
        labels,
        template.map(|t| t.source().to_string()),
        scoring,
        [train, valid, test],
    ))
}

/// For prompt methods, the labels are the verbalizer's or the descriptions' keys: a data label outside them is
/// an error at its line.
fn prompt_labels(recipe: &Recipe) -> Option<Vec<String>> {
    match recipe.method {
        Method::Cloze if !recipe.prompt.verbalizer.is_empty() => {
            Some(recipe.prompt.verbalizer.keys().cloned().collect())
        }
        Method::PromptSimilarity if !recipe.prompt.descriptions.is_empty() => {
            Some(recipe.prompt.descriptions.keys().cloned().collect())
        }
        _ => None,
    }
}

/// Loads the training file (its labels, or `explicit`, define the label set), then valid/test with that label
/// set — so a label the training set lacks is an error naming its file and line — and carves out the splits the
/// recipe asks for by fraction.
fn load_splits<E>(
    files: &SplitFiles,
    explicit: Option<Vec<String>>,
    fractions: SplitFractions,
    seed: u64,
    load: impl Fn(&Path, Option<Vec<String>>) -> mosaic_data::Result<Dataset<E>>,
) -> Result<Splits<E>> {
    let train = load(&files.train, explicit)?;
    let labels = Some(train.labels.names().to_vec());
    let valid = files
        .valid
        .as_deref()
        .map(|p| load(p, labels.clone()))
        .transpose()?;
    let test = files
        .test
        .as_deref()
        .map(|p| load(p, labels.clone()))
        .transpose()?;
    let carve = SplitFractions {
        valid: if valid.is_some() {
            0.0
        } else {
            fractions.valid
        },
        test: if test.is_some() { 0.0 } else { fractions.test },
    };
    let split = if carve.valid == 0.0 && carve.test == 0.0 {
        let labels = train.labels.clone();
        Splits {
            train,
            valid: Dataset::new(Vec::new(), labels.clone()),
            test: Dataset::new(Vec::new(), labels),
        }
    } else {
        train.split(carve, seed)?
    };
    Ok(Splits {
        train: split.train,
        valid: valid.unwrap_or(split.valid),
        test: test.unwrap_or(split.test),
    })
}

/// LM-BFF-style demonstrations: with `prompt.shots = k` and a cloze verbalizer, k training examples per label
/// (chosen with the seed) are rendered with their label word in the mask and put in front of the template, once,
/// so training, evaluation and the saved checkpoint all see the same prompt.
fn with_demonstrations(
    recipe: &Recipe,
    template: Option<Template>,
    train: &TextDataset,
    labels: &[String],
) -> Result<Option<Template>> {
    let Some(template) = template else {
        return Ok(None);
    };
    if recipe.prompt.shots == 0 {
        return Ok(Some(template));
    }
    if recipe.method != Method::Cloze || !template.has_mask() {
        return Err(TrainError::Invalid(
            "recipe key `prompt.shots`: demonstrations need `method = \"cloze\"` and a template with {mask}".into(),
        ));
    }
    let verbalizer =
        mosaic_prompt::Verbalizer::new(recipe.prompt.verbalizer.iter().map(|(label, words)| {
            (
                label.clone(),
                words
                    .words()
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            )
        }))?;
    let names: Vec<&str> = train
        .examples
        .iter()
        .map(|e| labels[e.label].as_str())
        .collect();
    let few_shot = mosaic_prompt::FewShot::new(recipe.prompt.shots, recipe.train.seed);
    let chosen = few_shot.select(&names, None)?;
    let demos: Vec<(Vec<(&str, &str)>, &str)> = chosen
        .iter()
        .map(|&i| (vec![("text", train.examples[i].text.as_str())], names[i]))
        .collect();
    let prefix = few_shot.demonstrations(
        &template,
        &demos,
        mosaic_prompt::Answer::Verbalizer(&verbalizer),
    )?;
    // The demonstrations become literal template text: escape braces so they are not read as slots.
    let literal = format!("{prefix}{}", few_shot.separator)
        .replace('{', "{{")
        .replace('}', "}}");
    let combined = Template::parse(&format!("{literal}{}", template.source()))?
        .with_mask_token(template.mask_token());
    Ok(Some(combined))
}

/// The recipe's template with the tokenizer's mask token; required (with `{mask}`) for `cloze`.
fn prompt_template(recipe: &Recipe, encoder: &Encoder) -> Result<Option<Template>> {
    let Some(source) = &recipe.prompt.template else {
        if recipe.method == Method::Cloze {
            return Err(TrainError::Invalid(
                "recipe key `prompt.template`: `cloze` needs a template with a {mask} slot".into(),
            ));
        }
        return Ok(None);
    };
    let mask_token = mask_token(encoder);
    let template = Template::parse(source)?.with_mask_token(mask_token);
    template.check_slots(&["text"])?;
    if recipe.method == Method::Cloze && !template.has_mask() {
        return Err(TrainError::Invalid(format!(
            "recipe key `prompt.template`: `{source}` has no {{mask}} slot, which `cloze` needs"
        )));
    }
    Ok(Some(template))
}

/// How the recipe's method turns model outputs into class scores.
fn scoring(
    recipe: &Recipe,
    labels: &[String],
    encoder: &Encoder,
    max_len: usize,
    observer: &mut dyn Observer,
) -> Result<Scoring> {
    match recipe.method {
        Method::Instruction | Method::Lm => Err(TrainError::Invalid(
            "methods \"instruction\" and \"lm\" are for causal-lm recipes".into(),
        )),
        Method::Contrastive | Method::Coop => Err(TrainError::Invalid(
            "methods \"contrastive\" and \"coop\" are for image-text-contrastive recipes".into(),
        )),
        Method::Head => Ok(Scoring::Head),
        Method::Cloze => {
            let mask_id = encoder.token_id(mask_token(encoder))?;
            let mut label_words = Vec::new();
            for label in labels {
                let words = recipe.prompt.verbalizer.get(label).ok_or_else(|| {
                    TrainError::Invalid(format!(
                        "recipe key `prompt.verbalizer`: label `{label}` has no words (labels: {})",
                        labels.join(", ")
                    ))
                })?;
                let mut ids = Vec::new();
                for word in words.words() {
                    let pieces = encoder.word_token_ids(word)?;
                    match pieces.as_slice() {
                        [] => {
                            return Err(TrainError::Invalid(format!(
                                "recipe key `prompt.verbalizer.{label}`: `{word}` has no tokens"
                            )));
                        }
                        [one] => ids.push(*one),
                        [first, ..] => {
                            observer.message(&format!(
                                "warning: verbalizer word `{word}` (label `{label}`) is split into {} pieces; using the first",
                                pieces.len()
                            ));
                            ids.push(*first);
                        }
                    }
                }
                if ids.is_empty() {
                    return Err(TrainError::Invalid(format!(
                        "recipe key `prompt.verbalizer.{label}`: no words"
                    )));
                }
                label_words.push(ids);
            }
            Ok(Scoring::Cloze {
                mask_id,
                label_words,
            })
        }
        Method::PromptSimilarity => {
            let mut texts = Vec::new();
            for label in labels {
                let d = recipe.prompt.descriptions.get(label).ok_or_else(|| {
                    TrainError::Invalid(format!(
                        "recipe key `prompt.descriptions`: label `{label}` has no description (labels: {})",
                        labels.join(", ")
                    ))
                })?;
                texts.push(d.as_str());
            }
            let (encodings, _) = encoder.encode_texts(&texts, max_len)?;
            Ok(Scoring::PromptSimilarity {
                descriptions: encodings.iter().map(|e| e.get_ids().to_vec()).collect(),
                temperature: recipe.prompt.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            })
        }
    }
}
