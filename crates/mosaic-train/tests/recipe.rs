//! Recipes: parsing, defaults, strict keys with suggestions, overrides,
//! validation, and TOML round trips.

use std::path::PathBuf;

use mosaic_train::early_stopping::Mode;
use mosaic_train::recipe::{
    Freeze, Method, OptimizerKind, Recipe, RecipeError, Task, Verbalization, apply_override,
    parse_toml,
};
use mosaic_train::schedule::{ScheduleKind, Warmup};

const MINIMAL: &str = r#"
model = "bert-base-uncased"
[data]
train = "data/train.jsonl"
"#;

fn err(text: &str) -> RecipeError {
    Recipe::from_toml_str(text, "recipes/r.toml").unwrap_err()
}

fn err_with(overrides: &[&str]) -> RecipeError {
    Recipe::from_toml_str_with_overrides(MINIMAL, "recipes/r.toml", overrides).unwrap_err()
}

#[test]
fn minimal_recipe_gets_defaults() {
    let r = Recipe::from_toml_str(MINIMAL, "recipes/sst2-base.toml").unwrap();
    assert_eq!(r.name, "sst2-base");
    assert_eq!(r.output, PathBuf::from("runs/sst2-base"));
    assert_eq!(r.task, Task::Classification);
    assert_eq!(r.method, Method::Head);
    assert_eq!(r.data.text_field, "text");
    assert_eq!(r.data.label_field, "label");
    let t = &r.train;
    assert_eq!((t.epochs, t.batch_size, t.grad_accum), (3, 16, 1));
    assert_eq!(t.lr, 2e-5);
    assert_eq!(t.weight_decay, 0.01);
    assert_eq!(t.warmup, Warmup::Ratio(0.1));
    assert_eq!(t.schedule, ScheduleKind::Linear);
    assert_eq!(t.max_grad_norm, 1.0);
    assert_eq!(t.freeze, Freeze::None);
    assert_eq!(t.optimizer, OptimizerKind::Adamw);
    assert_eq!(t.metric, "f1_macro");
    assert_eq!(t.mode, Mode::Max);
    assert_eq!(t.eval_every, None);
    assert_eq!(t.fgm_epsilon, None);
}

#[test]
fn full_recipe_parses() {
    let text = r#"
name = "ner"
model = "models/tiny"
task = "token-classification"
method = "head"
output = "out/ner"

[data]
train = "train.conll"
test = "test.conll"
split = [0.9, 0.1]
tokens_field = "words"
tags_field = "ner_tags"
max_length = 128

[train]
epochs = 5
batch_size = 8
lr = 3e-5
warmup = 100
schedule = "cosine"
freeze = "all-but-top-2"
optimizer = "sgd"
momentum = 0.8
metric = "loss"
patience = 2
eval_every = 50
fgm_epsilon = 1.0
"#;
    let r = Recipe::from_toml_str(text, "x.toml").unwrap();
    assert_eq!(r.name, "ner");
    assert_eq!(r.task, Task::TokenClassification);
    assert_eq!(r.output, PathBuf::from("out/ner"));
    assert_eq!(r.data.split, Some(vec![0.9, 0.1]));
    assert_eq!(r.data.max_length, Some(128));
    assert_eq!(r.train.warmup, Warmup::Steps(100));
    assert_eq!(r.train.schedule, ScheduleKind::Cosine);
    assert_eq!(r.train.freeze, Freeze::AllButTopN(2));
    assert_eq!(r.train.optimizer, OptimizerKind::Sgd);
    // Mode follows the metric when not given.
    assert_eq!(r.train.mode, Mode::Min);
    assert_eq!(r.train.eval_every, Some(50));
    assert_eq!(r.train.fgm_epsilon, Some(1.0));
    let es = r.early_stopping();
    assert_eq!((es.patience, es.mode), (2, Mode::Min));

    // The prompt keys, each with the method that reads it.
    let prompt = r#"
[prompt]
template = "{text} It was [MASK]."
verbalizer = { positive = "great", negative = ["bad", "awful"] }
shots = 4
"#;
    let r =
        Recipe::from_toml_str(&format!("method = \"cloze\"\n{MINIMAL}{prompt}"), "x.toml").unwrap();
    assert_eq!(
        r.prompt.verbalizer["negative"],
        Verbalization::Many(vec!["bad".into(), "awful".into()])
    );
    assert_eq!(r.prompt.verbalizer["positive"].words(), vec!["great"]);
    assert_eq!(r.prompt.shots, 4);
    let prompt =
        "[prompt]\ndescriptions = { positive = \"a positive review\" }\ntemperature = 0.05\n";
    let r = Recipe::from_toml_str(
        &format!("method = \"prompt-similarity\"\n{MINIMAL}{prompt}"),
        "x.toml",
    )
    .unwrap();
    assert_eq!(r.prompt.descriptions["positive"], "a positive review");
    assert_eq!(r.prompt.temperature, Some(0.05));

    // Token classification defaults to entity micro F1.
    let r = Recipe::from_toml_str(
        "model = \"m\"\ntask = \"token-classification\"\n[data]\ntrain = \"t\"\n",
        "x.toml",
    )
    .unwrap();
    assert_eq!(r.train.metric, "f1_micro");
    assert_eq!(r.data.tokens_field, "tokens");
    assert_eq!(r.data.tags_field, "tags");
}

