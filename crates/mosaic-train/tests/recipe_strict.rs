//! Issue 11's recipe side: a key the chosen task or method does not read is refused, naming the key and the task
//! (one test per task and method); every bundled recipe in fixtures/recipes still loads and resolves to the
//! committed snapshot byte for byte (run folders are compared by sha256); and the resume check names the first key
//! that changed.

use std::path::PathBuf;

use mosaic_train::recipe::{Recipe, RecipeError};

fn recipes() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/recipes");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    out
}

fn snapshot(recipe: &std::path::Path) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/recipes")
        .join(recipe.file_name().unwrap())
}

#[test]
fn every_bundled_recipe_resolves_to_its_snapshot() {
    let all = recipes();
    assert!(all.len() >= 11, "{all:?}");
    for path in all {
        let recipe = Recipe::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let written = recipe.to_toml_string();
        let snap = snapshot(&path);
        if std::env::var_os("MOSAIC_BLESS").is_some() {
            std::fs::write(&snap, &written).unwrap();
        }
        let want = std::fs::read_to_string(&snap)
            .unwrap_or_else(|e| panic!("{}: {e} (MOSAIC_BLESS=1 writes it)", snap.display()));
        assert_eq!(written, want, "{}", path.display());
        // The resolved recipe is itself a recipe: it reads back to the same thing (what resuming relies on).
        let again = Recipe::from_toml_str(&written, "recipe.toml").unwrap_or_else(|e| {
            panic!(
                "{}: the resolved recipe does not read back: {e}",
                path.display()
            )
        });
        assert_eq!(again, recipe, "{}", path.display());
    }
}

/// A recipe of `task` and `method` with the data it needs, plus `extra` (whole lines, sections allowed).
fn recipe_text(task: &str, method: &str, extra: &str) -> String {
    format!(
        "model = \"m\"\ntask = \"{task}\"\nmethod = \"{method}\"\n{extra}\n[data]\ntrain = \"t.jsonl\"\n"
    )
}

/// The error for `task`/`method` with `key=value` set by `--set`, which must be a [`RecipeError::NotRead`].
fn refused(task: &str, method: &str, set: &str) -> String {
    let e = Recipe::from_toml_str_with_overrides(&recipe_text(task, method, ""), "r.toml", &[set])
        .unwrap_err();
    assert!(matches!(e, RecipeError::NotRead { .. }), "{set}: {e}");
    // The key as written, down to `section.key`: a map or `data.augment` is refused as one key.
    let key: Vec<&str> = set.split('=').next().unwrap().split('.').take(2).collect();
    let key = key.join(".");
    assert_eq!(e.key(), Some(key.as_str()), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("r.toml: recipe key `{key}`: task \"{task}\"")),
        "{msg}"
    );
    msg
}

/// `key=value` loads for `task`/`method`.
fn accepted(task: &str, method: &str, set: &str) {
    Recipe::from_toml_str_with_overrides(&recipe_text(task, method, ""), "r.toml", &[set])
        .unwrap_or_else(|e| panic!("{task}/{method} {set}: {e}"));
}

/// Each of `refused` is refused for `task`/`method`, each of `accepted` loads.
fn refused_and_accepted(task: &str, method: &str, refused_sets: &[&str], accepted_sets: &[&str]) {
    for set in refused_sets {
        refused(task, method, set);
    }
    for set in accepted_sets {
        accepted(task, method, set);
    }
}

#[test]
fn the_message_names_the_key_the_task_and_who_reads_it() {
    let msg = refused("classification", "head", "data.packing=true");
    assert_eq!(
        msg,
        "r.toml: recipe key `data.packing`: task \"classification\" does not read it (only causal-lm does)"
    );
    // The method is named when another method of the task reads the key.
    let msg = refused("classification", "head", "prompt.verbalizer.positive=great");
    assert_eq!(
        msg,
        "r.toml: recipe key `prompt.verbalizer`: task \"classification\" with method \"head\" does not read it \
         (only classification with method \"cloze\" does)"
    );
    let msg = refused("token-classification", "head", "data.image_field=file");
    assert!(
        msg.ends_with(
            "(only image-classification, image-text-contrastive, visual-instruction, \
             multimodal-classification and text-to-image do)"
        ),
        "{msg}"
    );
    // A key written in the file is refused as one given by --set is.
    let e = Recipe::from_toml_str(
        &recipe_text(
            "classification",
            "head",
            "[data.augment]\nhflip_prob = 0.0\n",
        ),
        "r.toml",
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("data.augment"), "{e}");
}

