//! The recipe parser: `Recipe::from_toml_str` and `--set` overrides (`apply_override`), on fuzzed TOML and on the
//! bundled default recipe.
//!
//! Input: recipe TOML, then NUL-separated `key=value` overrides.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_train::recipe::{Recipe, apply_override, parse_toml};

/// A complete, valid recipe, so overrides reach resolution and validation instead of stopping at `model`.
const SEED_RECIPE: &str = include_str!("../../fixtures/recipes/sentiment.toml");

fuzz_target!(|data: &[u8]| {
    let text = mosaic_fuzz::text(data);
    let (recipe_text, overrides) = mosaic_fuzz::pieces(&text);

    check(Recipe::from_toml_str_with_overrides(
        recipe_text,
        "fuzz.toml",
        &overrides,
    ));
    check(Recipe::from_toml_str_with_overrides(
        SEED_RECIPE,
        "sentiment.toml",
        &overrides,
    ));

    // `apply_override` on its own, on whatever value the text parses to.
    if let Ok(mut value) = parse_toml(recipe_text, "fuzz.toml") {
        for spec in &overrides {
            let _ = apply_override(&mut value, spec);
        }
    }
});

/// A resolved recipe is written to the run folder as `recipe.toml` and read back on resume: it must parse again
/// to the same recipe.
fn check(result: Result<Recipe, mosaic_train::recipe::RecipeError>) {
    let Ok(recipe) = result else { return };
    let written = recipe.to_toml_string();
    match Recipe::from_toml_str(&written, "recipe.toml") {
        Ok(again) => assert_eq!(
            again.to_toml_string(),
            written,
            "the resolved recipe changes when read back"
        ),
        Err(err) => panic!("the resolved recipe does not read back: {err}\n{written}"),
    }
}