#[test]
fn unknown_keys_name_the_dotted_key_and_suggest() {
    let e = err(&format!("{MINIMAL}[train]\nlrr = 1e-4\n"));
    assert_eq!(e.key(), Some("train.lrr"));
    assert_eq!(
        e.to_string(),
        "recipes/r.toml: unknown key `train.lrr` (did you mean `train.lr`?)"
    );

    let e = err(&format!("text_feild = \"x\"\n{MINIMAL}"));
    // A top-level typo whose nearest key lives in [data].
    assert_eq!(
        e.to_string(),
        "recipes/r.toml: unknown key `text_feild` (did you mean `data.text_field`?)"
    );
    let e = err(&format!("{MINIMAL}text_feild = \"x\"\n"));
    assert_eq!(
        e.to_string(),
        "recipes/r.toml: unknown key `data.text_feild` (did you mean `data.text_field`?)"
    );
    let e = err(&format!("{MINIMAL}task = \"classification\"\n"));
    assert_eq!(
        e.to_string(),
        "recipes/r.toml: unknown key `data.task` (did you mean `task`?)"
    );

    let e = err(&format!("{MINIMAL}[trian]\nlr = 1e-4\n"));
    assert!(
        e.to_string()
            .contains("unknown key `trian` (did you mean `train`?)"),
        "{e}"
    );

    let e = err(&format!("{MINIMAL}[train]\nlearning_rate = 1e-4\n"));
    assert!(
        e.to_string()
            .contains("`train.learning_rate` (did you mean `train.lr`?)"),
        "{e}"
    );

    let e = err(&format!("{MINIMAL}[data.extra]\nfoo = 1\n"));
    assert_eq!(e.key(), Some("data.extra"));

    let e = err(&format!("{MINIMAL}[train]\nLearningRate = 1e-4\n"));
    assert!(e.to_string().contains("(did you mean `train.lr`?)"), "{e}");
    let e = err(&format!("{MINIMAL}[train]\nbatchsize = 4\n"));
    assert!(
        e.to_string().contains("(did you mean `train.batch_size`?)"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}[train]\nzzzzzzzz = 1\n"));
    assert_eq!(
        e.to_string(),
        "recipes/r.toml: unknown key `train.zzzzzzzz`"
    );
}

#[test]
fn wrong_types_and_values_name_the_key() {
    let e = err(&format!("{MINIMAL}[train]\nlr = \"fast\"\n"));
    assert_eq!(
        e.to_string(),
        "recipes/r.toml: `train.lr` must be a number, not the string \"fast\""
    );
    let e = err(&format!("{MINIMAL}[train]\nepochs = 2.5\n"));
    assert!(
        e.to_string()
            .contains("`train.epochs` must be a non-negative integer"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}[train]\nschedule = \"cosin\"\n"));
    assert!(
        e.to_string().contains("`train.schedule` must be one of"),
        "{e}"
    );
    assert!(e.to_string().contains("(did you mean \"cosine\"?)"), "{e}");
    let e = err(&format!("{MINIMAL}[train]\nfreeze = \"all-but-top-x\"\n"));
    assert_eq!(e.key(), Some("train.freeze"));
    let e = err(&format!("{MINIMAL}[train]\nmetric = \"f1-macro\"\n"));
    assert!(e.to_string().contains("did you mean \"f1_macro\""), "{e}");
    let e = err(&format!("task = \"ner\"\n{MINIMAL}"));
    assert_eq!(e.key(), Some("task"));
    let e = err("model = \"m\"\n[data]\ntrain = \"t\"\n[prompt]\nverbalizer = { positive = 3 }\n");
    assert_eq!(e.key(), Some("prompt.verbalizer.positive"));
    let e = err(&format!("{MINIMAL}[train]\nlr = [1]\n"));
    assert!(
        e.to_string()
            .ends_with("`train.lr` must be a number, not an array"),
        "{e}"
    );
    let e = err("model = \"m\"\ndata = 3\n");
    assert!(e.to_string().contains("`data` must be a table"), "{e}");
}