#[test]
fn classification_with_a_head_refuses_keys_it_does_not_read() {
    refused_and_accepted(
        "classification",
        "head",
        &[
            "data.packing=true",
            "data.augment.hflip_prob=0.0",
            "data.format=chatml",
            "data.messages_field=turns",
            "data.image_field=file",
            "data.caption_field=text",
            "data.tokens_field=words",
            "init=pretrained",
            "prompt.verbalizer.positive=great",
            "prompt.descriptions.positive=good",
            "prompt.shots=2",
            "prompt.temperature=0.1",
            "prompt.context_tokens=4",
        ],
        &[
            "data.text_field=sentence",
            "data.label_field=y",
            "data.max_length=16",
            "prompt.template={text}",
        ],
    );
}

#[test]
fn classification_with_cloze_refuses_keys_it_does_not_read() {
    refused_and_accepted(
        "classification",
        "cloze",
        &[
            "prompt.descriptions.positive=good",
            "prompt.temperature=0.1",
            "data.packing=true",
        ],
        &[
            "prompt.verbalizer.positive=great",
            "prompt.shots=2",
            "data.split=[0.8, 0.2]",
        ],
    );
}

#[test]
fn classification_with_prompt_similarity_refuses_keys_it_does_not_read() {
    refused_and_accepted(
        "classification",
        "prompt-similarity",
        &[
            "prompt.verbalizer.positive=great",
            "prompt.shots=1",
            "prompt.context_tokens=4",
        ],
        &[
            "prompt.descriptions.positive=good",
            "prompt.temperature=0.1",
            "prompt.template={text}",
        ],
    );
}

#[test]
fn token_classification_refuses_keys_it_does_not_read() {
    refused_and_accepted(
        "token-classification",
        "head",
        &[
            "data.text_field=sentence",
            "data.label_field=y",
            "data.packing=true",
            "data.augment.hflip_prob=0.0",
            "prompt.template={text}",
            "prompt.verbalizer.positive=great",
        ],
        &[
            "data.tokens_field=words",
            "data.tags_field=ner",
            "data.split=[0.8, 0.2]",
            "data.max_length=16",
        ],
    );
}

#[test]
fn causal_lm_refuses_keys_it_does_not_read() {
    for m in ["lm", "instruction"] {
        refused_and_accepted(
            "causal-lm",
            m,
            &[
                "data.augment.hflip_prob=0.0",
                "data.split=[0.8, 0.2]",
                "data.label_field=y",
                "data.image_field=file",
                "prompt.template={text}",
                "prompt.shots=1",
            ],
            &[
                "data.packing=true",
                "data.max_length=32",
                "init=random",
                "train.fgm_epsilon=0.5",
            ],
        );
    }
    // Plain LM training reads raw text and scores validation loss; instruction tuning reads conversations and
    // generates answers to the test set.
    for set in [
        "data.format=chatml",
        "data.messages_field=turns",
        "data.test=t.jsonl",
    ] {
        let msg = refused("causal-lm", "lm", set);
        assert!(msg.contains("with method \"lm\""), "{msg}");
        assert!(
            msg.ends_with("(only causal-lm with method \"instruction\" does)"),
            "{msg}"
        );
        accepted("causal-lm", "instruction", set);
    }
    refused("causal-lm", "instruction", "data.text_field=body");
    accepted("causal-lm", "lm", "data.text_field=body");
}

#[test]
fn image_classification_refuses_keys_it_does_not_read() {
    refused_and_accepted(
        "image-classification",
        "head",
        &[
            "data.packing=true",
            "data.max_length=32",
            "data.text_field=sentence",
            "data.caption_field=text",
            "prompt.template={text}",
            "prompt.context_tokens=4",
        ],
        &[
            "data.augment.hflip_prob=0.0",
            "data.image_field=file",
            "data.label_field=class",
            "data.split=[0.8, 0.2]",
            "init=random",
        ],
    );
}

