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
//! an error naming its key; and a key the chosen task or method does not read
//! is an error naming the key, the task and who does read it (`recipe key
//! `data.packing`: task "classification" does not read it (only causal-lm
//! does)`). [`apply_override`] applies `--set key=value` overrides to the
//! parsed TOML before it is resolved, and [`Recipe::check_resume`] tells
//! whether a run may be resumed under a recipe.
//!
//! ```
//! use mosaic_train::recipe::{Method, Recipe};
//!
//! let text = "model = \"m\"\nmethod = \"cloze\"\n[data]\ntrain = \"t.jsonl\"\n\
//!             [prompt]\ntemplate = \"{text} it was {mask}.\"\n";
//! let recipe = Recipe::from_toml_str_with_overrides(text, "sst2.toml", &["train.lr=3e-5"])?;
//! assert_eq!((recipe.name.as_str(), recipe.method, recipe.train.lr), ("sst2", Method::Cloze, 3e-5));
//! // `cloze` reads no label descriptions: a typo of intent is an error, not a silent no-op.
//! let err = Recipe::from_toml_str_with_overrides(text, "sst2.toml", &["prompt.descriptions.pos=good"]);
//! assert_eq!(err.unwrap_err().key(), Some("prompt.descriptions"));
//! # Ok::<(), mosaic_train::recipe::RecipeError>(())
//! ```
//!
//! The files, one role each: `choices` (the enums), `sections` (the section structs and
//! [`Recipe`]), `metric`, `schema` (every key and its kind), `suggest` ("did you mean"), `check` (types against
//! the schema), `overrides`, `resolve` (text to recipe), `validate` (ranges and combinations), `reads` (which
//! task reads which key) and `resume` (the resume check).

mod check;
mod choices;
mod error;
mod metric;
mod overrides;
mod peft;
mod reads;
mod resolve;
mod resume;
mod schema;
mod sections;
mod suggest;
mod validate;

pub use choices::{Freeze, Init, Method, NonFinite, OptimizerKind, Task, Verbalization};
pub use error::RecipeError;
pub use metric::{METRICS, default_metric};
pub use overrides::{apply_override, override_key};
pub use peft::{PeftMethod, PeftSection, PromptInitKind, Words};
pub use resolve::parse_toml;
pub use sections::{
    AugmentSection, DataSection, FreezeTowers, PromptSection, Recipe, Stage, TrainSection,
};