#[test]
fn out_of_range_values_name_the_key() {
    for (set, key) in [
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-5", "train.lr"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.warmup=1.5", "train.warmup"),
        ("train.momentum=1.0", "train.momentum"),
        ("train.eval_every=0", "train.eval_every"),
        ("train.fgm_epsilon=0.0", "train.fgm_epsilon"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("data.max_length=0", "data.max_length"),
        ("data.split=[0.5, 0.4]", "data.split"),
        ("data.split=[0.5, 0.3, 0.1, 0.1]", "data.split"),
        ("prompt.temperature=0", "prompt.temperature"),
    ] {
        let e = err_with(&[set]);
        assert_eq!(e.key(), Some(key), "{set}: {e}");
        assert!(matches!(e, RecipeError::Invalid { .. }), "{set}: {e}");
    }
    let e = err("[data]\ntrain = \"t\"\n");
    assert_eq!(
        e.to_string(),
        "recipes/r.toml: missing required key `model`"
    );
    let e = err("model = \"m\"\n");
    assert_eq!(e.key(), Some("data.train"));
    let e = err("model = \"m\"\nlr = 3\n");
    assert!(e.to_string().contains("did you mean `train.lr`"), "{e}");
}

#[test]
fn overrides_apply_with_typed_values() {
    let r = Recipe::from_toml_str_with_overrides(
        MINIMAL,
        "r.toml",
        &[
            "train.lr=3e-5",
            "train.warmup=0",
            "train.schedule=cosine",
            "model=roberta-base",
            "name=123",
            "data.split=[0.8, 0.1, 0.1]",
            "method=cloze",
            "prompt.verbalizer.positive=[\"good\", \"great\"]",
            "train.freeze=all-but-head",
            "train.fgm_epsilon=0.5",
        ],
    )
    .unwrap();
    assert_eq!(r.train.lr, 3e-5);
    assert_eq!(r.train.warmup, Warmup::Steps(0));
    assert_eq!(r.train.schedule, ScheduleKind::Cosine);
    assert_eq!(r.model, "roberta-base");
    assert_eq!(r.name, "123");
    assert_eq!(r.output, PathBuf::from("runs/123"));
    assert_eq!(r.data.split, Some(vec![0.8, 0.1, 0.1]));
    assert_eq!(
        r.prompt.verbalizer["positive"].words(),
        vec!["good", "great"]
    );
    assert_eq!(r.train.freeze, Freeze::AllButHead);
    assert_eq!(r.train.fgm_epsilon, Some(0.5));
    let r = Recipe::from_toml_str_with_overrides(
        MINIMAL,
        "r.toml",
        &[
            "method=prompt-similarity",
            "prompt.descriptions.negative=a bad review",
        ],
    )
    .unwrap();
    assert_eq!(r.prompt.descriptions["negative"], "a bad review");

    // Later overrides win.
    let r = Recipe::from_toml_str_with_overrides(
        MINIMAL,
        "r.toml",
        &["train.lr=1e-3", "train.lr=2e-3"],
    )
    .unwrap();
    assert_eq!(r.train.lr, 2e-3);
}

