//! Always-on fuzz tests (the libFuzzer target `recipe` of `fuzz/` runs the same entry points for longer): random
//! and mutated recipe TOML and `--set` overrides must resolve or give an error, never a panic; a recipe that
//! resolves must read back from what `to_toml_string` writes. Inputs the fuzzer found crashing are kept below
//! as regression tests.

use mosaic_train::recipe::{Recipe, apply_override, parse_toml};
use proptest::prelude::*;

/// A few dozen cases: enough for CI to exercise every entry point in well under a second.
const CASES: u32 = 48;

/// The bundled default recipe: a complete one, so overrides reach resolution and validation.
const SEED_RECIPE: &str = include_str!("../../../fixtures/recipes/sentiment.toml");

/// Parses a recipe with overrides, as the `recipe` fuzz target does.
fn exercise_recipe(text: &str, overrides: &[String]) {
    for (source, origin) in [(text, "fuzz.toml"), (SEED_RECIPE, "sentiment.toml")] {
        if let Ok(recipe) = Recipe::from_toml_str_with_overrides(source, origin, overrides) {
            let written = recipe.to_toml_string();
            let again = Recipe::from_toml_str(&written, "recipe.toml").unwrap_or_else(|e| {
                panic!("the resolved recipe does not read back: {e}\n{written}")
            });
            assert_eq!(again.to_toml_string(), written);
        }
    }
    if let Ok(mut value) = parse_toml(text, "fuzz.toml") {
        for spec in overrides {
            let _ = apply_override(&mut value, spec);
        }
    }
}

/// Recipe keys (real and misspelt, tables and leaves) for overrides.
const KEYS: &[&str] = &[
    "model",
    "name",
    "task",
    "method",
    "output",
    "data",
    "data.train",
    "data.max_length",
    "data.split",
    "prompt",
    "prompt.template",
    "prompt.verbalizer",
    "prompt.verbalizer.positive",
    "prompt.descriptions.negative",
    "prompt.temperature",
    "train",
    "train.lr",
    "train.epochs",
    "train.batch_size",
    "train.warmup",
    "train.schedule",
    "train.freeze",
    "train.metric",
    "train.mode",
    "train.patience",
    "train.optimizer",
    "train.seed",
    "train.lr.x",
    "trian.lr",
    ".",
    "",
];

/// TOML values of every kind, and text that is not TOML.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "1e-4",
    "nan",
    "inf",
    "-inf",
    "9223372036854775807",
    "99999999999999999999",
    "true",
    "\"text\"",
    "[0.8, 0.2]",
    "[]",
    "{}",
    "{ a = 1 }",
    "linear",
    "embeddings",
    "layers:0-1",
    "{text} It was {mask}.",
    "f1_macro",
    "max",
    "1979-05-27",
    "'",
    "=",
];

fn override_spec() -> impl Strategy<Value = String> {
    (
        prop::sample::select(KEYS),
        prop::sample::select(VALUES),
        any::<bool>(),
    )
        .prop_map(|(key, value, with_equals)| {
            if with_equals {
                format!("{key}={value}")
            } else {
                format!("{key}{value}")
            }
        })
}

/// The default recipe with a line replaced by `key = value` from the lists above.
fn mutated_recipe() -> impl Strategy<Value = String> {
    (
        any::<prop::sample::Index>(),
        prop::sample::select(KEYS),
        prop::sample::select(VALUES),
    )
        .prop_map(|(at, key, value)| {
            let mut lines: Vec<String> = SEED_RECIPE.lines().map(str::to_owned).collect();
            let i = at.index(lines.len());
            let leaf = key.rsplit('.').next().unwrap_or(key);
            lines[i] = format!("{leaf} = {value}");
            lines.join("\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn recipe_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        exercise_recipe(&String::from_utf8_lossy(&bytes), &[]);
    }

    #[test]
    fn recipe_parser_never_panics_on_mutated_recipes(
        text in mutated_recipe(),
        overrides in prop::collection::vec(override_spec(), 0..3),
    ) {
        exercise_recipe(&text, &overrides);
    }

    #[test]
    fn overrides_never_panic(overrides in prop::collection::vec(override_spec(), 1..4)) {
        exercise_recipe("model = \"m\"\n", &overrides);
    }
}
