//! What a causal-LM run reports: the JSON of an evaluation and of an exact-match score, the console line of a
//! score, and the records of `metrics.jsonl` it reads back (the figures before training, the last epoch's loss).

use super::loss::LmEvaluation;
use crate::metrics::exact_match::ExactMatch;

pub fn eval_json(e: &LmEvaluation) -> serde_json::Value {
    serde_json::json!({ "loss": e.loss, "perplexity": e.perplexity, "tokens": e.tokens })
}

pub fn exact_match_json(score: &ExactMatch) -> serde_json::Value {
    let by_type: serde_json::Map<String, serde_json::Value> = score
        .by_group
        .iter()
        .map(|(g, s)| {
            (
                g.clone(),
                serde_json::json!({ "exact_match": s.exact_match, "count": s.count }),
            )
        })
        .collect();
    serde_json::json!({ "exact_match": score.exact_match, "count": score.count, "by_type": by_type })
}

/// `exact_match: 0.0300 (math 0.1000, …)` for the console.
pub fn exact_match_line(score: &ExactMatch) -> String {
    let mut line = format!("{:.4}", score.exact_match);
    if !score.by_group.is_empty() {
        let parts: Vec<String> = score
            .by_group
            .iter()
            .map(|(g, s)| format!("{g} {:.4}", s.exact_match))
            .collect();
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    line
}

/// The record of `history` marked `"before": true` on `split` (written before training started).
pub fn before_record<'a>(
    history: &'a [serde_json::Value],
    split: &str,
    key: &str,
) -> Option<&'a serde_json::Value> {
    history
        .iter()
        .find(|r| r["before"] == true && r["split"] == split && r.get(key).is_some())
}

/// The mean training loss of the last epoch in `history` (token-weighted, as the loop sums it).
pub fn last_epoch_train_loss(history: &[serde_json::Value]) -> f64 {
    let train: Vec<&serde_json::Value> = history.iter().filter(|r| r["type"] == "train").collect();
    let Some(last_epoch) = train.last().and_then(|r| r["epoch"].as_u64()) else {
        return f64::NAN;
    };
    let (mut sum, mut tokens) = (0.0, 0usize);
    for r in train
        .iter()
        .filter(|r| r["epoch"].as_u64() == Some(last_epoch))
    {
        let n = r["tokens"].as_u64().unwrap_or(0) as usize;
        sum += r["loss"].as_f64().unwrap_or(f64::NAN) * n as f64;
        tokens += n;
    }
    sum / tokens.max(1) as f64
}
