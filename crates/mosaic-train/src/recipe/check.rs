//! Type checking of a parsed recipe against the schema, before serde sees it, so that every error names the full
//! dotted key (serde's own messages do not).

use super::choices::Freeze;
use super::error::{RecipeError, invalid};
use super::schema::{Kind, join};
use super::suggest::{close_enough, suggest};

/// "an integer", "a table", ...
fn a_type(v: &toml::Value) -> String {
    let t = v.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

pub(super) fn check_value(
    v: &toml::Value,
    kind: Kind,
    key: &str,
    origin: &str,
) -> Result<(), RecipeError> {
    use toml::Value as V;
    let wrong = |what: &str| {
        let got = match v {
            V::String(s) => format!("the string \"{s}\""),
            V::Integer(i) => format!("the integer {i}"),
            V::Float(f) => format!("the float {f}"),
            V::Boolean(b) => format!("the boolean {b}"),
            other => a_type(other),
        };
        invalid(origin, key, format!("must be {what}, not {got}"))
    };
    match kind {
        Kind::Str => match v {
            V::String(_) => Ok(()),
            _ => Err(wrong("a string")),
        },
        Kind::Bool => match v {
            V::Boolean(_) => Ok(()),
            _ => Err(wrong("true or false")),
        },
        Kind::BoolOr(names) => match v {
            V::Boolean(_) => Ok(()),
            V::String(s) if names.contains(&s.as_str()) => Ok(()),
            _ => Err(wrong(&format!(
                "true, false or one of {}",
                names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
        Kind::UInt => match v {
            V::Integer(i) if *i >= 0 => Ok(()),
            _ => Err(wrong("a non-negative integer")),
        },
        Kind::Number => match v {
            V::Integer(_) | V::Float(_) => Ok(()),
            _ => Err(wrong("a number")),
        },
        Kind::Warmup => match v {
            V::Integer(i) if *i >= 0 => Ok(()),
            V::Float(_) => Ok(()),
            _ => Err(wrong(
                "a step count (integer) or a ratio of the total steps (float)",
            )),
        },
        Kind::OneOf(options) => match v {
            V::String(s) if options.contains(&s.as_str()) => Ok(()),
            V::String(s) => {
                let list = options
                    .iter()
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                let hint = options
                    .iter()
                    .filter_map(|o| close_enough(s, o).map(|d| (d, *o)))
                    .min_by_key(|(d, _)| *d)
                    .map(|(_, o)| format!(" (did you mean \"{o}\"?)"))
                    .unwrap_or_default();
                Err(invalid(
                    origin,
                    key,
                    format!("must be one of {list}, not \"{s}\"{hint}"),
                ))
            }
            _ => Err(wrong("a string")),
        },
        Kind::Freeze => match v {
            V::String(s) => s
                .parse::<Freeze>()
                .map(|_| ())
                .map_err(|m| invalid(origin, key, m)),
            _ => Err(wrong("a string")),
        },
        Kind::Fractions => match v {
            V::Array(items) if items.iter().all(|x| x.is_integer() || x.is_float()) => Ok(()),
            _ => Err(wrong("an array of fractions like [0.8, 0.1, 0.1]")),
        },
        Kind::Sizes => match v {
            V::Array(items) if items.iter().all(|x| x.as_integer().is_some_and(|i| i >= 0)) => {
                Ok(())
            }
            _ => Err(wrong("an array of pixel sizes like [48, 56, 64]")),
        },
        Kind::Table(keys) => match v {
            V::Table(t) => check_table(t, keys, key, origin),
            _ => Err(wrong(&format!("a table (a `[{key}]` section)"))),
        },
        Kind::StrMap => match v {
            V::Table(t) => {
                for (label, x) in t {
                    check_value(x, Kind::Str, &join(key, label), origin)?;
                }
                Ok(())
            }
            _ => Err(wrong("a table of label = \"text\"")),
        },
        Kind::Words => match v {
            V::String(_) => Ok(()),
            V::Array(ws) if ws.iter().all(|w| w.is_str()) => Ok(()),
            _ => Err(wrong("a name or a list of names")),
        },
        Kind::NumberMap => match v {
            V::Table(t) => {
                for (name, x) in t {
                    check_value(x, Kind::Number, &join(key, name), origin)?;
                }
                Ok(())
            }
            _ => Err(wrong("a table of objective = weight")),
        },
        Kind::WordsMap => match v {
            V::Table(t) => {
                for (label, x) in t {
                    let ok = match x {
                        V::String(_) => true,
                        V::Array(ws) => ws.iter().all(|w| w.is_str()),
                        _ => false,
                    };
                    if !ok {
                        let k = join(key, label);
                        return Err(invalid(
                            origin,
                            &k,
                            format!("must be a word or a list of words, not {}", a_type(x)),
                        ));
                    }
                }
                Ok(())
            }
            _ => Err(wrong("a table of label = \"word\" or [\"words\"]")),
        },
    }
}

pub(super) fn check_table(
    t: &toml::Table,
    keys: &[(&str, Kind)],
    prefix: &str,
    origin: &str,
) -> Result<(), RecipeError> {
    for (k, v) in t {
        let full = join(prefix, k);
        match keys.iter().find(|(name, _)| name == k) {
            Some((_, kind)) => check_value(v, *kind, &full, origin)?,
            None => {
                return Err(RecipeError::UnknownKey {
                    origin: origin.to_string(),
                    key: full,
                    suggestion: suggest(prefix, k, keys),
                });
            }
        }
    }
    Ok(())
}
