//! Text- and token-classification data sets: loading, shuffling, splitting.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::labels::LabelSet;
use crate::reader::{Format, Record, for_each_record};

/// A text-classification example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextExample {
    /// The text.
    pub text: String,
    /// The class id in the data set's [`LabelSet`].
    pub label: usize,
}

/// A token-classification (for instance NER) example: words and one BIO tag
/// per word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExample {
    /// The words.
    pub tokens: Vec<String>,
    /// One tag id per word, in the data set's [`LabelSet`].
    pub tags: Vec<usize>,
}

/// How to read a text-classification file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// The field (JSONL key or CSV column) holding the text. Default `text`.
    pub text_field: String,
    /// The field holding the label, a string (JSON integers are accepted and
    /// read as their decimal string). Default `label`.
    pub label_field: String,
    /// The labels, in class-id order. When absent, the labels found in the
    /// data are sorted. A label not in an explicit list is an error.
    pub labels: Option<Vec<String>>,
    /// The file format; by default told from the extension.
    pub format: Option<Format>,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            text_field: "text".into(),
            label_field: "label".into(),
            labels: None,
            format: None,
        }
    }
}

/// How to read a token-classification file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The field holding the list of words. Default `tokens`. In CSV the cell
    /// holds a JSON array of strings or whitespace-separated words.
    pub tokens_field: String,
    /// The field holding the list of tags (BIO), one per word. Default
    /// `tags`. In CSV, as for the words.
    pub tags_field: String,
    /// The tags, in class-id order. When absent, the tags found in the data
    /// are sorted. A tag not in an explicit list is an error.
    pub labels: Option<Vec<String>>,
    /// The file format; by default told from the extension.
    pub format: Option<Format>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            tokens_field: "tokens".into(),
            tags_field: "tags".into(),
            labels: None,
            format: None,
        }
    }
}

/// Examples with their label set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset<E> {
    /// The examples.
    pub examples: Vec<E>,
    /// The labels (class ids of the examples index into it).
    pub labels: LabelSet,
}

/// A text-classification data set.
pub type TextDataset = Dataset<TextExample>;
/// A token-classification data set.
pub type TokenDataset = Dataset<TokenExample>;

/// Training, validation and test sets sharing one label set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Splits<E> {
    /// Training set.
    pub train: Dataset<E>,
    /// Validation set (may be empty when its fraction is 0).
    pub valid: Dataset<E>,
    /// Test set (may be empty when its fraction is 0).
    pub test: Dataset<E>,
}

/// Fractions of a single file that go to validation and test; the rest is
/// for training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitFractions {
    /// Fraction for validation, in `[0, 1)`.
    pub valid: f64,
    /// Fraction for test, in `[0, 1)`.
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self {
            valid: 0.1,
            test: 0.1,
        }
    }
}

impl SplitFractions {
    /// Checks that both are in `[0, 1)` and sum to less than 1.
    pub fn validate(&self) -> Result<()> {
        for (name, f) in [("valid", self.valid), ("test", self.test)] {
            if !(0.0..1.0).contains(&f) {
                return Err(DataError::InvalidSplit(format!(
                    "{name} fraction {f} is not in [0, 1)"
                )));
            }
        }
        if self.valid + self.test >= 1.0 {
            return Err(DataError::InvalidSplit(format!(
                "valid {} + test {} leaves nothing for training",
                self.valid, self.test
            )));
        }
        Ok(())
    }

    /// The number of validation and test examples out of `n`: each fraction
    /// times `n`, rounded, and at least 1 when the fraction is not 0. Fails
    /// when no training example would remain.
    pub fn counts(&self, n: usize) -> Result<(usize, usize)> {
        self.validate()?;
        let count = |f: f64| {
            if f == 0.0 {
                0
            } else {
                ((n as f64 * f).round() as usize).max(1)
            }
        };
        let (v, t) = (count(self.valid), count(self.test));
        if v + t >= n {
            return Err(DataError::InvalidSplit(format!(
                "{n} examples are too few for {v} validation and {t} test examples \
                 and at least one training example"
            )));
        }
        Ok((v, t))
    }
}

/// The files of a data set: a training file, and optionally validation and
/// test files (a missing one is carved out of the training file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitFiles {
    /// The training file.
    pub train: PathBuf,
    /// The validation file, if any.
    pub valid: Option<PathBuf>,
    /// The test file, if any.
    pub test: Option<PathBuf>,
}

impl<E> Dataset<E> {
    /// A data set from examples and their label set (ids are not checked).
    pub fn new(examples: Vec<E>, labels: LabelSet) -> Self {
        Self { examples, labels }
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The examples.
    pub fn iter(&self) -> std::slice::Iter<'_, E> {
        self.examples.iter()
    }

