//! Which modules a `target_modules` / `modules_to_save` entry names, by PEFT's rules.

use mosaic_models::layers::LinearEntry;

use crate::config::TargetModules;
use crate::error::{PeftError, Result};

/// The output heads `"all-linear"` leaves alone, as PEFT does (it skips the output embedding layer and the
/// task heads it saves whole).
const HEADS: &[&str] = &["lm_head", "classifier", "score", "cls"];

/// PEFT's name rule: `module` is `name` or ends with `.name`.
pub fn names_module(name: &str, module: &str) -> bool {
    module == name || module.ends_with(&format!(".{name}"))
}

fn is_head(module: &str) -> bool {
    module
        .split('.')
        .any(|segment| HEADS.contains(&segment) || segment == "predictions")
}

/// The projections of `linears` that `targets` picks, in model order; an error listing the projection names
/// that exist when none is picked.
pub fn select<'a>(
    linears: &'a [(String, LinearEntry)],
    targets: &TargetModules,
) -> Result<Vec<&'a (String, LinearEntry)>> {
    let picked: Vec<&(String, LinearEntry)> = match targets {
        TargetModules::Names(names) => linears
            .iter()
            .filter(|(module, _)| names.iter().any(|n| names_module(n, module)))
            .collect(),
        TargetModules::Regex(pattern) => {
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                PeftError::Invalid(format!("target_modules: not a regular expression: {e}"))
            })?;
            linears.iter().filter(|(m, _)| re.is_match(m)).collect()
        }
        TargetModules::AllLinear => linears.iter().filter(|(m, _)| !is_head(m)).collect(),
    };
    if picked.is_empty() {
        return Err(PeftError::Invalid(format!(
            "target_modules {} matches no projection of this model; its projections are: {}",
            describe(targets),
            module_patterns(linears.iter().map(|(m, _)| m.as_str())).join(", ")
        )));
    }
    Ok(picked)
}

fn describe(targets: &TargetModules) -> String {
    match targets {
        TargetModules::Names(names) => format!("{names:?}"),
        TargetModules::Regex(pattern) => format!("\"{pattern}\""),
        TargetModules::AllLinear => "\"all-linear\"".into(),
    }
}

/// Module names with layer numbers folded into `*` (`bert.encoder.layer.*.attention.self.query`), each once, in
/// model order: what an error lists.
pub fn module_patterns<'a>(modules: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for module in modules {
        let folded = module
            .split('.')
            .map(|s| {
                if s.chars().all(|c| c.is_ascii_digit()) {
                    "*"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join(".");
        if !out.contains(&folded) {
            out.push(folded);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_name_rules() {
        assert!(names_module(
            "query",
            "bert.encoder.layer.0.attention.self.query"
        ));
        assert!(!names_module(
            "query",
            "bert.encoder.layer.0.attention.self.xquery"
        ));
        assert!(names_module("classifier", "classifier"));
        assert!(is_head("lm_head") && is_head("cls.predictions.transform.dense"));
        assert!(!is_head("transformer.h.0.attn.c_attn"));
        assert_eq!(
            module_patterns(["a.0.q", "a.1.q", "b"].into_iter()),
            ["a.*.q", "b"]
        );
    }
}