#[test]
fn override_errors() {
    let mut v = parse_toml(MINIMAL, "r.toml").unwrap();
    let e = apply_override(&mut v, "train.lrr=3e-5").unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set train.lrr=3e-5: unknown key `train.lrr` (did you mean `train.lr`?)"
    );
    let e = apply_override(&mut v, "trian.lr=3e-5").unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown key `trian` (did you mean `train`?)"),
        "{e}"
    );
    let e = apply_override(&mut v, "train.lr").unwrap_err();
    assert!(matches!(e, RecipeError::Override { .. }), "{e}");
    let e = apply_override(&mut v, "train.lr.x=1").unwrap_err();
    assert!(matches!(e, RecipeError::UnknownKey { .. }), "{e}");
    let e = err_with(&["train.epochs=many"]);
    assert!(
        e.to_string()
            .contains("`train.epochs` must be a non-negative integer, not the string \"many\""),
        "{e}"
    );
}

#[test]
fn resolved_recipe_round_trips_through_toml() {
    let text = r#"
model = "m"
method = "cloze"
[data]
train = "t.jsonl"
[prompt]
template = "{text} [MASK]"
verbalizer = { yes = "good", no = ["bad", "poor"] }
[train]
warmup = 0.25
freeze = "all-but-top-3"
eval_every = 10
"#;
    let r = Recipe::from_toml_str(text, "cloze.toml").unwrap();
    let out = r.to_toml_string();
    let back = Recipe::from_toml_str(&out, "other.toml").unwrap();
    assert_eq!(back, r, "{out}");
    assert!(out.contains("name = \"cloze\""), "{out}");
    assert!(out.contains("warmup = 0.25"), "{out}");
    assert!(out.contains("freeze = \"all-but-top-3\""), "{out}");
    assert!(out.contains("mode = \"max\""), "{out}");

    // Integer warmup stays an integer (a step count).
    let r = Recipe::from_toml_str_with_overrides(MINIMAL, "r.toml", &["train.warmup=10"]).unwrap();
    let back = Recipe::from_toml_str(&r.to_toml_string(), "r.toml").unwrap();
    assert_eq!(back.train.warmup, Warmup::Steps(10));
}

#[test]
fn syntax_errors_are_reported() {
    let e = err("model = \n");
    assert!(matches!(e, RecipeError::Syntax { .. }), "{e}");
    assert!(
        e.to_string().starts_with("recipes/r.toml: invalid TOML"),
        "{e}"
    );
}

#[test]
fn method_and_data_combinations() {
    // Prompt methods can run without training data (zero-shot).
    let r = Recipe::from_toml_str(
        "model = \"m\"\nmethod = \"prompt-similarity\"\n[data]\ntest = \"t\"\n",
        "z.toml",
    )
    .unwrap();
    assert_eq!(r.method, Method::PromptSimilarity);
    let e = err("model = \"m\"\nmethod = \"cloze\"\n");
    assert_eq!(e.key(), Some("data"));
    let e = err(
        "model = \"m\"\ntask = \"token-classification\"\nmethod = \"cloze\"\n[data]\ntrain = \"t\"\n",
    );
    assert_eq!(e.key(), Some("method"));
    let e = err("model = \"m\"\n[data]\ntrain = \"t\"\nvalid = \"v\"\nsplit = [0.5, 0.5]\n");
    assert_eq!(e.key(), Some("data.split"));
    let e = err("model = \"m\"\n[data]\ntrain = \"t\"\ntest = \"v\"\nsplit = [0.5, 0.25, 0.25]\n");
    assert_eq!(e.key(), Some("data.split"));
}

#[test]
fn name_is_required_without_a_file_name() {
    let e = Recipe::from_toml_str(MINIMAL, "<string>").unwrap_err();
    assert_eq!(e.key(), Some("name"));
}