    /// Shuffles the examples in place; the same seed gives the same order.
    pub fn shuffle(&mut self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        self.examples.shuffle(&mut rng);
    }

    /// Shuffles with `seed` and cuts into validation (first), test (next) and
    /// training (rest) sets, with sizes given by [`SplitFractions::counts`].
    /// Deterministic for a given seed.
    pub fn split(mut self, fractions: SplitFractions, seed: u64) -> Result<Splits<E>> {
        let (n_valid, n_test) = fractions.counts(self.examples.len())?;
        self.shuffle(seed);
        let train = self.examples.split_off(n_valid + n_test);
        let test = self.examples.split_off(n_valid);
        let valid = self.examples;
        let labels = self.labels;
        Ok(Splits {
            train: Dataset::new(train, labels.clone()),
            valid: Dataset::new(valid, labels.clone()),
            test: Dataset::new(test, labels),
        })
    }
}

/// Reading one kind of example from records.
trait Spec {
    type Config;
    type Raw;
    type Example;
    fn format(cfg: &Self::Config) -> Option<Format>;
    fn explicit_labels(cfg: &Self::Config) -> Option<&[String]>;
    fn read(rec: &Record<'_>, cfg: &Self::Config) -> Result<Self::Raw>;
    fn label_names(raw: &Self::Raw) -> Vec<&str>;
    fn build(raw: Self::Raw, labels: &LabelSet, path: &Path) -> Result<Self::Example>;
}

struct TextSpec;
struct TokenSpec;

struct Raw<T> {
    line: usize,
    value: T,
}

fn label_id(labels: &LabelSet, path: &Path, line: usize, label: &str) -> Result<usize> {
    labels.id(label).ok_or_else(|| DataError::UnknownLabel {
        path: path.to_owned(),
        line,
        label: label.to_owned(),
        known: labels.names().to_vec(),
    })
}

impl Spec for TextSpec {
    type Config = TextConfig;
    type Raw = Raw<(String, String)>;
    type Example = TextExample;

    fn format(cfg: &TextConfig) -> Option<Format> {
        cfg.format
    }

    fn explicit_labels(cfg: &TextConfig) -> Option<&[String]> {
        cfg.labels.as_deref()
    }

    fn read(rec: &Record<'_>, cfg: &TextConfig) -> Result<Self::Raw> {
        let text = rec.string(&cfg.text_field)?;
        let label = rec.label(&cfg.label_field)?;
        Ok(Raw {
            line: rec.line,
            value: (text, label),
        })
    }

    fn label_names(raw: &Self::Raw) -> Vec<&str> {
        vec![raw.value.1.as_str()]
    }

    fn build(raw: Self::Raw, labels: &LabelSet, path: &Path) -> Result<TextExample> {
        let (text, label) = raw.value;
        let label = label_id(labels, path, raw.line, &label)?;
        Ok(TextExample { text, label })
    }
}

impl Spec for TokenSpec {
    type Config = TokenConfig;
    type Raw = Raw<(Vec<String>, Vec<String>)>;
    type Example = TokenExample;

    fn format(cfg: &TokenConfig) -> Option<Format> {
        cfg.format
    }

    fn explicit_labels(cfg: &TokenConfig) -> Option<&[String]> {
        cfg.labels.as_deref()
    }

    fn read(rec: &Record<'_>, cfg: &TokenConfig) -> Result<Self::Raw> {
        let tokens = rec.string_list(&cfg.tokens_field)?;
        let tags = rec.string_list(&cfg.tags_field)?;
        if tokens.is_empty() {
            return Err(rec.empty(&cfg.tokens_field));
        }
        if tokens.len() != tags.len() {
            return Err(DataError::LengthMismatch {
                path: rec.path.to_owned(),
                line: rec.line,
                tokens_field: cfg.tokens_field.clone(),
                tags_field: cfg.tags_field.clone(),
                tokens: tokens.len(),
                tags: tags.len(),
            });
        }
        if tags.iter().any(String::is_empty) {
            return Err(rec.empty(&cfg.tags_field));
        }
        Ok(Raw {
            line: rec.line,
            value: (tokens, tags),
        })
    }

    fn label_names(raw: &Self::Raw) -> Vec<&str> {
        raw.value.1.iter().map(String::as_str).collect()
    }

    fn build(raw: Self::Raw, labels: &LabelSet, path: &Path) -> Result<TokenExample> {
        let (tokens, tags) = raw.value;
        let tags = tags
            .iter()
            .map(|t| label_id(labels, path, raw.line, t))
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenExample { tokens, tags })
    }
}

