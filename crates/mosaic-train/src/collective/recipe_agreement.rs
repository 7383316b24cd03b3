//! Every rank must train the same recipe: at start-up rank 0's resolved recipe is broadcast and each rank
//! compares its own, so a `--set` given to one rank only is refused, naming the first key that differs.

use std::collections::BTreeMap;

use super::Collective;
use crate::error::{Result, TrainError};

/// Refuses to start unless every rank's `recipe_toml` (the resolved recipe, as `recipe.toml` is written) equals
/// rank 0's. The rank that differs names the key and both values; the others name that rank.
pub fn agree_on_recipe(collective: &dyn Collective, recipe_toml: &str) -> Result<()> {
    let world = collective.world_size();
    if world <= 1 {
        return Ok(());
    }
    let mut theirs = recipe_toml.as_bytes().to_vec();
    collective.broadcast(&mut theirs, 0)?;
    let rank0 = String::from_utf8_lossy(&theirs).into_owned();
    let differs = rank0 != recipe_toml;
    let mut flags = vec![0.0f64; world];
    flags[collective.rank()] = f64::from(u8::from(differs));
    collective.all_reduce_sum_f64(&mut flags)?;
    let Some(first) = flags.iter().position(|&f| f > 0.0) else {
        return Ok(());
    };
    let rank = collective.rank();
    Err(TrainError::Collective(if differs {
        format!(
            "rank {rank}'s recipe differs from rank 0's: {}; every rank must run the same recipe and --set \
             overrides",
            first_difference(&rank0, recipe_toml)
        )
    } else {
        format!("rank {first}'s recipe differs from rank 0's (its error names the key); stopping")
    }))
}

/// `key `a.b`: rank 0 has X, this rank Y` for the first key (in sorted order) whose values differ.
fn first_difference(rank0: &str, mine: &str) -> String {
    let (a, b) = (flatten(rank0), flatten(mine));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "no value".into());
            return format!("key `{key}`: rank 0 has {}, this rank {}", show(x), show(y));
        }
    }
    "the recipe text differs".into()
}

/// `table.key = value` pairs of a TOML document (arrays kept whole).
fn flatten(text: &str) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(value) = text.parse::<toml::Table>() {
        walk("", &toml::Value::Table(value), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_differing_key() {
        let a = "name = \"x\"\n[train]\nlr = 0.001\nepochs = 2\n";
        let b = "name = \"x\"\n[train]\nlr = 0.002\nepochs = 2\n";
        assert_eq!(
            first_difference(a, b),
            "key `train.lr`: rank 0 has 0.001, this rank 0.002"
        );
        let c = "name = \"x\"\n[train]\nlr = 0.001\n";
        assert!(
            first_difference(a, c).contains("`train.epochs`: rank 0 has 2, this rank no value")
        );
    }
}
