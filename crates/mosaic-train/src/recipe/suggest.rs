//! "Did you mean": the valid key nearest to a misspelt one, and names people bring from other tools.

use super::schema::{Kind, all_keys, join};

/// Names people reach for from other tools, and the recipe key they mean.
const ALIASES: &[(&str, &str)] = &[
    ("learning_rate", "train.lr"),
    ("num_train_epochs", "train.epochs"),
    ("num_epochs", "train.epochs"),
    ("per_device_train_batch_size", "train.batch_size"),
    ("train_batch_size", "train.batch_size"),
    ("gradient_accumulation_steps", "train.grad_accum"),
    ("warmup_ratio", "train.warmup"),
    ("warmup_steps", "train.warmup"),
    ("lr_scheduler_type", "train.schedule"),
    ("scheduler", "train.schedule"),
    ("max_norm", "train.max_grad_norm"),
    ("early_stopping_patience", "train.patience"),
    ("metric_for_best_model", "train.metric"),
    ("eval_steps", "train.eval_every"),
    ("max_seq_length", "data.max_length"),
    ("max_len", "data.max_length"),
    ("output_dir", "output"),
    ("model_name_or_path", "model"),
    ("validation", "data.valid"),
    ("dev", "data.valid"),
];

/// Lower case without `_` and `-`, so that `learningRate`, `learning-rate`
/// and `learning_rate` compare equal.
fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The edit distance between `a` and `b` (normalised) when it is small for their length.
pub(super) fn close_enough(a: &str, b: &str) -> Option<usize> {
    let (a, b) = (normalize(a), normalize(b));
    let d = strsim::damerau_levenshtein(&a, &b);
    let limit = (a.chars().count().max(b.chars().count()) / 3).max(1);
    (d <= limit).then_some(d)
}

/// The valid dotted key nearest to the unknown `key` in section `prefix`.
pub(super) fn suggest(prefix: &str, key: &str, section: &[(&str, Kind)]) -> Option<String> {
    let leaf = normalize(key);
    // 1. A known alias.
    if let Some((_, target)) = ALIASES.iter().find(|(a, _)| normalize(a) == leaf) {
        return Some((*target).to_string());
    }
    // 2. A similar key in the same section.
    let same = section
        .iter()
        .filter_map(|(k, _)| close_enough(&leaf, k).map(|d| (d, *k)))
        .min_by_key(|(d, _)| *d);
    if let Some((_, k)) = same {
        return Some(join(prefix, k));
    }
    // 3. The same or a similar key in another section.
    all_keys()
        .into_iter()
        .filter_map(|full| {
            let last = full.rsplit('.').next().unwrap_or(&full).to_string();
            close_enough(&leaf, &last).map(|d| (d, full))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