/// Loads several files that share one label set (explicit, or the sorted
/// union of the labels of all files).
fn load_many<S: Spec>(paths: &[&Path], cfg: &S::Config) -> Result<Vec<Dataset<S::Example>>> {
    let mut raws: Vec<Vec<S::Raw>> = Vec::with_capacity(paths.len());
    for path in paths {
        let mut raw = Vec::new();
        for_each_record(path, S::format(cfg), |rec| {
            raw.push(S::read(rec, cfg)?);
            Ok(())
        })?;
        raws.push(raw);
    }
    let labels = match S::explicit_labels(cfg) {
        Some(names) => LabelSet::new(names.iter().cloned())?,
        None => LabelSet::collect_sorted(raws.iter().flatten().flat_map(S::label_names))?,
    };
    raws.into_iter()
        .zip(paths)
        .map(|(raw, path)| {
            let examples = raw
                .into_iter()
                .map(|r| S::build(r, &labels, path))
                .collect::<Result<Vec<_>>>()?;
            Ok(Dataset::new(examples, labels.clone()))
        })
        .collect()
}

fn load_splits<S: Spec>(
    files: &SplitFiles,
    cfg: &S::Config,
    fractions: SplitFractions,
    seed: u64,
) -> Result<Splits<S::Example>> {
    let mut paths: Vec<&Path> = vec![&files.train];
    paths.extend(files.valid.as_deref());
    paths.extend(files.test.as_deref());
    let mut sets = load_many::<S>(&paths, cfg)?.into_iter();
    let train = sets.next().expect("one data set per path");
    let valid = files
        .valid
        .as_ref()
        .map(|_| sets.next().expect("valid set"));
    let test = files.test.as_ref().map(|_| sets.next().expect("test set"));
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

impl Dataset<TextExample> {
    /// Loads a text-classification file (JSONL, CSV or TSV).
    ///
    /// ```no_run
    /// use mosaic_data::{TextConfig, TextDataset};
    /// let data = TextDataset::load("train.jsonl", &TextConfig::default())?;
    /// println!("{} examples, labels {:?}", data.len(), data.labels.names());
    /// # Ok::<(), mosaic_data::DataError>(())
    /// ```
    pub fn load(path: impl AsRef<Path>, cfg: &TextConfig) -> Result<Self> {
        let mut sets = load_many::<TextSpec>(&[path.as_ref()], cfg)?;
        Ok(sets.remove(0))
    }

    /// Loads several files sharing one label set (explicit, or the sorted
    /// union of the labels found in all of them).
    pub fn load_all(paths: &[&Path], cfg: &TextConfig) -> Result<Vec<Self>> {
        load_many::<TextSpec>(paths, cfg)
    }

    /// Loads training, validation and test sets; a missing validation or
    /// test file is carved out of the training file with `fractions` (the
    /// fraction of a given file is ignored) and `seed`.
    pub fn load_splits(
        files: &SplitFiles,
        cfg: &TextConfig,
        fractions: SplitFractions,
        seed: u64,
    ) -> Result<Splits<TextExample>> {
        load_splits::<TextSpec>(files, cfg, fractions, seed)
    }

    /// The number of examples of each class, in class-id order.
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for e in &self.examples {
            if let Some(c) = counts.get_mut(e.label) {
                *c += 1;
            }
        }
        counts
    }

    /// The same data set with every text replaced by `f(example)`, for
    /// instance a prompt rendered from a template.
    pub fn map_text(&self, mut f: impl FnMut(&TextExample) -> String) -> Self {
        Dataset::new(
            self.examples
                .iter()
                .map(|e| TextExample {
                    text: f(e),
                    label: e.label,
                })
                .collect(),
            self.labels.clone(),
        )
    }
}

impl Dataset<TokenExample> {
    /// Loads a token-classification file (JSONL, CSV or TSV).
    pub fn load(path: impl AsRef<Path>, cfg: &TokenConfig) -> Result<Self> {
        let mut sets = load_many::<TokenSpec>(&[path.as_ref()], cfg)?;
        Ok(sets.remove(0))
    }

    /// Loads several files sharing one tag set (explicit, or the sorted union
    /// of the tags found in all of them).
    pub fn load_all(paths: &[&Path], cfg: &TokenConfig) -> Result<Vec<Self>> {
        load_many::<TokenSpec>(paths, cfg)
    }

    /// Loads training, validation and test sets; a missing validation or
    /// test file is carved out of the training file with `fractions` and
    /// `seed`.
    pub fn load_splits(
        files: &SplitFiles,
        cfg: &TokenConfig,
        fractions: SplitFractions,
        seed: u64,
    ) -> Result<Splits<TokenExample>> {
        load_splits::<TokenSpec>(files, cfg, fractions, seed)
    }

    /// The id of the outside tag `O`, if the tag set has one.
    pub fn outside_id(&self) -> Option<usize> {
        self.labels.id("O")
    }
}