#[test]
fn image_text_contrastive_refuses_keys_it_does_not_read() {
    let t = "image-text-contrastive";
    for m in ["contrastive", "coop"] {
        refused_and_accepted(
            t,
            m,
            &[
                "data.packing=true",
                "data.augment.hflip_prob=0.0",
                "data.split=[0.8, 0.2]",
                "data.max_length=32",
                "init=pretrained",
                "prompt.verbalizer.positive=great",
            ],
            &["data.image_field=file", "data.test=t.jsonl", "train.seed=3"],
        );
    }
    // Contrastive pairs read captions; CoOp reads labels, a template and its context length.
    for set in [
        "data.label_field=class",
        "prompt.template=a {}",
        "prompt.context_tokens=8",
    ] {
        let msg = refused(t, "contrastive", set);
        assert!(msg.contains("(only "), "{msg}");
        accepted(t, "coop", set);
    }
    refused(t, "coop", "data.caption_field=text");
    accepted(t, "contrastive", "data.caption_field=text");
}

#[test]
fn defaults_are_never_held_to_the_task() {
    // A resolved recipe.toml writes `data.text_field`, `data.tokens_field`, ... and `prompt.shots` for every task;
    // with their default values they ask for nothing, so the run folder's recipe reads back for any task.
    for (task, method) in [
        ("classification", "head"),
        ("token-classification", "head"),
        ("causal-lm", "instruction"),
        ("image-classification", "head"),
        ("image-text-contrastive", "contrastive"),
    ] {
        let r = Recipe::from_toml_str(&recipe_text(task, method, ""), "r.toml").unwrap();
        let written = r.to_toml_string();
        assert!(written.contains("tags_field = \"tags\""), "{written}");
        let back = Recipe::from_toml_str(&written, "recipe.toml")
            .unwrap_or_else(|e| panic!("{task}: {e}\n{written}"));
        assert_eq!(back, r);
    }
    // The same key with another value asks for something the task does not do.
    refused("classification", "head", "data.tags_field=ner");
}

fn resolved(overrides: &[&str]) -> Recipe {
    let text = recipe_text("classification", "head", "output = \"runs/x\"");
    Recipe::from_toml_str_with_overrides(&text, "r.toml", overrides).unwrap()
}

#[test]
fn resume_refuses_a_changed_key_but_epochs_and_output() {
    let started = resolved(&[]);
    // The run folder's recipe.toml, read back, is the recipe the run started with.
    let saved = Recipe::from_toml_str(&started.to_toml_string(), "recipe.toml").unwrap();
    assert_eq!(resolved(&[]).check_resume(&saved), Ok(()));
    let more_epochs = resolved(&["train.epochs=10", "output=/abs/runs/x/"]);
    assert_eq!(more_epochs.check_resume(&saved), Ok(()));

    let e = resolved(&["train.lr=1e-3"])
        .check_resume(&saved)
        .unwrap_err();
    assert_eq!(e.key(), Some("train.lr"));
    assert_eq!(
        e.to_string(),
        "--resume: recipe key `train.lr` is 0.001 now, but the run started with 0.00002 \
         (only `train.epochs` may change when resuming)"
    );
    // The first difference in recipe.toml order is named, nested keys in full, absent values as `unset`.
    let e = resolved(&["data.valid=v.jsonl", "train.seed=1"])
        .check_resume(&saved)
        .unwrap_err();
    assert_eq!(e.key(), Some("data.valid"));
    assert!(
        e.to_string()
            .contains("is \"v.jsonl\" now, but the run started with unset"),
        "{e}"
    );
    let e = saved
        .check_resume(&resolved(&["data.valid=v.jsonl"]))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("is unset now, but the run started with \"v.jsonl\""),
        "{e}"
    );
    let e = resolved(&["method=cloze", "prompt.verbalizer.positive=good"]).check_resume(&saved);
    assert_eq!(e.unwrap_err().key(), Some("method"));
    let cloze = |word: &str| {
        resolved(&[
            "method=cloze",
            &format!("prompt.verbalizer.positive={word}"),
        ])
    };
    let e = cloze("good").check_resume(&cloze("great")).unwrap_err();
    assert_eq!(e.key(), Some("prompt.verbalizer.positive"));
}
